#!/usr/bin/env bash
# Local Kubernetes control plane (etcd + kube-apiserver + kube-controller-manager) for tests
# and the demo.
#
# No container runtime is needed: the binaries are built from the Go module proxy through
# wrapper modules whose go.mod/go.sum are committed under hack/control-plane/, and cached
# outside the repository (keyed by version) so that repeat runs start in seconds.
#
#   scripts/control-plane.sh build          build-or-reuse kube-apiserver, kube-controller-manager, etcd, helm,
#                                           and Flux's controllers and Git server (tests/e2e/flux.rs)
#   scripts/control-plane.sh up [DIR]       start etcd, kube-apiserver and kube-controller-manager on
#                                           loopback, write DIR/kubeconfig
#   scripts/control-plane.sh down [DIR]     stop what `up` started (by recorded PID) and remove DIR
#   scripts/control-plane.sh selftest [DIR] prove namespace deletion and garbage collection work
#                                           (DIR's kubeconfig, or $KUBECONFIG without DIR)
#   scripts/control-plane.sh env [DIR]      print `export KUBECONFIG=...` for DIR
#   scripts/control-plane.sh bin-dir        print the directory holding the cached binaries
#   scripts/control-plane.sh flux-bin-dir   print the directory holding the cached Flux binaries
#                                           (source-controller, kustomize-controller, gittestserver)
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-1.35.4}"
ETCD_VERSION="${ETCD_VERSION:-3.6.14}"
HELM_VERSION="${HELM_VERSION:-4.2.4}"
# Flux, for the GitOps end-to-end test (tests/e2e/flux.rs). v1.9.6 is the newest release that
# builds with Go 1.26 (v1.10 needs Go 1.27); helm-controller is not served by the module proxy.
FLUX_SOURCE_VERSION="${FLUX_SOURCE_VERSION:-1.9.6}"
FLUX_KUSTOMIZE_VERSION="${FLUX_KUSTOMIZE_VERSION:-1.9.6}"
GITTESTSERVER_VERSION="${GITTESTSERVER_VERSION:-0.25.0}"
# The controllers kube-controller-manager runs (upstream names; see its --help). Workload
# controllers are left out: with no scheduler or kubelet their Pods could never run.
# `resourcequota-controller` fills in a ResourceQuota's usage, without which the API server's
# quota admission refuses every create it covers (tests/e2e/cross_namespace.rs caps VpnPeers).
KCM_CONTROLLERS="${KCM_CONTROLLERS:-namespace-controller,garbage-collector-controller,serviceaccount-controller,serviceaccount-token-controller,root-ca-certificate-publisher-controller,resourcequota-controller}"
CACHE_ROOT="${ALTOSTRAT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/altostrat-vpn-operator}"
BIN_DIR="$CACHE_ROOT/bin/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-helm-$HELM_VERSION"
# A directory of their own, so that a Flux version change rebuilds only Flux.
FLUX_BIN_DIR="$CACHE_ROOT/bin/flux-source-$FLUX_SOURCE_VERSION-kustomize-$FLUX_KUSTOMIZE_VERSION-gittestserver-$GITTESTSERVER_VERSION"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WRAPPERS="$REPO_ROOT/hack/control-plane"
DEFAULT_DIR="${CONTROL_PLANE_DIR:-$CACHE_ROOT/run/control-plane}"

export GOTOOLCHAIN=local GOWORK=off CGO_ENABLED=0 GOFLAGS="-buildvcs=false"
export NO_PROXY="127.0.0.1,localhost,::1${NO_PROXY:+,$NO_PROXY}" no_proxy="127.0.0.1,localhost,::1${no_proxy:+,$no_proxy}"

log() { printf '[control-plane] %s\n' "$*" >&2; }

# Builds a binary from a committed wrapper module (go.mod + go.sum). A wrapper is needed because
# k8s.io/kubernetes and etcd's server module carry `replace` directives, which `go install pkg@v`
# refuses; a wrapper module's own replaces pin every staging module to its published version.
build_from_wrapper() {
  local wrapper="$1" pkg="$2" out="$3" ldflags="$4"
  local work; work="$(mktemp -d)"
  cp "$wrapper/go.mod" "$work/"
  [[ -f "$wrapper/go.sum" ]] && cp "$wrapper/go.sum" "$work/"
  # A wrapper with a main package of its own (gittestserver) builds it from these files.
  compgen -G "$wrapper/*.go" >/dev/null && cp "$wrapper"/*.go "$work/"
  ( cd "$work" && go build -mod=mod -trimpath -ldflags "$ldflags" -o "$out.tmp" "$pkg" )
  # Write back go.sum when it was first generated so that later builds are verified against it.
  if [[ ! -f "$wrapper/go.sum" ]] || ! cmp -s "$work/go.sum" "$wrapper/go.sum"; then
    cp "$work/go.sum" "$wrapper/go.sum"; cp "$work/go.mod" "$wrapper/go.mod"
    log "updated $wrapper/go.sum (commit it)"
  fi
  mv "$out.tmp" "$out"; rm -rf "$work"
}

build() { build_control_plane; build_flux; }

build_control_plane() {
  mkdir -p "$BIN_DIR"
  local minor="${K8S_VERSION#1.}"; minor="${minor%%.*}"
  if [[ ! -x "$BIN_DIR/kube-apiserver" ]]; then
    log "building kube-apiserver v$K8S_VERSION (cold: ~15-25 min on 2 cores)"
    local ld="-s -w" kv
    for kv in "gitVersion=v$K8S_VERSION" "gitMajor=1" "gitMinor=$minor" "gitTreeState=clean" "buildDate=1970-01-01T00:00:00Z"; do
      ld+=" -X 'k8s.io/component-base/version.$kv' -X 'k8s.io/client-go/pkg/version.$kv'"
    done
    build_from_wrapper "$WRAPPERS/kubernetes" k8s.io/kubernetes/cmd/kube-apiserver "$BIN_DIR/kube-apiserver" "$ld"
  fi
  # Same wrapper, module and version stamp as kube-apiserver. Checked on its own so that a cache
  # made before the controller-manager was part of the plane gains it without rebuilding the rest.
  if [[ ! -x "$BIN_DIR/kube-controller-manager" ]]; then
    log "building kube-controller-manager v$K8S_VERSION (cold: ~10 min on 2 cores; shares kube-apiserver's build cache)"
    local ld="-s -w" kv
    for kv in "gitVersion=v$K8S_VERSION" "gitMajor=1" "gitMinor=$minor" "gitTreeState=clean" "buildDate=1970-01-01T00:00:00Z"; do
      ld+=" -X 'k8s.io/component-base/version.$kv' -X 'k8s.io/client-go/pkg/version.$kv'"
    done
    build_from_wrapper "$WRAPPERS/kubernetes" k8s.io/kubernetes/cmd/kube-controller-manager "$BIN_DIR/kube-controller-manager" "$ld"
  fi
  if [[ ! -x "$BIN_DIR/etcd" ]]; then
    log "building etcd v$ETCD_VERSION"
    build_from_wrapper "$WRAPPERS/etcd" go.etcd.io/etcd/server/v3 "$BIN_DIR/etcd" "-s -w"
  fi
  if [[ ! -x "$BIN_DIR/helm" ]]; then
    log "building helm v$HELM_VERSION"
    GOBIN="$BIN_DIR" go install -trimpath \
      -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=v$HELM_VERSION" \
      "helm.sh/helm/v4/cmd/helm@v$HELM_VERSION"
  fi
  log "binaries ready in $BIN_DIR"
}

# Flux's source-controller and kustomize-controller and a Git server, run as host processes by
# tests/e2e/flux.rs. Cold: ~3.5 min each on 2 cores (the second shares much of the first's build
# cache), gittestserver ~25 s. The version is given in the wrapper's go.mod (`tool` + require).
build_flux() {
  mkdir -p "$FLUX_BIN_DIR"
  if [[ ! -x "$FLUX_BIN_DIR/source-controller" ]]; then
    log "building Flux source-controller v$FLUX_SOURCE_VERSION (cold: ~3.5 min on 2 cores)"
    build_from_wrapper "$WRAPPERS/flux-source-controller" github.com/fluxcd/source-controller "$FLUX_BIN_DIR/source-controller" "-s -w"
  fi
  if [[ ! -x "$FLUX_BIN_DIR/kustomize-controller" ]]; then
    log "building Flux kustomize-controller v$FLUX_KUSTOMIZE_VERSION (cold: ~2-3.5 min on 2 cores)"
    build_from_wrapper "$WRAPPERS/flux-kustomize-controller" github.com/fluxcd/kustomize-controller "$FLUX_BIN_DIR/kustomize-controller" "-s -w"
  fi
  if [[ ! -x "$FLUX_BIN_DIR/gittestserver" ]]; then
    log "building gittestserver v$GITTESTSERVER_VERSION"
    build_from_wrapper "$WRAPPERS/flux-gittestserver" local/control-plane/flux-gittestserver "$FLUX_BIN_DIR/gittestserver" "-s -w"
  fi
  flux_crds
  log "Flux binaries ready in $FLUX_BIN_DIR"
}

# The Flux CRDs of the versions built, copied from the module cache beside the binaries (the
# test applies them; the module cache may be cleaned).
flux_crds() {
  [[ -d "$FLUX_BIN_DIR/crds" ]] && return 0
  local tmp="$FLUX_BIN_DIR/crds.tmp" m dir
  rm -rf "$tmp"; mkdir -p "$tmp"
  for m in source-controller@v$FLUX_SOURCE_VERSION kustomize-controller@v$FLUX_KUSTOMIZE_VERSION; do
    dir="$(cd "$WRAPPERS/flux-${m%@*}" && go mod download -json "github.com/fluxcd/$m" | jq -r .Dir)"
    cp "$dir"/config/crd/bases/*.yaml "$tmp/"
  done
  chmod 644 "$tmp"/*.yaml; mv "$tmp" "$FLUX_BIN_DIR/crds"
}

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1]);s.close()'; }

gen_certs() {
  local d="$1"
  ( cd "$d"
    newkey() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
    mkca() { newkey "$1.key"; openssl req -x509 -new -key "$1.key" -sha256 -days 7 -subj "/O=local-control-plane/CN=$2" \
               -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,digitalSignature" -out "$1.crt" 2>/dev/null; }
    leaf() { newkey "$1.key"; openssl req -new -key "$1.key" -subj "$3" -out "$1.csr" 2>/dev/null
             openssl x509 -req -in "$1.csr" -CA "$2.crt" -CAkey "$2.key" -CAcreateserial -days 7 -sha256 \
               -extfile <(printf '%s\n' "$4") -out "$1.crt" 2>/dev/null; }
    mkca serving-ca serving-ca
    leaf apiserver serving-ca "/CN=localhost" \
      $'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature,keyEncipherment'
    mkca client-ca client-ca
    leaf admin client-ca "/O=system:masters/CN=admin" \
      $'extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature,keyEncipherment'
    newkey sa-signer.key && openssl pkey -in sa-signer.key -pubout -out sa-signer.pub 2>/dev/null )
}

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
  local secs="$1" what="$2"; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    (( SECONDS < deadline )) || { log "timed out after ${secs}s waiting for $what"; return 1; }
    sleep 0.2
  done
}

up() {
  local dir="${1:-$DEFAULT_DIR}"
  build_control_plane
  if [[ -f "$dir/kube-apiserver.pid" ]] && kill -0 "$(cat "$dir/kube-apiserver.pid")" 2>/dev/null; then
    log "already running (KUBECONFIG=$dir/kubeconfig)"; return 0
  fi
  rm -rf "$dir"; mkdir -p "$dir"
  gen_certs "$dir"
  local ep pp ap; ep=$(free_port); pp=$(free_port); ap=$(free_port)
  # etcd data on tmpfs when available: tests create thousands of objects and fsync dominates.
  local data="$dir/etcd-data"
  [[ -d /dev/shm && -w /dev/shm ]] && data="$(mktemp -d /dev/shm/altostrat-etcd.XXXXXX)" && echo "$data" >"$dir/etcd-data.path"
  setsid "$BIN_DIR/etcd" --name=local --data-dir="$data" \
    --listen-client-urls="http://127.0.0.1:$ep" --advertise-client-urls="http://127.0.0.1:$ep" \
    --listen-peer-urls="http://127.0.0.1:$pp" --initial-advertise-peer-urls="http://127.0.0.1:$pp" \
    --initial-cluster="local=http://127.0.0.1:$pp" --unsafe-no-fsync=true --quota-backend-bytes=4294967296 \
    </dev/null >"$dir/etcd.log" 2>&1 &
  echo $! >"$dir/etcd.pid"
  wait_for 30 "etcd health" curl -fsS "http://127.0.0.1:$ep/health"
  setsid "$BIN_DIR/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$ep" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$ap" \
    --cert-dir="$dir" --tls-cert-file="$dir/apiserver.crt" --tls-private-key-file="$dir/apiserver.key" \
    --client-ca-file="$dir/client-ca.crt" --authorization-mode=RBAC \
    --service-account-issuer="https://127.0.0.1:$ap/" \
    --service-account-key-file="$dir/sa-signer.pub" \
    --service-account-signing-key-file="$dir/sa-signer.key" \
    --service-cluster-ip-range=10.0.0.0/24 --allow-privileged=true \
    --disable-admission-plugins=ServiceAccount \
    --max-requests-inflight=1000 --max-mutating-requests-inflight=500 \
    </dev/null >"$dir/kube-apiserver.log" 2>&1 &
  echo $! >"$dir/kube-apiserver.pid"
  local c=(-fsS --cacert "$dir/serving-ca.crt" --cert "$dir/admin.crt" --key "$dir/admin.key")
  if ! wait_for 120 "kube-apiserver /readyz" curl "${c[@]}" "https://127.0.0.1:$ap/readyz" ||
     ! wait_for 60 "namespace default" curl "${c[@]}" "https://127.0.0.1:$ap/api/v1/namespaces/default"; then
    tail -40 "$dir/kube-apiserver.log" >&2; down "$dir"; return 1
  fi
  b64() { base64 -w0 "$dir/$1"; }
  cat >"$dir/kubeconfig" <<KCFG
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: https://127.0.0.1:$ap
    certificate-authority-data: $(b64 serving-ca.crt)
users:
- name: admin
  user:
    client-certificate-data: $(b64 admin.crt)
    client-key-data: $(b64 admin.key)
contexts:
- name: local
  context: {cluster: local, user: admin, namespace: default}
current-context: local
KCFG
  chmod 600 "$dir/kubeconfig"
  # kube-controller-manager: namespace deletion (the namespace controller empties and finalizes
  # deleted namespaces), ownerReference garbage collection, and each namespace's `default`
  # ServiceAccount and kube-root-ca.crt ConfigMap. No scheduler or kubelet: Pods still never run,
  # so the workload controllers are left out. It signs ServiceAccount tokens with the key whose
  # public half the apiserver verifies (--service-account-key-file) and runs each controller
  # under its own ServiceAccount with the bootstrap RBAC roles, as in a real cluster. Quotas are
  # resynced every 10 s instead of 5 min: a quota on a CRD installed moments before (as each test
  # run installs them) has its usage computed within seconds, not at the next full resync.
  local kp; kp=$(free_port)
  setsid "$BIN_DIR/kube-controller-manager" \
    --kubeconfig="$dir/kubeconfig" \
    --authentication-kubeconfig="$dir/kubeconfig" --authorization-kubeconfig="$dir/kubeconfig" \
    --authentication-skip-lookup=true \
    --bind-address=127.0.0.1 --secure-port="$kp" --cert-dir="$dir/kcm-certs" \
    --service-account-private-key-file="$dir/sa-signer.key" \
    --root-ca-file="$dir/serving-ca.crt" \
    --use-service-account-credentials=true \
    --controllers="$KCM_CONTROLLERS" \
    --resource-quota-sync-period=10s \
    --leader-elect=false \
    </dev/null >"$dir/kube-controller-manager.log" 2>&1 &
  echo $! >"$dir/kube-controller-manager.pid"
  # Healthy, and its controllers at work: the ServiceAccount controller has made `default`.
  if ! wait_for 60 "kube-controller-manager /healthz" curl -fsSk "https://127.0.0.1:$kp/healthz" ||
     ! wait_for 60 "ServiceAccount default/default (kube-controller-manager)" \
         curl "${c[@]}" "https://127.0.0.1:$ap/api/v1/namespaces/default/serviceaccounts/default"; then
    tail -40 "$dir/kube-controller-manager.log" >&2; down "$dir"; return 1
  fi
  log "ready: export KUBECONFIG=$dir/kubeconfig"
}

# Proves what kube-controller-manager adds, against the plane's kubeconfig, each within a bound:
# a deleted namespace that holds a ConfigMap is emptied and goes away, an object whose owner is
# gone is garbage-collected, and an object whose owner exists is kept.
selftest() {
  local kubeconfig="${KUBECONFIG:-}"
  [[ -n "${1:-}" ]] && kubeconfig="$1/kubeconfig"
  [[ -f "$kubeconfig" ]] || { log "selftest: no kubeconfig (give DIR or set KUBECONFIG)"; return 2; }
  local k=(kubectl --kubeconfig "$kubeconfig") bound="${SELFTEST_TIMEOUT:-60}"
  local ns="cp-selftest-$RANDOM$RANDOM" start
  "${k[@]}" create namespace "$ns" >/dev/null
  "${k[@]}" -n "$ns" create configmap payload --from-literal=k=v >/dev/null
  start=$SECONDS
  "${k[@]}" delete namespace "$ns" --wait=false >/dev/null
  if ! wait_for "$bound" "namespace $ns to be deleted" bash -c 'out=$("$@" get namespace "'"$ns"'" --ignore-not-found -o name) && [[ -z $out ]]' _ "${k[@]}"; then
    "${k[@]}" get namespace "$ns" -o jsonpath='{.status}' >&2 || true; echo >&2
    log "selftest FAILED: namespace $ns (with a ConfigMap) still exists ${bound}s after its deletion"; return 1
  fi
  log "selftest: namespace with a ConfigMap deleted in $((SECONDS - start))s"

  ns="cp-selftest-gc-$RANDOM$RANDOM"
  "${k[@]}" create namespace "$ns" >/dev/null
  "${k[@]}" -n "$ns" create configmap owner-gone >/dev/null
  "${k[@]}" -n "$ns" create configmap owner-kept >/dev/null
  local gone kept
  gone=$("${k[@]}" -n "$ns" get configmap owner-gone -o jsonpath='{.metadata.uid}')
  kept=$("${k[@]}" -n "$ns" get configmap owner-kept -o jsonpath='{.metadata.uid}')
  "${k[@]}" -n "$ns" delete configmap owner-gone >/dev/null
  dependent() { # dependent NAME OWNER-NAME OWNER-UID
    printf '{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"%s","ownerReferences":[{"apiVersion":"v1","kind":"ConfigMap","name":"%s","uid":"%s"}]}}' "$1" "$2" "$3" |
      "${k[@]}" -n "$ns" create -f - >/dev/null
  }
  dependent orphaned owner-gone "$gone"
  dependent owned owner-kept "$kept"
  start=$SECONDS
  if ! wait_for "$bound" "ConfigMap $ns/orphaned to be garbage-collected" bash -c 'out=$("$@" get configmap orphaned --ignore-not-found -o name) && [[ -z $out ]]' _ "${k[@]}" -n "$ns"; then
    log "selftest FAILED: ConfigMap $ns/orphaned, whose owner was deleted, still exists after ${bound}s"; return 1
  fi
  log "selftest: dependent of a deleted owner garbage-collected in $((SECONDS - start))s"
  if ! "${k[@]}" -n "$ns" get configmap owned >/dev/null 2>&1; then
    log "selftest FAILED: ConfigMap $ns/owned was deleted although its owner exists"; return 1
  fi
  "${k[@]}" delete namespace "$ns" --wait=false >/dev/null
  log "selftest passed"
}

down() {
  local dir="${1:-$DEFAULT_DIR}" p f
  for f in kube-controller-manager kube-apiserver etcd; do
    p=$(cat "$dir/$f.pid" 2>/dev/null) || continue
    kill "$p" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
  [[ -f "$dir/etcd-data.path" ]] && rm -rf "$(cat "$dir/etcd-data.path")"
  rm -rf "$dir"
}

case "${1:-}" in
  build) build ;;
  up) up "${2:-}" ;;
  down) down "${2:-}" ;;
  selftest) selftest "${2:-}" ;;
  env) echo "export KUBECONFIG=${2:-$DEFAULT_DIR}/kubeconfig" ;;
  bin-dir) echo "$BIN_DIR" ;;
  flux-bin-dir) echo "$FLUX_BIN_DIR" ;;
  *) sed -n '2,20p' "$0" >&2; exit 2 ;;
esac
