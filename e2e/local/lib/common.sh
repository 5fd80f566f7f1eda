# shellcheck shell=bash
# shellcheck disable=SC2034  # settings defined here are read by the scripts that source this file
# Shared settings and helpers for the local stack scripts. Sourced, not run.
# Everything downloaded or built lives in $SQE_CACHE (keyed by version, outside the clone);
# everything a running stack writes lives in $SQE_STATE, which `down` removes.

set -euo pipefail

SQE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
LOCAL_DIR="$SQE_ROOT/e2e/local"
export SQE_CACHE="${SQE_CACHE:-$HOME/.cache/sqe}"
export SQE_STATE="${SQE_STATE:-${TMPDIR:-/tmp}/sqe-local}"

# Versions (see README "What the stack runs").
KEYCLOAK_VERSION=26.7.3
# The Go proxy serves MinIO's HEAD pseudo-version (2026-02-12), not the 2025-10-15 release's.
MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c
# The Iceberg REST catalog is Project Nessie (stands in for Apache Polaris, which cannot be built
# here: Maven Central as reachable serves polaris-runtime-service 1.4.x but not its parent POM).
NESSIE_VERSION=0.99.0

JAVA25_HOME="${SQE_JAVA_HOME:-/usr/lib/jvm/temurin-25-jdk-amd64}"
export GOMODCACHE="$SQE_CACHE/go/mod" GOCACHE="$SQE_CACHE/go/build"
MAVEN_REPO="$SQE_CACHE/m2/repository"

# Ports (loopback only). Keycloak's management port is moved off 9000.
KC_PORT=18080 KC_MGMT_PORT=18090
MINIO_PORT=19000 AUDIT_PORT=19100
CATALOG_PORT=18181 CATALOG_MGMT_PORT=18182

REALM=sqe
OIDC_CLIENT_ID=sqe
OIDC_CLIENT_SECRET=sqe-dev-secret
KC_ADMIN=admin KC_ADMIN_PASSWORD=admin
MINIO_ROOT_USER=minio-root MINIO_ROOT_PASSWORD=minio-root-secret
# The catalog's admin identity (a Keycloak user), used only by the seeding script.
CATALOG_ADMIN=sqe-admin CATALOG_ADMIN_PASSWORD=sqe-admin-pw
WAREHOUSE=lake BUCKET=warehouse
AWS_REGION_NAME=us-east-1

say() { printf '[sqe-local] %s\n' "$*" >&2; }
die() { printf '[sqe-local] ERROR: %s\n' "$*" >&2; exit 1; }

need() { # need CMD "how to get it"
  command -v "$1" >/dev/null 2>&1 || die "$1 is missing: $2"
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

pid_alive() { # pid_alive NAME
  local f="$SQE_STATE/$1.pid"
  [[ -f $f ]] && kill -0 "$(cat "$f")" 2>/dev/null
}

ensure_port_free() { # ensure_port_free NAME PORT
  if port_busy "$2"; then
    die "port $2 (wanted by $1) is already taken by another process: $(ss -ltnp "sport = :$2" 2>/dev/null | tail -n +2 | head -1)"
  fi
}

start_bg() { # start_bg NAME CMD... ; runs in its own session, logs to $SQE_STATE/NAME.log
  local name=$1; shift
  mkdir -p "$SQE_STATE"
  setsid "$@" >"$SQE_STATE/$name.log" 2>&1 < /dev/null &
  echo $! > "$SQE_STATE/$name.pid"
}

wait_for() { # wait_for NAME SECONDS CHECK-CMD...
  local name=$1 secs=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if ! pid_alive "$name"; then
      say "$name exited while starting; last lines of $SQE_STATE/$name.log:"
      tail -n 30 "$SQE_STATE/$name.log" >&2 || true
      die "$name did not come up"
    fi
    if (( SECONDS > deadline )); then
      say "$name not healthy after ${secs}s; last lines of $SQE_STATE/$name.log:"
      tail -n 30 "$SQE_STATE/$name.log" >&2 || true
      die "$name did not come up"
    fi
    sleep 1
  done
}

http_ok() { curl -fsS -o /dev/null --max-time 3 "$1"; }

stop_proc() { # stop_proc NAME ; SIGTERM the process group, then SIGKILL after a while
  local f="$SQE_STATE/$1.pid" pid
  [[ -f $f ]] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

python_env() { # the venv with the real clients the tests and seeding use
  local venv="$SQE_CACHE/venv"
  local want="$LOCAL_DIR/requirements.txt"
  if [[ ! -x $venv/bin/python ]] || ! cmp -s "$want" "$venv/.requirements.txt"; then
    say "installing Python test clients into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q -r "$want"
    cp "$want" "$venv/.requirements.txt"
  fi
  echo "$venv/bin/python"
}
