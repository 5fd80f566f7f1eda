# shellcheck shell=bash
# shellcheck disable=SC2034  # settings defined here are read by the scripts that source this file
# Shared settings of the kind suite. Sourced, not run.
# Pins: e2e/kind/images.env. Realm, clients, users, bucket, warehouse and the services' versions:
# e2e/local/lib/common.sh, the local stack's own settings, so both stacks are configured alike.

set -euo pipefail

KIND_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=SCRIPTDIR/../local/lib/common.sh
source "$KIND_DIR/../local/lib/common.sh"
# shellcheck source=SCRIPTDIR/images.env
source "$KIND_DIR/images.env"
SQE_ROOT="$(cd "$KIND_DIR/../.." && pwd)"

LOG_TAG=sqe-kind  # of say/die (e2e/lib/proc.sh)

# In-cluster names. Full service names: the same issuer string must reach every client.
NS=sqe-e2e
OPERATOR_NS=sqe-system
KEYCLOAK_URL="http://keycloak.$NS.svc.cluster.local:8080"
OIDC_ISSUER="$KEYCLOAK_URL/realms/$REALM"
S3_ENDPOINT="http://minio.$NS.svc.cluster.local:9000"
POLARIS_URL="http://polaris.$NS.svc.cluster.local:8181"
# Development-only secret of Polaris's bootstrap principal `root` (the Polaris setup uses it).
POLARIS_ROOT_SECRET=sqe-polaris-root-secret
SQECLUSTER=sqe

catalog_uri() { # catalog_uri polaris|nessie
  case $1 in
    polaris) echo "$POLARIS_URL/api/catalog" ;;
    nessie) echo "http://nessie.$NS.svc.cluster.local:19120/iceberg" ;;
    *) die "unknown catalog '$1' (polaris or nessie)" ;;
  esac
}

# fill CATALOG ENGINE_ENDPOINT < template: replace every @NAME@ placeholder; an unknown one fails.
fill() {
  local catalog=$1 endpoint=$2 out
  out=$(sed -e "s|@MINIO_IMAGE@|$MINIO_IMAGE|g" \
    -e "s|@KEYCLOAK_IMAGE@|$KEYCLOAK_IMAGE|g" \
    -e "s|@NESSIE_PATCHED_IMAGE@|$NESSIE_PATCHED_IMAGE|g" \
    -e "s|@POLARIS_IMAGE@|$POLARIS_IMAGE|g" \
    -e "s|@CLIENT_IMAGE@|$CLIENT_IMAGE|g" \
    -e "s|@ENGINE_IMAGE@|$ENGINE_IMAGE|g" \
    -e "s|@KEYCLOAK_URL@|$KEYCLOAK_URL|g" \
    -e "s|@OIDC_ISSUER@|$OIDC_ISSUER|g" \
    -e "s|@S3_ENDPOINT@|$S3_ENDPOINT|g" \
    -e "s|@AWS_REGION@|$AWS_REGION_NAME|g" \
    -e "s|@REALM@|$REALM|g" \
    -e "s|@OIDC_CLIENT_ID@|$OIDC_CLIENT_ID|g" \
    -e "s|@OIDC_CLIENT_SECRET@|$OIDC_CLIENT_SECRET|g" \
    -e "s|@WAREHOUSE@|$WAREHOUSE|g" \
    -e "s|@CATALOG@|$catalog|g" \
    -e "s|@CATALOG_URI@|$(catalog_uri "$catalog")|g" \
    -e "s|@ENGINE_ENDPOINT@|$endpoint|g")
  if grep -n '@[A-Z_]*@' <<<"$out" >&2; then die "unfilled placeholder in a manifest (above)"; fi
  printf '%s\n' "$out"
}

# The generated objects: configuration files as ConfigMaps, the stack's development secrets, and
# the Jobs' environment (the SQE_* variables of e2e/local/env, with in-cluster endpoints).
# Needs only kubectl's client side.
render_config() { # render_config KUBECTL CATALOG
  local k=$1 catalog=$2
  local gen=(--dry-run=client -o yaml -n "$NS")
  echo "---"
  "$k" create configmap sqe-e2e-realm "${gen[@]}" --from-file=sqe-realm.json="$LOCAL_DIR/keycloak/sqe-realm.json"
  echo "---"
  "$k" create configmap sqe-e2e-nessie "${gen[@]}" --from-file=application.properties="$LOCAL_DIR/nessie/application.properties"
  echo "---"
  "$k" create configmap sqe-e2e-polaris "${gen[@]}" --from-file=application.properties="$KIND_DIR/polaris/application.properties"
  echo "---"
  "$k" create secret generic sqe-e2e-stack "${gen[@]}" \
    --from-literal=minio-root-user="$MINIO_ROOT_USER" --from-literal=minio-root-password="$MINIO_ROOT_PASSWORD" \
    --from-literal=keycloak-admin="$KC_ADMIN" --from-literal=keycloak-admin-password="$KC_ADMIN_PASSWORD" \
    --from-literal=polaris-bootstrap-credentials="POLARIS,root,$POLARIS_ROOT_SECRET"
  echo "---"
  "$k" create configmap sqe-e2e-env "${gen[@]}" \
    --from-literal=SQE_KEYCLOAK_URL="$KEYCLOAK_URL" --from-literal=SQE_KEYCLOAK_REALM="$REALM" \
    --from-literal=SQE_KEYCLOAK_ADMIN="$KC_ADMIN" --from-literal=SQE_OIDC_ISSUER="$OIDC_ISSUER" \
    --from-literal=SQE_OIDC_CLIENT_ID="$OIDC_CLIENT_ID" --from-literal=SQE_S3_ENDPOINT="$S3_ENDPOINT" \
    --from-literal=SQE_S3_REGION="$AWS_REGION_NAME" --from-literal=SQE_S3_BUCKET="$BUCKET" \
    --from-literal=SQE_MINIO_ROOT_USER="$MINIO_ROOT_USER" --from-literal=SQE_REALM_FILE=/e2e/sqe-realm.json \
    --from-literal=SQE_CATALOG_URI="$(catalog_uri "$catalog")" --from-literal=SQE_CATALOG_WAREHOUSE="$WAREHOUSE" \
    --from-literal=SQE_CATALOG_ADMIN="$CATALOG_ADMIN" --from-literal=SQE_POLARIS_URL="$POLARIS_URL"
  echo "---"
  "$k" create secret generic sqe-e2e-client "${gen[@]}" \
    --from-literal=SQE_KEYCLOAK_ADMIN_PASSWORD="$KC_ADMIN_PASSWORD" \
    --from-literal=SQE_OIDC_CLIENT_SECRET="$OIDC_CLIENT_SECRET" \
    --from-literal=SQE_MINIO_ROOT_PASSWORD="$MINIO_ROOT_PASSWORD" \
    --from-literal=SQE_CATALOG_ADMIN_PASSWORD="$CATALOG_ADMIN_PASSWORD" \
    --from-literal=SQE_POLARIS_ROOT_SECRET="$POLARIS_ROOT_SECRET"
}

# The manifest files of one part of the suite, in apply order.
part_files() { # part_files PART CATALOG
  local m=$KIND_DIR/manifests
  case $1 in
    namespace) echo "$m/00-namespace.yaml" ;;
    stack) echo "$m/10-minio.yaml $m/20-keycloak.yaml" ;;
    catalog) echo "$m/30-$2.yaml" ;;
    sqecluster) echo "$m/40-sqecluster.yaml" ;;
    setup) echo "$m/50-setup-job.yaml" ;;
    check) echo "$m/60-check-job.yaml" ;;
    *) die "unknown part '$1'" ;;
  esac
}

# render KUBECTL CATALOG ENGINE_ENDPOINT PART...: the YAML of those parts, as applied.
render() {
  local k=$1 catalog=$2 endpoint=$3 part f
  shift 3
  catalog_uri "$catalog" >/dev/null
  for part in "$@"; do
    if [[ $part == config ]]; then render_config "$k" "$catalog"; continue; fi
    for f in $(part_files "$part" "$catalog"); do
      echo "---"
      fill "$catalog" "$endpoint" < "$f"
    done
  done
}
