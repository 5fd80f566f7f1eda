# shellcheck shell=bash
# shellcheck disable=SC2034  # settings defined here are read by the scripts that source this file
# Shared settings for the Kubernetes control-plane scripts. Sourced, not run.
# Built binaries live in $SQE_CACHE/k8s (keyed by version, outside the clone); everything a
# running plane writes lives in $SQE_K8S_STATE, which `down` removes.

set -euo pipefail

K8S_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SQE_ROOT="$(cd "$K8S_DIR/../.." && pwd)"
export SQE_CACHE="${SQE_CACHE:-$HOME/.cache/sqe}"
export SQE_K8S_STATE="${SQE_K8S_STATE:-${TMPDIR:-/tmp}/sqe-k8s}"

# Pins. The Go proxy serves k8s.io/kubernetes v1.36.3 with every v0.36.3 staging module; the
# local Go (1.26.x) satisfies its `go 1.26.0` line, so no toolchain download is needed.
# etcd 3.6.x is the line Kubernetes 1.36 ships with; kwok 0.8.0 needs explicit stage files.
K8S_VERSION=v1.36.3
ETCD_VERSION=v3.6.13
KWOK_VERSION=v0.8.0
# Helm renders and lints the chart in the suite (its go.mod has no replaces: plain go install).
HELM_VERSION=v3.22.0

K8S_BIN="$SQE_CACHE/k8s/kubernetes-$K8S_VERSION/bin"
ETCD_BIN="$SQE_CACHE/k8s/etcd-$ETCD_VERSION/bin"
KWOK_HOME="$SQE_CACHE/k8s/kwok-$KWOK_VERSION"
KWOK_BIN="$KWOK_HOME/bin"
HELM_BIN="$SQE_CACHE/k8s/helm-$HELM_VERSION/bin"

export GOMODCACHE="$SQE_CACHE/go/mod" GOCACHE="$SQE_CACHE/go/build"
export GOFLAGS="${GOFLAGS:--buildvcs=false}" GOTOOLCHAIN=local CGO_ENABLED=0

# Loopback ports of the plane (fixed so a kubeconfig stays valid across restarts of a test).
ETCD_PORT=${SQE_K8S_ETCD_PORT:-12379}
ETCD_PEER_PORT=${SQE_K8S_ETCD_PEER_PORT:-12380}
APISERVER_PORT=${SQE_K8S_APISERVER_PORT:-16443}
KCM_PORT=${SQE_K8S_KCM_PORT:-10257}
SCHED_PORT=${SQE_K8S_SCHED_PORT:-10259}
KWOK_PORT=${SQE_K8S_KWOK_PORT:-10247}
# The API server listens on every address (pods reach it on the bridge, which does not exist yet
# when the plane starts); host clients keep using 127.0.0.1. Set 127.0.0.1 for a KWOK-only plane.
APISERVER_BIND_ADDRESS=${SQE_K8S_APISERVER_BIND_ADDRESS:-0.0.0.0}

KUBECONFIG_PATH="$SQE_K8S_STATE/admin.kubeconfig"

# Real node (e2e/k8s/node): kubelet + kube-proxy from the same k8s.io/kubernetes pin, Debian's
# containerd/runc/CNI plugins, a pause image built from the Kubernetes source.
NODE_BIN="$SQE_CACHE/k8s/kubelet-$K8S_VERSION/bin"
PAUSE_ARCHIVE="$SQE_CACHE/k8s/pause-$K8S_VERSION/pause.oci.tar"
PAUSE_IMAGE=localhost/pause:3.10.2
NODE_NAME=${SQE_K8S_NODE_NAME:-sqe-node-1}
# Pod addresses live only on this machine: a bridge the script creates, with no default route in
# the pods and no masquerade. The KWOK nodes' fake pod IPs use 10.244.0.0/16, so a separate range.
NODE_BRIDGE=${SQE_K8S_NODE_BRIDGE:-sqe-br0}
NODE_POD_CIDR=${SQE_K8S_NODE_POD_CIDR:-10.245.0.0/24}
NODE_SERVICE_CIDR=10.96.0.0/16   # the apiserver's --service-cluster-ip-range (up)
# The node's address: the first host of the pod CIDR, on the bridge. `up` advertises the API
# server there (the `kubernetes` Service's endpoint), so pods reach it through 10.96.0.1:443.
first_host() { # first_host A.B.C.D/N -> the address after the network address
  local a b c d n
  IFS=. read -r a b c d <<<"${1%/*}"
  n=$(( (a << 24 | b << 16 | c << 8 | d) + 1 ))
  echo "$((n >> 24 & 255)).$((n >> 16 & 255)).$((n >> 8 & 255)).$((n & 255))"
}
NODE_IP=$(first_host "$NODE_POD_CIDR")
# Cluster DNS: CoreDNS as a pod on the real node, behind this ClusterIP (kubelet clusterDNS).
NODE_DNS_IP=${SQE_K8S_NODE_DNS_IP:-10.96.0.10}
COREDNS_VERSION=v1.15.0
COREDNS_ARCHIVE="$SQE_CACHE/k8s/coredns-$COREDNS_VERSION/coredns.oci.tar"
COREDNS_IMAGE=localhost/coredns:$COREDNS_VERSION
# A shell and tools for smoke checks: Debian's busybox-static, one layer, no base image.
BUSYBOX_ARCHIVE="$SQE_CACHE/k8s/busybox/busybox.oci.tar"
BUSYBOX_IMAGE=localhost/sqe-busybox:dev
# TCP ports of host services on 127.0.0.1 (Keycloak, the catalog, MinIO) that pods reach at
# $NODE_IP:<same port> (a DNAT from the bridge only). Space separated; none by default.
NODE_HOST_PORTS=${SQE_K8S_NODE_HOST_PORTS:-}
KUBELET_PORT=${SQE_K8S_KUBELET_PORT:-10250}
KUBELET_HEALTHZ_PORT=${SQE_K8S_KUBELET_HEALTHZ_PORT:-10248}
KUBE_PROXY_HEALTHZ_PORT=${SQE_K8S_KUBE_PROXY_HEALTHZ_PORT:-10256}
KUBE_PROXY_METRICS_PORT=${SQE_K8S_KUBE_PROXY_METRICS_PORT:-10249}

# say, die, port_busy and the background-process helpers (start_bg, pid_alive, wait_for, stop_proc).
LOG_TAG=sqe-k8s PROC_STATE=$SQE_K8S_STATE PROC_STOP_GRACE_S=10
# shellcheck source=SCRIPTDIR/../lib/proc.sh
source "$SQE_ROOT/e2e/lib/proc.sh"

binaries_present() {
  local b
  for b in "$K8S_BIN"/{kube-apiserver,kube-controller-manager,kube-scheduler,kubectl} \
           "$ETCD_BIN/etcd" "$KWOK_BIN/kwok" "$KWOK_HOME/stages.yaml" "$HELM_BIN/helm"; do
    [[ -e $b ]] || return 1
  done
}
