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
REDIS_PORT=16379 REDIS_PASSWORD=sqe-redis-pw

REALM=sqe
OIDC_CLIENT_ID=sqe
OIDC_CLIENT_SECRET=sqe-dev-secret
KC_ADMIN=admin KC_ADMIN_PASSWORD=admin
MINIO_ROOT_USER=minio-root MINIO_ROOT_PASSWORD=minio-root-secret
# The catalog's admin identity (a Keycloak user), used only by the seeding script.
CATALOG_ADMIN=sqe-admin CATALOG_ADMIN_PASSWORD=sqe-admin-pw
WAREHOUSE=lake BUCKET=warehouse
AWS_REGION_NAME=us-east-1

# say, die, port_busy and the background-process helpers (start_bg, pid_alive, wait_for, stop_proc).
LOG_TAG=sqe-local PROC_STATE=$SQE_STATE PROC_STOP_GRACE_S=20
# shellcheck source=SCRIPTDIR/../../lib/proc.sh
source "$SQE_ROOT/e2e/lib/proc.sh"

need() { # need CMD "how to get it"
  command -v "$1" >/dev/null 2>&1 || die "$1 is missing: $2"
}

ensure_port_free() { # ensure_port_free NAME PORT
  if port_busy "$2"; then
    die "port $2 (wanted by $1) is already taken by another process: $(ss -ltnp "sport = :$2" 2>/dev/null | tail -n +2 | head -1)"
  fi
}

http_ok() { curl -fsS -o /dev/null --max-time 3 "$1"; }

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
