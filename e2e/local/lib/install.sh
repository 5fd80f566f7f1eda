# shellcheck shell=bash
# Install steps: each downloads/builds once into $SQE_CACHE, keyed by version. Sourced by `up`.

KC_HOME="$SQE_CACHE/keycloak/$KEYCLOAK_VERSION/keycloak-$KEYCLOAK_VERSION"
MINIO_BIN="$SQE_CACHE/minio/$MINIO_VERSION/bin/minio"

# Build-time options of the optimized Keycloak; a change rebuilds it in place (no new download).
# client-secret-rotation (a preview feature): a regenerated client secret leaves the old one valid
# for a while, so a deployment's pods can roll to the new one without failed logins.
KC_BUILD_OPTS=(--db=dev-file --health-enabled=true --cache=local --features=client-secret-rotation)

install_keycloak() {
  local want="${KC_BUILD_OPTS[*]}"
  [[ -f $KC_HOME/.sqe-built && $(cat "$KC_HOME/.sqe-built") == "$want" ]] && return 0
  [[ -x $JAVA25_HOME/bin/java ]] || die "Java 21+ is missing at $JAVA25_HOME (Keycloak $KEYCLOAK_VERSION needs it; set SQE_JAVA_HOME)"
  mkdir -p "$SQE_CACHE/logs"
  if [[ ! -x $KC_HOME/bin/kc.sh ]]; then
    need mvn "install Maven (apt-get install maven)"
    say "installing Keycloak $KEYCLOAK_VERSION from Maven Central (checksum-verified) ..."
    local dl="$SQE_CACHE/downloads"
    mkdir -p "$dl"
    # --strict-checksums: fail (not warn) if the archive does not match the registry's checksum.
    mvn -B -q --strict-checksums -Dmaven.repo.local="$MAVEN_REPO" dependency:copy \
      -Dartifact="org.keycloak:keycloak-quarkus-dist:$KEYCLOAK_VERSION:tar.gz" -DoutputDirectory="$dl" \
      > "$SQE_CACHE/logs/keycloak-download.log" 2>&1 \
      || { tail -n 20 "$SQE_CACHE/logs/keycloak-download.log" >&2; die "downloading org.keycloak:keycloak-quarkus-dist:$KEYCLOAK_VERSION failed"; }
    rm -rf "$(dirname "$KC_HOME")"; mkdir -p "$(dirname "$KC_HOME")"
    tar xzf "$dl/keycloak-quarkus-dist-$KEYCLOAK_VERSION.tar.gz" -C "$(dirname "$KC_HOME")"
  fi
  pid_alive keycloak && die "Keycloak's build options changed while it runs: e2e/local/down first"
  # Build once for the production profile so every start can be --optimized (one JVM, ~15 s).
  say "building Keycloak ($want) ..."
  JAVA_HOME="$JAVA25_HOME" "$KC_HOME/bin/kc.sh" build "${KC_BUILD_OPTS[@]}" \
    > "$SQE_CACHE/logs/keycloak-build.log" 2>&1 || { tail -n 20 "$SQE_CACHE/logs/keycloak-build.log" >&2; die "kc.sh build failed"; }
  echo "$want" > "$KC_HOME/.sqe-built"
}

install_minio() {
  [[ -x $MINIO_BIN ]] && return 0
  need go "install Go 1.24+ (MinIO is built from the Go module proxy)"
  say "building MinIO $MINIO_VERSION with go install (several minutes on 2 cores) ..."
  # The go command verifies module checksums against go.sum / the checksum database.
  (cd /tmp && CGO_ENABLED=0 GOBIN="$(dirname "$MINIO_BIN")" go install "github.com/minio/minio@$MINIO_VERSION") \
    > "$SQE_CACHE/logs/minio-build.log" 2>&1 || { tail -n 20 "$SQE_CACHE/logs/minio-build.log" >&2; die "go install github.com/minio/minio@$MINIO_VERSION failed"; }
}

# The runner jar is run in place from the download directory (245 MB; no second copy).
NESSIE_JAR="$SQE_CACHE/downloads/nessie-quarkus-$NESSIE_VERSION-runner.jar"
NESSIE_PATCH_DIR="$SQE_CACHE/nessie/$NESSIE_VERSION/patch-classes"

install_nessie() {
  [[ -f $NESSIE_PATCH_DIR/.sqe-patched && -f $NESSIE_JAR ]] && return 0
  need mvn "install Maven (apt-get install maven)"
  [[ -x $JAVA25_HOME/bin/java ]] || die "Java 21+ is missing at $JAVA25_HOME (Nessie runs on it; set SQE_JAVA_HOME)"
  say "installing Nessie $NESSIE_VERSION from Maven Central (checksum-verified) ..."
  local dl="$SQE_CACHE/downloads"
  mkdir -p "$dl" "$SQE_CACHE/logs"
  # The self-contained Quarkus runner jar (uber-jar); --strict-checksums fails on a mismatch.
  mvn -B -q --strict-checksums -Dmaven.repo.local="$MAVEN_REPO" dependency:copy \
    -Dartifact="org.projectnessie.nessie:nessie-quarkus:$NESSIE_VERSION:jar:runner" -DoutputDirectory="$dl" \
    > "$SQE_CACHE/logs/nessie-download.log" 2>&1 \
    || { tail -n 20 "$SQE_CACHE/logs/nessie-download.log" >&2; die "downloading org.projectnessie.nessie:nessie-quarkus:$NESSIE_VERSION:runner failed"; }
  # Upstream fix #12704 (read-only vended credentials got a malformed ARN), see the script.
  rm -rf "$NESSIE_PATCH_DIR"
  python3 "$LOCAL_DIR/nessie/backport_readonly_arn_fix.py" "$NESSIE_JAR" "$NESSIE_PATCH_DIR" \
    || die "backporting Nessie fix #12704 failed"
  touch "$NESSIE_PATCH_DIR/.sqe-patched"
}
