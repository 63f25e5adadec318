#!/usr/bin/env bash
# tools.sh: developer tools built from the Go module proxy (no release downloads), cached under
# ~/.cache/hab-bootstrap/tools/<tool>-<version>/. Prints the tool's path on stdout; progress on stderr.
#
#   scripts/tools.sh helm         build helm once (~3-6 min cold on 2 cores), then print its path (instant)
#   scripts/tools.sh cargo-deny   `cargo install --locked cargo-deny` once into ~/.cargo/bin, then
#                                 print its path (the build is long on 2 cores: see CONTRIBUTING.md)
#
# Knobs: HAB_HELM_VERSION [v3.22.0], HAB_CARGO_DENY_VERSION [0.20.2],
# HAB_TOOLS_CACHE [~/.cache/hab-bootstrap/tools].
#
#   helm=$(scripts/tools.sh helm) && "$helm" version
set -euo pipefail

HELM_VERSION=${HAB_HELM_VERSION:-v3.22.0}
CARGO_DENY_VERSION=${HAB_CARGO_DENY_VERSION:-0.20.2}
CACHE_ROOT=${HAB_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hab-bootstrap/tools}

log() { printf '[tools %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[tools] ERROR: %s\n' "$*" >&2; exit 1; }

go_env() {
  # As scripts/control-plane.sh: no toolchain switching, static binary, -mod=mod fills go.sum.
  export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod GOWORK=off
}

helm_path() {
  local dir="$CACHE_ROOT/helm-$HELM_VERSION" major
  if [[ -x "$dir/helm" ]]; then
    printf '%s\n' "$dir/helm"
    return 0
  fi
  command -v go >/dev/null || die "go is required to build helm"
  [[ $HELM_VERSION =~ ^v([34])\.[0-9]+\.[0-9]+$ ]] || die "unsupported helm version '$HELM_VERSION'"
  major=${BASH_REMATCH[1]}
  mkdir -p "$dir"
  exec 8>"$dir/.build.lock"
  flock 8
  if [[ ! -x "$dir/helm" ]]; then
    local t0=$SECONDS module="helm.sh/helm/v$major" gomod client_go k8s_major k8s_minor
    log "building helm $HELM_VERSION from the Go module proxy (cached in $dir)"
    # helm's Makefile derives the default Kubernetes version (.Capabilities.KubeVersion, lint's
    # deprecation checks) from its client-go version; without these flags it reports v1.20.
    gomod=$(go_env && go mod download -json "$module@$HELM_VERSION" | sed -n 's/^\t"GoMod": "\(.*\)",$/\1/p')
    [[ -f $gomod ]] || die "could not download $module@$HELM_VERSION"
    client_go=$(sed -n 's/^[[:space:]]*k8s\.io\/client-go v0\.\([0-9]*\)\.[0-9]*.*/\1/p' "$gomod" | head -1)
    [[ -n $client_go ]] || die "no k8s.io/client-go in $gomod"
    k8s_major=1 k8s_minor=$client_go
    local ldflags="-s -w -X $module/internal/version.version=$HELM_VERSION"
    ldflags+=" -X $module/internal/version.gitTreeState=clean"
    if [[ $major == 3 ]]; then
      ldflags+=" -X $module/pkg/lint/rules.k8sVersionMajor=$k8s_major -X $module/pkg/lint/rules.k8sVersionMinor=$k8s_minor"
      ldflags+=" -X $module/pkg/chartutil.k8sVersionMajor=$k8s_major -X $module/pkg/chartutil.k8sVersionMinor=$k8s_minor"
    else
      ldflags+=" -X $module/pkg/lint/rules.k8sVersionMajor=$k8s_major -X $module/pkg/lint/rules.k8sVersionMinor=$k8s_minor"
      ldflags+=" -X $module/pkg/chart/common.k8sVersionMajor=$k8s_major -X $module/pkg/chart/common.k8sVersionMinor=$k8s_minor"
    fi
    rm -rf "$dir/tmpbin"
    mkdir -p "$dir/tmpbin"
    if ! (go_env && GOBIN="$dir/tmpbin" go install -trimpath -ldflags="$ldflags" "$module/cmd/helm@$HELM_VERSION") >&2; then
      # `go install pkg@version` refuses modules with replace directives: build from a wrapper
      # module instead (as scripts/control-plane.sh does for etcd).
      log "go install refused; building through a wrapper module"
      local w="$dir/wrapper"
      rm -rf "$w" && mkdir -p "$w"
      printf 'module hab-bootstrap.local/helm-wrapper\n\ngo 1.26.0\n\nrequire %s %s\n' "$module" "$HELM_VERSION" >"$w/go.mod"
      (cd "$w" && go_env && go build -trimpath -ldflags="$ldflags" -o "$dir/tmpbin/helm" "$module/cmd/helm") >&2
    fi
    mv "$dir/tmpbin/helm" "$dir/helm"
    rm -rf "$dir/tmpbin" "$dir/wrapper"
    log "helm $HELM_VERSION built in $((SECONDS - t0)) s"
  fi
  flock -u 8
  printf '%s\n' "$dir/helm"
}

cargo_deny_path() {
  local bin="${CARGO_HOME:-$HOME/.cargo}/bin/cargo-deny"
  if [[ -x $bin ]] && "$bin" --version 2>/dev/null | grep -q " $CARGO_DENY_VERSION\$"; then
    printf '%s\n' "$bin"
    return 0
  fi
  local t0=$SECONDS
  log "installing cargo-deny $CARGO_DENY_VERSION (cargo install --locked, once)"
  cargo install --locked cargo-deny --version "$CARGO_DENY_VERSION" >&2
  log "cargo-deny $CARGO_DENY_VERSION installed in $((SECONDS - t0)) s"
  printf '%s\n' "$bin"
}

case ${1:-} in
helm) helm_path ;;
cargo-deny) cargo_deny_path ;;
*)
  sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
  exit 2
  ;;
esac
