#!/usr/bin/env bash
# Go tools of the deployment checks, built from the Go module proxy and cached outside the
# repository (like the control-plane binaries in scripts/control-plane.sh):
#   - promql-check, chart-readme and kstatus-check (the e2e tier runs it over the operator's
#     resources), from the module in hack/tools (go.mod/go.sum committed; the cache key is a
#     hash of its sources, so an edit rebuilds them),
#   - actionlint, which lints .github/workflows.
#
#   scripts/dev-tools.sh build        build-or-reuse all of them (~1 min cold on 2 cores)
#   scripts/dev-tools.sh path NAME    print where NAME (promql-check, chart-readme, kstatus-check,
#                                     actionlint) is cached
set -euo pipefail

ACTIONLINT_VERSION="${ACTIONLINT_VERSION:-1.7.12}"
CACHE_ROOT="${ALTOSTRAT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/altostrat-vpn-operator}"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS_SRC="$REPO_ROOT/hack/tools"
export GOTOOLCHAIN=local GOWORK=off CGO_ENABLED=0 GOFLAGS="-buildvcs=false"

log() { printf '[dev-tools] %s\n' "$*" >&2; }

tools_dir() {
  local hash
  hash="$(cd "$TOOLS_SRC" && find . -type f \( -name '*.go' -o -name go.mod -o -name go.sum \) -print0 |
          sort -z | xargs -0 sha256sum | sha256sum | cut -c1-12)"
  echo "$CACHE_ROOT/bin/hack-tools-$hash"
}
actionlint_dir() { echo "$CACHE_ROOT/bin/actionlint-$ACTIONLINT_VERSION"; }

path() {
  case "$1" in
    promql-check|chart-readme|kstatus-check) echo "$(tools_dir)/$1" ;;
    actionlint) echo "$(actionlint_dir)/actionlint" ;;
    *) log "unknown tool: $1"; return 2 ;;
  esac
}

build() {
  local dir; dir="$(tools_dir)"
  if [[ ! -x "$dir/promql-check" || ! -x "$dir/chart-readme" || ! -x "$dir/kstatus-check" ]]; then
    log "building promql-check, chart-readme and kstatus-check (hack/tools)"
    mkdir -p "$dir.tmp"
    ( cd "$TOOLS_SRC" && go build -mod=readonly -trimpath -ldflags "-s -w" -o "$dir.tmp/" \
        ./promql-check ./chart-readme ./kstatus-check )
    rm -rf "$dir"; mv "$dir.tmp" "$dir"
  fi
  dir="$(actionlint_dir)"
  if [[ ! -x "$dir/actionlint" ]]; then
    log "building actionlint v$ACTIONLINT_VERSION"
    mkdir -p "$dir"
    GOBIN="$dir" GOFLAGS="$GOFLAGS -mod=mod" go install -trimpath -ldflags "-s -w" \
      "github.com/rhysd/actionlint/cmd/actionlint@v$ACTIONLINT_VERSION"
  fi
  log "tools ready: $(tools_dir), $(actionlint_dir)"
}

case "${1:-}" in
  build) build ;;
  path) path "${2:?tool name}" ;;
  *) sed -n '2,11p' "$0" >&2; exit 2 ;;
esac
