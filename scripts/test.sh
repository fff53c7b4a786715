#!/usr/bin/env bash
# The project's test command (README "Run the tests"; CI runs it through .ci/run):
#   formatting, clippy, unit and HTTP contract tests, then the end-to-end suites against a
#   local kube-apiserver + etcd, the deployment checks (Helm/kustomize) and schemathesis
#   against the simulator. Exits non-zero on the first failure.
#
# It checks its prerequisites first and names everything missing in one message. What it
# builds or installs itself is cached outside the repository (ALTOSTRAT_CACHE, default
# ~/.cache/altostrat-vpn-operator).
#
# USE_EXISTING_CLUSTER=1 KUBECONFIG=... scripts/test.sh runs the end-to-end suites against that
# cluster instead: no control plane is built or started, this checkout's CRDs are applied
# server-side, the namespaces and cluster-scoped objects the suites created are deleted at the
# end, and the deployment checks (which install and delete altostrat-system) are skipped.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/existing-cluster.sh"
absolute_kubeconfig
cd "$(dirname "${BASH_SOURCE[0]}")/.."
existing=false
existing_cluster && existing=true

CACHE="${ALTOSTRAT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/altostrat-vpn-operator}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/cargo-target}"
export NO_PROXY="127.0.0.1,localhost,::1${NO_PROXY:+,$NO_PROXY}" no_proxy="127.0.0.1,localhost,::1${no_proxy:+,$no_proxy}"

step() { printf '\n==> %s\n' "$*"; }
started=$SECONDS

# Every prerequisite is checked before anything is built, and everything missing is reported
# in one message (on Debian/Ubuntu, `.ci/run` installs the system packages itself).
missing=()
need() { # need COMMAND HOW-TO-GET-IT
  command -v "$1" >/dev/null 2>&1 || missing+=("$1: $2")
}
need cargo   "Rust stable from https://rustup.rs"
$existing || need go "Go >= 1.26 from https://go.dev/dl (builds kube-apiserver, etcd, helm, Flux and the check tools)"
need kubectl "https://kubernetes.io/docs/tasks/tools/ (any recent version)"
need python3 "apt-get install python3 python3-venv"
need openssl "apt-get install openssl"
need curl    "apt-get install curl"
need jq      "apt-get install jq"
need setsid  "apt-get install util-linux"
if command -v cargo >/dev/null 2>&1; then
  cargo fmt --version >/dev/null 2>&1 || missing+=("cargo fmt: rustup component add rustfmt")
  cargo clippy --version >/dev/null 2>&1 || missing+=("cargo clippy: rustup component add clippy")
fi
if ! $existing && command -v go >/dev/null 2>&1; then
  gv="$(go env GOVERSION 2>/dev/null)"; gv="${gv#go}"
  # 1.26: Flux's controllers v1.9.6 (tests/e2e/flux.rs) declare go 1.26.0.
  [[ "$(printf '%s\n1.26\n' "${gv%%-*}" | sort -V | head -1)" == 1.26 ]] ||
    missing+=("go >= 1.26 (found $gv): https://go.dev/dl")
fi
if command -v python3 >/dev/null 2>&1 && ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
  missing+=("python3 venv/ensurepip (schemathesis runs in a virtualenv): apt-get install python3-venv")
fi
if ((${#missing[@]})); then
  {
    echo "scripts/test.sh: missing prerequisites:"
    printf '  - %s\n' "${missing[@]}"
    echo "Network access is needed too: the Go module proxy, crates.io and PyPI (first run only; cached after)."
    echo "On Debian/Ubuntu, .ci/run installs the system packages (with sudo) and then runs this script."
  } >&2
  exit 1
fi
command -v lua5.1 >/dev/null 2>&1 ||
  echo "note: lua5.1 not found: the Argo CD health-check table test will be skipped (apt-get install lua5.1)"
if $existing; then
  # Before minutes of building: the cluster answers and no operator there would interfere.
  cluster="$(cluster_name)"
  refuse_if_operator_installed
fi

if ! $existing; then
  step "control plane binaries (kube-apiserver, etcd, helm) and Flux (source-controller, kustomize-controller, Git server)"
  scripts/control-plane.sh build
  # The e2e Flux test runs them; set, a missing binary fails that test instead of skipping it.
  FLUX_BIN_DIR="$(scripts/control-plane.sh flux-bin-dir)"
  export FLUX_BIN_DIR

  step "check tools (promql-check, chart-readme, kstatus-check, actionlint)"
  scripts/dev-tools.sh build
  # The e2e kstatus test runs it; set, a missing binary fails that test instead of skipping it.
  KSTATUS_CHECK="$(scripts/dev-tools.sh path kstatus-check)"
  export KSTATUS_CHECK
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings (default features, and without the simulator as the image is built)"
cargo clippy --locked --all-targets -- -D warnings
cargo clippy --locked --no-default-features --all-targets -- -D warnings

step "unit, CRD drift and simulator contract tests"
cargo test --locked

# One binary (tests/e2e/), so its tests share one pool of threads. It includes the
# simulator-profile matrix (tests/e2e/fidelity.rs: the core lifecycle once per profile of
# `vpn-operator simulate --profile`, each its own test, run in parallel).
e2e() { cargo test --locked --test e2e -- --ignored --test-threads="${E2E_THREADS:-3}"; }
if $existing; then
  step "end-to-end suites against the existing cluster $cluster"
  # The suites label what they create with this run, so that only it is removed.
  export E2E_RUN_ID="test-$(date +%s)-$$"
  trap 'echo "removing what the suites created (run $E2E_RUN_ID)"; remove_e2e_objects "$E2E_RUN_ID"' EXIT
  install_crds
  e2e
else
  step "end-to-end suites against a local control plane"
  cp_dir="$(mktemp -d "${TMPDIR:-/tmp}/altostrat-cp.XXXXXX")"
  # A second cluster for the disaster-recovery tests: a copy of a resource applied there shares
  # the simulator but none of the first cluster's ownership records.
  cp2_dir="$(mktemp -d "${TMPDIR:-/tmp}/altostrat-cp2.XXXXXX")"
  trap 'scripts/control-plane.sh down "$cp_dir" >/dev/null 2>&1 || true; scripts/control-plane.sh down "$cp2_dir" >/dev/null 2>&1 || true' EXIT
  scripts/control-plane.sh up "$cp_dir"
  scripts/control-plane.sh up "$cp2_dir"
  export KUBECONFIG="$cp_dir/kubeconfig" E2E_SECOND_KUBECONFIG="$cp2_dir/kubeconfig"
  e2e
fi

if $existing; then
  step "deployment checks skipped: they install and delete altostrat-system and cluster-wide RBAC, on the local control plane only"
elif [[ -x scripts/deploy-checks.sh ]]; then
  step "deployment checks (helm lint/template/install, kustomize)"
  HELM="$(scripts/control-plane.sh bin-dir)/helm" scripts/deploy-checks.sh
fi

if [[ -x scripts/schemathesis.sh ]]; then
  step "schemathesis against the simulator"
  scripts/schemathesis.sh "$CARGO_TARGET_DIR/debug/vpn-operator"
fi

step "all checks passed in $((SECONDS - started))s"
