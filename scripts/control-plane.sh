#!/usr/bin/env bash
# control-plane.sh: build and run a REAL Kubernetes control plane on loopback, from Go modules only.
#
# Components (all built from the Go module proxy, no images, no release downloads):
#   etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, and kwok (fake kubelet).
#
# Subcommands:
#   ensure-deps            install missing apt packages (openssl, curl, util-linux, procps) if any
#   ensure-habitat-deps    install the runtime libraries of the real Habitat binaries
#                          (libzmq5, libsodium23) if missing (tests/e2e_habitat)
#                          is missing (apt-get update && apt-get install -y; needs root)
#   build                  build/cached binaries under ~/.cache/hab-bootstrap/control-plane/ (no-op when cached)
#   start <state-dir>      generate certs, start everything on 127.0.0.1, wait until usable,
#                          write <state-dir>/env and <state-dir>/kubeconfig
#   stop <state-dir>       stop exactly the processes recorded in <state-dir>/pids (reverse order,
#                          TERM then KILL), then remove <state-dir>. Idempotent; safe on half-started dirs.
#   run [--state-dir D] -- <cmd...>
#                          build (if needed), start in a temp state dir (or D), run cmd with the env
#                          file's variables exported and $CP_BIN_DIR first on PATH, ALWAYS stop,
#                          exit with cmd's exit code (130/143 if run got INT/TERM: the command's
#                          process group gets TERM first). A watchdog stops everything if `run`
#                          itself is SIGKILLed.
#   status <state-dir>     show recorded processes and whether they are alive
#   free-ports [n]         print n [1] free TCP port numbers (for servers a caller starts on 127.0.0.1)
#   restart-apiserver <state-dir> [down-seconds]
#                          stop kube-apiserver (TERM, then KILL), stay down for down-seconds [0],
#                          start it again with the same command line (same port, certificates and
#                          etcd), record its new PID, wait for /readyz. For fault tests.
#
# Callers that use start/stop directly MUST install a trap so a crashed run leaves nothing behind:
#
#   dir=$(mktemp -d)
#   trap 'scripts/control-plane.sh stop "$dir"' EXIT
#   scripts/control-plane.sh start "$dir"
#   . "$dir/env"            # `export K=V` lines: KUBECONFIG, CP_APISERVER_URL, CP_BIN_DIR, ...
#   "$CP_KUBECTL" get nodes # or PATH="$CP_BIN_DIR:$PATH" (`run` does that for its command)
#
# `start` itself stops whatever it started if any step fails (and on INT/TERM), then exits non-zero
# with the tail of the failing log. `run` does the trap for you:
#
#   scripts/control-plane.sh run -- cargo test --test e2e -- --ignored
#
# Pods are scheduled by a real kube-scheduler onto the fake node "kwok-node-0" (managed by kwok),
# so pod templates need no nodeName. kwok gives pods an IP and marks them Running/Ready.
#
# Environment knobs (defaults in brackets):
#   HAB_CP_CACHE       [~/.cache/hab-bootstrap/control-plane]  binary cache root
#   HAB_CP_K8S_VERSION [v1.36.3]   k8s.io/kubernetes version (staging modules use v0.<minor>.<patch>)
#   HAB_CP_ETCD_VERSION [v3.6.16]  go.etcd.io/etcd/server/v3 version
#   HAB_CP_KWOK_VERSION [v0.8.0]   sigs.k8s.io/kwok version
#   HAB_CP_START_TIMEOUT [60]      seconds to wait for each readiness condition
#   HAB_CP_STOP_GRACE  [3]         seconds between TERM and KILL, per process, in stop
#   HAB_CP_KEEP_STATE  [unset]     set to 1 to make stop keep the state dir (logs) for debugging
#   HAB_CP_OWNER_PID   [unset]     `start` only: a watchdog stops the plane when this PID exits
#   HAB_CP_QUIET       [unset]     set to 1 to silence progress messages
#   HAB_CP_POD_CIDR    [127.1.0.0/16] pod IP range (kwok --cidr and the node's podCIDR); loopback so
#                                 that tests can run real processes on pod IPs
#
# Progress goes to stderr; stdout is kept for command results (e.g. `run`'s command output).
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SELF="$SCRIPT_DIR/$(basename "${BASH_SOURCE[0]}")"
HELPERS="$SCRIPT_DIR/control-plane"

K8S_VERSION=${HAB_CP_K8S_VERSION:-v1.36.3}
ETCD_VERSION=${HAB_CP_ETCD_VERSION:-v3.6.16}
KWOK_VERSION=${HAB_CP_KWOK_VERSION:-v0.8.0}
CACHE_ROOT=${HAB_CP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hab-bootstrap/control-plane}
START_TIMEOUT=${HAB_CP_START_TIMEOUT:-60}
# kube-apiserver often does not exit on TERM while its own loopback connections linger (its
# graceful shutdown waits for them); all state is thrown away anyway, so KILL after a short grace.
STOP_GRACE=${HAB_CP_STOP_GRACE:-3}

K8S_DIR="$CACHE_ROOT/$K8S_VERSION"
K8S_BIN="$K8S_DIR/bin"
ETCD_DIR="$CACHE_ROOT/etcd-$ETCD_VERSION"
ETCD_BIN="$ETCD_DIR/bin"
KWOK_DIR="$CACHE_ROOT/kwok-$KWOK_VERSION"
KWOK_BIN="$KWOK_DIR/bin"
KWOK_STAGES="$KWOK_DIR/stages"

K8S_BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
KWOK_NODE=kwok-node-0

log() { [[ "${HAB_CP_QUIET:-}" == 1 ]] || printf '[control-plane %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[control-plane] ERROR: %s\n' "$*" >&2; exit 1; }

usage() {
  sed -n '2,/^set -euo/p' "$SELF" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
  exit 2
}

# ----------------------------------------------------------------------------------------------
# ensure-deps
# ----------------------------------------------------------------------------------------------
ensure_deps() {
  local missing=() cmd pkg
  for pair in openssl:openssl curl:curl flock:util-linux setsid:util-linux ps:procps; do
    cmd=${pair%%:*} pkg=${pair#*:}
    command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if ((${#missing[@]})); then
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    log "installing missing apt packages: ${missing[*]}"
    local sudo=()
    [[ $(id -u) == 0 ]] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >&2
  fi
  command -v go >/dev/null 2>&1 || die "go is not installed (need Go >= 1.26 for Kubernetes ${K8S_VERSION})"
}

# What the real Habitat binaries (hab-sup) link besides libc: tests/e2e_habitat runs them.
ensure_habitat_deps() {
  local missing=() pkg
  for pkg in libzmq5 libsodium23; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  if ((${#missing[@]})); then
    log "installing the Habitat runtime libraries: ${missing[*]}"
    local sudo=()
    [[ $(id -u) == 0 ]] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >&2
  fi
}

# ----------------------------------------------------------------------------------------------
# build
# ----------------------------------------------------------------------------------------------
have_all() { # dir names...
  local d=$1 b; shift
  for b in "$@"; do [[ -x "$d/$b" ]] || return 1; done
}

built() {
  have_all "$K8S_BIN" "${K8S_BINARIES[@]}" && have_all "$ETCD_BIN" etcd && have_all "$KWOK_BIN" kwok &&
    [[ -f "$KWOK_STAGES/node-fast.yaml" && -f "$KWOK_STAGES/pod-fast.yaml" ]]
}

go_env() {
  # Hermetic-ish Go settings: never switch toolchains, static binaries, let -mod=mod fill go.sum.
  export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod GOWORK=off
}

# Runs "$@" saying every minute that it still runs: a cold Go build prints nothing for many minutes.
# The build is a background job, which ignores SIGINT in a script: INT/TERM stop it explicitly.
with_progress() { # description command...
  local desc=$1 t0=$SECONDS next=$((SECONDS + 60)) pid
  shift
  "$@" &
  pid=$!
  trap 'kill "$pid" 2>/dev/null; exit 130' INT TERM
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    if ((SECONDS >= next)); then
      log "still $desc ($((SECONDS - t0)) s)"
      next=$((next + 60))
    fi
  done
  trap - INT TERM
  wait "$pid"
}

go_in() { # dir go-args...: the go command in dir, with go_env
  local dir=$1
  shift
  (cd "$dir" && go_env && go "$@") >&2
}

build_etcd() {
  have_all "$ETCD_BIN" etcd && return 0
  log "building etcd $ETCD_VERSION (wrapper module calling etcdmain.Main)"
  local w="$ETCD_DIR/wrapper"
  rm -rf "$w" && mkdir -p "$w"
  sed -e "s/@ETCD_VERSION@/$ETCD_VERSION/g" "$HELPERS/etcd-wrapper.go.mod.in" >"$w/go.mod"
  cp "$HELPERS/etcd-wrapper-main.go" "$w/main.go"
  with_progress "building etcd" go_in "$w" build -trimpath -ldflags='-s -w' -o "$w/etcd" .
  mkdir -p "$ETCD_BIN" && mv "$w/etcd" "$ETCD_BIN/etcd"
}

build_kwok() {
  if ! have_all "$KWOK_BIN" kwok; then
    log "building kwok $KWOK_VERSION"
    mkdir -p "$KWOK_DIR/tmpbin"
    GOBIN="$KWOK_DIR/tmpbin" with_progress "building kwok" go_in "$KWOK_DIR" install -trimpath \
      -ldflags="-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v}" \
      "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
    mkdir -p "$KWOK_BIN" && mv "$KWOK_DIR/tmpbin/kwok" "$KWOK_BIN/kwok" && rmdir "$KWOK_DIR/tmpbin"
  fi
  if [[ ! -f "$KWOK_STAGES/node-fast.yaml" || ! -f "$KWOK_STAGES/pod-fast.yaml" ]]; then
    # Stage files (node/pod lifecycle) live in the kwok module under kustomize/stage/.
    local mdir
    mdir=$(go_env && go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
    [[ -d "$mdir/kustomize/stage" ]] || die "kwok module dir not found ($mdir)"
    mkdir -p "$KWOK_STAGES"
    # node-fast: nodes become Ready at once; pod-fast: pods get an IP and become Running/Ready,
    # and deleted pods are removed (finalizers/deletionTimestamp handled).
    local f
    cp "$mdir/kustomize/stage/node/fast/node-initialize.yaml" "$KWOK_STAGES/node-fast.yaml"
    for f in pod-ready pod-complete pod-delete; do
      printf -- '---\n'
      cat "$mdir/kustomize/stage/pod/fast/$f.yaml"
    done >"$KWOK_STAGES/pod-fast.yaml.tmp"
    mv "$KWOK_STAGES/pod-fast.yaml.tmp" "$KWOK_STAGES/pod-fast.yaml"
    chmod -R u+w "$KWOK_STAGES"
  fi
}

build_k8s() {
  have_all "$K8S_BIN" "${K8S_BINARIES[@]}" && return 0
  local v=$K8S_VERSION
  [[ $v =~ ^v1\.([0-9]+)\.([0-9]+)$ ]] || die "unsupported K8S version '$v' (want v1.Y.Z)"
  local minor=${BASH_REMATCH[1]} patch=${BASH_REMATCH[2]}
  local staging_v="v0.$minor.$patch"
  log "building Kubernetes $v (${K8S_BINARIES[*]}), staging modules at $staging_v; this takes 20-40 min cold on 2 cores"
  local w="$K8S_DIR/wrapper" gomod
  rm -rf "$w" && mkdir -p "$w"
  gomod=$(go_env && go mod download -json "k8s.io/kubernetes@$v" | sed -n 's/^\t"GoMod": "\(.*\)",$/\1/p')
  [[ -f "$gomod" ]] || die "could not download k8s.io/kubernetes@$v go.mod"
  {
    printf 'module hab-bootstrap.local/cp-k8s-wrapper\n\ngo 1.26.0\n\nrequire k8s.io/kubernetes %s\n\nreplace (\n' "$v"
    # every staging module: `k8s.io/X => ./staging/src/k8s.io/X` in kubernetes' own go.mod
    sed -n 's#^[[:space:]]*\(k8s\.io/[^[:space:]]*\)[[:space:]]*=>[[:space:]]*\./staging/.*#\1#p' "$gomod" |
      sort -u | while read -r m; do printf '\t%s => %s %s\n' "$m" "$m" "$staging_v"; done
    printf ')\n'
  } >"$w/go.mod"
  grep -q 'k8s.io/api =>' "$w/go.mod" || die "no staging replaces found in $gomod"
  # a tools.go-like file is not needed: `go build` of package paths resolves them via -mod=mod.
  local ldflags=(-s -w) key val
  for kv in "gitVersion=$v" "gitMajor=1" "gitMinor=$minor" "gitTreeState=clean" \
    "gitCommit=0000000000000000000000000000000000000000" \
    "buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"; do
    key=${kv%%=*} val=${kv#*=}
    ldflags+=("-X" "k8s.io/component-base/version.$key=$val" "-X" "k8s.io/client-go/pkg/version.$key=$val")
  done
  mkdir -p "$w/bin"
  local pkgs=()
  for b in "${K8S_BINARIES[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
  with_progress "building Kubernetes $v" go_in "$w" build -trimpath -ldflags="${ldflags[*]}" -o "$w/bin/" "${pkgs[@]}"
  mkdir -p "$K8S_BIN"
  for b in "${K8S_BINARIES[@]}"; do mv "$w/bin/$b" "$K8S_BIN/$b"; done
}

cmd_build() {
  local t0=$SECONDS
  if built; then
    log "binaries already built (cache: $CACHE_ROOT); nothing to do"
    return 0
  fi
  ensure_deps
  mkdir -p "$CACHE_ROOT"
  # serialize concurrent builds (e.g. two test runners)
  exec 9>"$CACHE_ROOT/.build.lock"
  flock 9
  if ! built; then
    build_etcd
    build_kwok
    build_k8s
  fi
  flock -u 9
  log "build finished in $((SECONDS - t0)) s; binaries: $K8S_BIN $ETCD_BIN $KWOK_BIN"
}

# ----------------------------------------------------------------------------------------------
# start / stop / run
# ----------------------------------------------------------------------------------------------
SERVICE_CIDR=10.96.0.0/16 # first IP (10.96.0.1) is the `kubernetes` Service; in the apiserver cert
# kwok hands out pod IPs from here. The default is a loopback range so that a process of this
# machine can listen on a pod's IP (tests/e2e_habitat runs real Supervisors on them).
POD_CIDR=${HAB_CP_POD_CIDR:-127.1.0.0/16}

abs_dir() { mkdir -p "$1" && (cd "$1" && pwd -P); }

port_in_use() { # port -> 0 if any socket (v4/v6) has it as local port
  local hex
  hex=$(printf ':%04X ' "$1")
  grep -qs -- "$hex" /proc/net/tcp /proc/net/tcp6
}

PICKED_PORTS=" "
pick_port() { # VAR: set VAR to a free TCP port (not listening or connected on any address)
  local p i
  for ((i = 0; i < 500; i++)); do
    p=$((20000 + (RANDOM * 32768 + RANDOM) % 30000))
    [[ $PICKED_PORTS == *" $p "* ]] && continue
    port_in_use "$p" && continue
    PICKED_PORTS+="$p "
    printf -v "$1" '%s' "$p"
    return 0
  done
  die "could not find a free port"
}

cmd_free_ports() { # [n]
  local n=${1:-1} i free ports=()
  for ((i = 0; i < n; i++)); do
    pick_port free
    ports+=("$free")
  done
  echo "${ports[*]}"
}

gen_pki() { # dir logfile -- ECDSA P-256 keys (fast to generate; RSA took ~2 s for all keys)
  local d=$1 logf=$2
  mkdir -p "$d"
  (
    cd "$d"
    exec 2>>"$logf"
    umask 077
    local ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1)
    openssl req -x509 "${ec[@]}" -nodes -keyout ca.key -out ca.crt -days 3650 \
      -subj "/CN=hab-bootstrap-control-plane-ca" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
    # name  subject  extensions
    issue() {
      local name=$1 subj=$2 ext=$3
      openssl req "${ec[@]}" -nodes -keyout "$name.key" -out "$name.csr" -subj "$subj"
      printf '%s\n' "$ext" >"$name.ext"
      openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -out "$name.crt" \
        -days 3650 -extfile "$name.ext"
      rm -f "$name.csr" "$name.ext"
    }
    issue apiserver "/CN=kube-apiserver" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
    local client="basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth"
    issue admin "/O=system:masters/CN=kubernetes-admin" "$client"
    # The controller-manager, scheduler and kwok authenticate with their own names (so logs and
    # audit read right) but as system:masters, to keep RBAC out of the way of the control plane.
    issue controller-manager "/O=system:masters/CN=system:kube-controller-manager" "$client"
    issue scheduler "/O=system:masters/CN=system:kube-scheduler" "$client"
    issue kwok "/O=system:masters/CN=kwok-controller" "$client"
    # service-account token signing key pair
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out sa.key
    openssl pkey -in sa.key -pubout -out sa.pub
    rm -f ca.srl
    chmod 644 ./*.crt sa.pub
  )
}

write_kubeconfig() { # file user cert key
  local f=$1 user=$2 cert=$3 key=$4
  cat >"$f" <<KCFG
apiVersion: v1
kind: Config
clusters:
- name: hab-bootstrap
  cluster:
    server: ${CP_APISERVER_URL}
    certificate-authority: ${PKI}/ca.crt
users:
- name: ${user}
  user:
    client-certificate: ${cert}
    client-key: ${key}
contexts:
- name: ${user}@hab-bootstrap
  context:
    cluster: hab-bootstrap
    user: ${user}
current-context: ${user}@hab-bootstrap
KCFG
  chmod 600 "$f"
}

# launch NAME BINARY ARGS...: start in background, log to logs/NAME.log, record pid
LAUNCH_SEQ=0
launch() {
  local name=$1 bin=$2
  shift 2
  LAUNCH_SEQ=$((LAUNCH_SEQ + 1))
  log "starting $name"
  "$bin" "$@" </dev/null >"$STATE/logs/$name.log" 2>&1 &
  local pid=$!
  printf '%s\n' "$pid" >"$STATE/pids/$(printf '%02d' "$LAUNCH_SEQ")-$name.pid"
  printf -v "PID_${name//-/_}" '%s' "$pid"
  STARTED+=("$name")
}

LAST_WAIT_FOR=""
running() { # the process exists and is not a zombie
  local state
  state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
  [[ -n $state && $state != Z ]]
}

check_alive() { # fail fast when a started process died
  local f name pid
  for f in "$STATE"/pids/*.pid; do
    [[ -e $f ]] || continue
    name=$(basename "$f" .pid) name=${name#*-}
    pid=$(<"$f")
    # Not our_process: right after the fork the child may not have exec'd its binary yet (its
    # command line is still this script's), which under load read as "exited".
    if ! running "$pid"; then
      LAST_WAIT_FOR=$name
      echo "$name (pid $pid) exited" >&2
      return 1
    fi
  done
}

# wait_for DESCRIPTION LOGNAME CMD...: poll CMD until success, within START_TIMEOUT seconds
wait_for() {
  local desc=$1 logname=$2
  shift 2
  local deadline=$((SECONDS + START_TIMEOUT))
  LAST_WAIT_FOR=$logname
  while ! "$@" >/dev/null 2>&1; do
    check_alive || return 1
    if ((SECONDS >= deadline)); then
      echo "timed out after ${START_TIMEOUT}s waiting for $desc" >&2
      return 1
    fi
    sleep 0.25
  done
  log "$desc: ok ($((SECONDS - T_START)) s)"
}

# shellcheck disable=SC2317 # invoked indirectly, by wait_for
node_ready() { # Ready=True and no taints left (so pods can be scheduled)
  [[ $(kubectl_cp get node "$KWOK_NODE" \
    -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}{.spec.taints}') == True ]]
}

kubectl_cp() { "$K8S_BIN/kubectl" --kubeconfig "$STATE/kubeconfig" "$@"; }

# EXIT trap of `start`: when start did not get to the end, stop what it started.
# shellcheck disable=SC2317 # invoked indirectly, by trap
start_exit() {
  local rc=$?
  [[ ${START_OK:-0} == 1 ]] && return 0
  trap - EXIT INT TERM
  set +e
  echo "[control-plane] ERROR: start failed (rc=$rc) while waiting for: ${LAST_WAIT_FOR:-?}" >&2
  local f="$STATE/logs/${LAST_WAIT_FOR:-none}.log"
  if [[ -s $f ]]; then
    echo "----- tail of $f -----" >&2
    tail -n 40 "$f" >&2
    echo "-----" >&2
  fi
  stop_processes "$STATE"
  if [[ ${CP_RUN_MODE:-0} == 1 ]]; then
    cmd_stop "$STATE" # `run` owns the state dir: remove it (unless HAB_CP_KEEP_STATE=1)
  else
    echo "[control-plane] stopped what was started; logs kept in $STATE/logs (\`$SELF stop $STATE\` removes them)" >&2
  fi
  exit 1
}

cmd_start() {
  [[ $# -eq 1 ]] || die "usage: $0 start <state-dir>"
  built || die "binaries not built: run '$SELF build' first (cache: $CACHE_ROOT)"
  if ! command -v openssl >/dev/null || ! command -v curl >/dev/null; then ensure_deps; fi
  STATE=$(abs_dir "$1")
  if compgen -G "$STATE/pids/*.pid" >/dev/null; then
    die "$STATE already has a control plane (pids/); stop it first"
  fi
  T_START=$SECONDS
  STARTED=()
  mkdir -p "$STATE/logs" "$STATE/pids" "$STATE/bin"
  PKI="$STATE/pki"
  START_OK=0
  trap start_exit EXIT
  trap 'echo "[control-plane] interrupted" >&2; exit 130' INT
  trap 'echo "[control-plane] terminated" >&2; exit 143' TERM

  local b
  for b in "${K8S_BINARIES[@]}"; do ln -sfn "$K8S_BIN/$b" "$STATE/bin/$b"; done
  ln -sfn "$ETCD_BIN/etcd" "$STATE/bin/etcd"
  ln -sfn "$KWOK_BIN/kwok" "$STATE/bin/kwok"

  log "generating certificates in $PKI"
  LAST_WAIT_FOR=pki
  gen_pki "$PKI" "$STATE/logs/pki.log"

  local etcd_port etcd_peer_port api_port
  pick_port etcd_port
  pick_port etcd_peer_port
  pick_port api_port
  CP_APISERVER_URL="https://127.0.0.1:$api_port"
  local etcd_url="http://127.0.0.1:$etcd_port"

  write_kubeconfig "$STATE/kubeconfig" admin "$PKI/admin.crt" "$PKI/admin.key"
  write_kubeconfig "$STATE/controller-manager.kubeconfig" system:kube-controller-manager \
    "$PKI/controller-manager.crt" "$PKI/controller-manager.key"
  write_kubeconfig "$STATE/scheduler.kubeconfig" system:kube-scheduler "$PKI/scheduler.crt" "$PKI/scheduler.key"
  write_kubeconfig "$STATE/kwok.kubeconfig" kwok-controller "$PKI/kwok.crt" "$PKI/kwok.key"

  # -- etcd --------------------------------------------------------------------------------------
  launch etcd "$ETCD_BIN/etcd" \
    --name=cp --data-dir="$STATE/etcd" \
    --listen-client-urls="$etcd_url" --advertise-client-urls="$etcd_url" \
    --listen-peer-urls="http://127.0.0.1:$etcd_peer_port" \
    --initial-advertise-peer-urls="http://127.0.0.1:$etcd_peer_port" \
    --initial-cluster="cp=http://127.0.0.1:$etcd_peer_port" \
    --unsafe-no-fsync=true --log-level=warn
  wait_for "etcd healthy" etcd curl -fsS "$etcd_url/health"

  # -- kube-apiserver ----------------------------------------------------------------------------
  launch kube-apiserver "$K8S_BIN/kube-apiserver" \
    --etcd-servers="$etcd_url" \
    --bind-address=127.0.0.1 --secure-port="$api_port" \
    --advertise-address=127.0.0.1 --endpoint-reconciler-type=none \
    --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --client-ca-file="$PKI/ca.crt" \
    --authorization-mode=Node,RBAC \
    --allow-privileged=true \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$PKI/sa.pub" \
    --service-account-signing-key-file="$PKI/sa.key" \
    --profiling=false \
    --v=1
  wait_for "kube-apiserver /readyz" kube-apiserver \
    curl -fsS --max-time 5 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
    "$CP_APISERVER_URL/readyz"

  # -- kube-controller-manager -------------------------------------------------------------------
  local controllers=(
    serviceaccount-controller serviceaccount-token-controller root-ca-certificate-publisher-controller
    namespace-controller garbage-collector-controller clusterrole-aggregation-controller
    replicaset-controller deployment-controller statefulset-controller daemonset-controller
    job-controller cronjob-controller disruption-controller resourcequota-controller
    endpoints-controller endpointslice-controller endpointslice-mirroring-controller
    pod-garbage-collector-controller ttl-after-finished-controller persistentvolumeclaim-protection-controller
    # binds claims to pre-created PersistentVolumes (no provisioner here), so volumeClaimTemplates work
    persistentvolume-binder-controller
    service-cidr-controller validatingadmissionpolicy-status-controller
    # removes the node.kubernetes.io/not-ready taint that admission puts on every new Node once
    # kwok reports it Ready (and would taint it again if kwok stopped renewing its lease)
    node-lifecycle-controller
  )
  local IFS_OLD=$IFS
  IFS=,
  local controllers_csv="${controllers[*]}"
  IFS=$IFS_OLD
  launch kube-controller-manager "$K8S_BIN/kube-controller-manager" \
    --kubeconfig="$STATE/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$STATE/controller-manager.kubeconfig" \
    --authorization-kubeconfig="$STATE/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port=0 \
    --leader-elect=false \
    --controllers="$controllers_csv" \
    --service-account-private-key-file="$PKI/sa.key" \
    --root-ca-file="$PKI/ca.crt" \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --node-monitor-period=2s \
    --v=1

  # -- kube-scheduler ----------------------------------------------------------------------------
  launch kube-scheduler "$K8S_BIN/kube-scheduler" \
    --kubeconfig="$STATE/scheduler.kubeconfig" \
    --authentication-kubeconfig="$STATE/scheduler.kubeconfig" \
    --authorization-kubeconfig="$STATE/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port=0 \
    --leader-elect=false \
    --v=1

  # -- kwok (fake kubelet) -----------------------------------------------------------------------
  launch kwok "$KWOK_BIN/kwok" \
    --kubeconfig="$STATE/kwok.kubeconfig" \
    --config="$KWOK_STAGES/node-fast.yaml" --config="$KWOK_STAGES/pod-fast.yaml" \
    --manage-all-nodes=true \
    --cidr="$POD_CIDR" --node-ip=127.0.0.1 \
    --node-lease-duration-seconds=40

  # -- the fake node -----------------------------------------------------------------------------
  LAST_WAIT_FOR=kube-apiserver
  sed -e "s#@NODE@#$KWOK_NODE#g" -e "s#@POD_CIDR@#$POD_CIDR#g" "$HELPERS/kwok-node.yaml" | kubectl_cp apply -f - >/dev/null

  write_env "$etcd_url" "$api_port"

  wait_for "ServiceAccount default/default" kube-controller-manager \
    kubectl_cp get serviceaccount default -n default
  wait_for "node $KWOK_NODE Ready and untainted" kwok node_ready
  check_alive
  START_OK=1
  trap - EXIT INT TERM
  log "control plane up in $((SECONDS - T_START)) s: $CP_APISERVER_URL (env: $STATE/env)"
}

write_env() { # etcd_url api_port
  local f="$STATE/env" n v
  {
    echo "# written by scripts/control-plane.sh start; source it (KEY=VALUE lines, shell-quoted)"
    for kv in \
      "KUBECONFIG=$STATE/kubeconfig" \
      "CP_STATE_DIR=$STATE" \
      "CP_APISERVER_URL=$CP_APISERVER_URL" \
      "CP_APISERVER_PORT=$2" \
      "CP_ETCD_URL=$1" \
      "CP_CA_CERT=$PKI/ca.crt" \
      "CP_CA_KEY=$PKI/ca.key" \
      "CP_ADMIN_CERT=$PKI/admin.crt" \
      "CP_ADMIN_KEY=$PKI/admin.key" \
      "CP_BIN_DIR=$STATE/bin" \
      "CP_KUBECTL=$STATE/bin/kubectl" \
      "CP_LOG_DIR=$STATE/logs" \
      "CP_K8S_VERSION=$K8S_VERSION" \
      "CP_ETCD_VERSION=$ETCD_VERSION" \
      "CP_KWOK_VERSION=$KWOK_VERSION" \
      "CP_KWOK_NODE=$KWOK_NODE" \
      "CP_SERVICE_CIDR=$SERVICE_CIDR" \
      "CP_POD_CIDR=$POD_CIDR" \
      "CP_PID_ETCD=${PID_etcd:-}" \
      "CP_PID_KUBE_APISERVER=${PID_kube_apiserver:-}" \
      "CP_PID_KUBE_CONTROLLER_MANAGER=${PID_kube_controller_manager:-}" \
      "CP_PID_KUBE_SCHEDULER=${PID_kube_scheduler:-}" \
      "CP_PID_KWOK=${PID_kwok:-}"; do
      n=${kv%%=*} v=${kv#*=}
      printf 'export %s=%q\n' "$n" "$v"
    done
  } >"$f.tmp"
  mv "$f.tmp" "$f"
}

# Is PID still the process we started? (guards against PID reuse after a reboot/crash)
our_process() { # pid statedir
  local pid=$1 st=$2 cmdline
  [[ -r /proc/$pid/cmdline ]] || return 1
  cmdline=$({ tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null) || return 1
  [[ $cmdline == *"$st/"* ]]
}

stop_processes() { # statedir: TERM all recorded pids in reverse start order, KILL stragglers
  local st=$1 f pid name
  [[ -d "$st/pids" ]] || return 0
  local files=()
  mapfile -t files < <(find "$st/pids" -maxdepth 1 -name '*.pid' | sort -r)
  for f in "${files[@]}"; do
    pid=$(<"$f") name=$(basename "$f" .pid)
    if [[ $pid =~ ^[0-9]+$ ]] && our_process "$pid" "$st"; then
      log "stopping ${name#*-} (pid $pid)"
      kill -TERM "$pid" 2>/dev/null || true
      local i
      for ((i = 0; i < STOP_GRACE * 10; i++)); do
        our_process "$pid" "$st" || break
        sleep 0.1
      done
      if our_process "$pid" "$st"; then
        log "${name#*-} (pid $pid) still running ${STOP_GRACE}s after TERM; killing"
        kill -KILL "$pid" 2>/dev/null || true
      fi
      # reap it if it is our own child (start's failure path, `run`), so no zombie is left
      wait "$pid" 2>/dev/null || true
    fi
    rm -f "$f"
  done
}

cmd_stop() {
  [[ $# -eq 1 ]] || die "usage: $0 stop <state-dir>"
  [[ -n $1 && -d $1 ]] || return 0
  local st
  st=$(cd "$1" && pwd -P)
  [[ $st != / ]] || die "refusing to stop/remove /"
  stop_processes "$st"
  if [[ "${HAB_CP_KEEP_STATE:-}" == 1 ]]; then
    log "HAB_CP_KEEP_STATE=1: keeping $st"
  else
    # only remove what looks like our state dir (or an empty dir), never an arbitrary tree
    if [[ -d "$st/pids" || -f "$st/env" || -d "$st/pki" || -z "$(ls -A "$st")" ]]; then
      rm -rf "$st"
    else
      log "not removing $st: it does not look like a control-plane state dir"
    fi
  fi
}

cmd_status() {
  [[ $# -eq 1 ]] || die "usage: $0 status <state-dir>"
  local st f pid
  st=$(cd "$1" && pwd -P)
  for f in "$st"/pids/*.pid; do
    [[ -e $f ]] || continue
    pid=$(<"$f")
    if our_process "$pid" "$st"; then
      printf '%-26s %8s running rss=%s\n' "$(basename "$f" .pid)" "$pid" \
        "$(awk '/VmRSS/{print $2 $3}' "/proc/$pid/status")"
    else
      printf '%-26s %8s dead\n' "$(basename "$f" .pid)" "$pid"
    fi
  done
}

cmd_run() {
  local st=""
  while [[ $# -gt 0 ]]; do
    case $1 in
    --state-dir) st=$2; shift 2 ;;
    --) shift; break ;;
    *) break ;;
    esac
  done
  [[ $# -gt 0 ]] || die "usage: $0 run [--state-dir DIR] -- <cmd...>"
  cmd_build
  [[ -n $st ]] || st=$(mktemp -d "${TMPDIR:-/tmp}/hab-cp.XXXXXX")
  st=$(abs_dir "$st")
  # stop in every case: normal exit, error, INT/TERM; a SIGKILLed `run` is caught by the watchdog
  trap 'cmd_stop "$st"' EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  start_watchdog "$$" "$st"
  # started in this shell (not a subshell) so the servers are our children and get reaped by stop
  CP_RUN_MODE=1
  cmd_start "$st"
  # The command runs in its own session/process group (setsid), in the background so that this
  # shell can act on INT/TERM at once (bash runs traps only between foreground commands): on a
  # signal the whole command group gets TERM (KILL after STOP_GRACE), then the plane is stopped.
  # Its stdin is passed through explicitly (background jobs would get /dev/null).
  exec 3<&0
  (
    # shellcheck disable=SC1091
    . "$st/env"
    export PATH="$CP_BIN_DIR:$PATH"
    exec setsid "$@" <&3 3<&-
  ) &
  RUN_CMD_PID=$!
  printf '%s\n' "$RUN_CMD_PID" >"$st/run-cmd.pid"
  trap 'cmd_stop "$st"' EXIT # cmd_start replaced it while it ran
  trap 'log "interrupted; stopping the command and the plane"; kill_cmd_group "$RUN_CMD_PID"; exit 130' INT
  trap 'log "terminated; stopping the command and the plane"; kill_cmd_group "$RUN_CMD_PID"; exit 143' TERM
  local rc=0
  wait "$RUN_CMD_PID" || rc=$?
  rm -f "$st/run-cmd.pid"
  log "command exited with $rc; stopping"
  exit "$rc"
}

# kill_cmd_group PID: TERM the process group led by PID (run's command), KILL it after STOP_GRACE
kill_cmd_group() {
  local pid=$1 i
  [[ $pid =~ ^[0-9]+$ ]] || return 0
  # only if PID still leads its own session (setsid), i.e. is still the command we started
  local stat
  stat=$({ sed 's/^.*) //' "/proc/$pid/stat"; } 2>/dev/null) || return 0 # after "(comm) ": state ppid pgrp session
  [[ $(awk '{print $4}' <<<"$stat") == "$pid" ]] || return 0
  kill -TERM -- "-$pid" 2>/dev/null || true
  for ((i = 0; i < STOP_GRACE * 10; i++)); do
    group_alive "$pid" || return 0
    sleep 0.1
  done
  kill -KILL -- "-$pid" 2>/dev/null || true
}

group_alive() { # PGID: does the group still have a live (non-zombie) member?
  ps -eo pgid=,stat= | awk -v g="$1" '$1 == g && $2 !~ /^Z/ { found = 1 } END { exit !found }'
}

# A detached watchdog: if the owner process disappears without calling stop (SIGKILL, OOM),
# stop the plane anyway. Exits on its own once the state dir is gone.
start_watchdog() { # owner_pid statedir
  local owner=$1 st=$2
  (
    trap '' INT HUP
    exec </dev/null >/dev/null 2>&1
    while kill -0 "$owner" 2>/dev/null && [[ -d "$st" ]]; do sleep 1; done
    if [[ -d "$st" ]]; then
      # owner gone without stopping (e.g. SIGKILL): end `run`'s command group too, then the plane
      if [[ -f "$st/run-cmd.pid" ]]; then kill_cmd_group "$(<"$st/run-cmd.pid")"; fi
      HAB_CP_QUIET=1 "$SELF" stop "$st"
    fi
  ) &
  disown $! 2>/dev/null || true
}

cmd_restart_apiserver() {
  [[ $# -ge 1 && $# -le 2 ]] || die "usage: $0 restart-apiserver <state-dir> [down-seconds]"
  local st down=${2:-0} f pid newpid i
  st=$(cd "$1" && pwd -P)
  f=$(find "$st/pids" -maxdepth 1 -name '*-kube-apiserver.pid' | head -1)
  [[ -n $f ]] || die "no kube-apiserver recorded in $st/pids"
  pid=$(<"$f")
  our_process "$pid" "$st" || die "kube-apiserver (pid $pid) is not running"
  local cmdline=()
  mapfile -d '' -t cmdline <"/proc/$pid/cmdline"
  log "stopping kube-apiserver (pid $pid) for ${down}s"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < STOP_GRACE * 10; i++)); do
    our_process "$pid" "$st" || break
    sleep 0.1
  done
  if our_process "$pid" "$st"; then kill -KILL "$pid" 2>/dev/null || true; fi
  while our_process "$pid" "$st"; do sleep 0.1; done
  sleep "$down"
  log "starting kube-apiserver again"
  setsid "${cmdline[@]}" </dev/null >>"$st/logs/kube-apiserver.log" 2>&1 &
  newpid=$!
  printf '%s\n' "$newpid" >"$f"
  sed -i "s/^export CP_PID_KUBE_APISERVER=.*/export CP_PID_KUBE_APISERVER=$newpid/" "$st/env"
  # shellcheck disable=SC1091
  local url ca cert key
  url=$(. "$st/env" && echo "$CP_APISERVER_URL") ca=$st/pki/ca.crt cert=$st/pki/admin.crt key=$st/pki/admin.key
  for ((i = 0; i < START_TIMEOUT * 4; i++)); do
    if curl -fsS --max-time 5 --cacert "$ca" --cert "$cert" --key "$key" "$url/readyz" >/dev/null 2>&1; then
      log "kube-apiserver ready again (pid $newpid)"
      return 0
    fi
    our_process "$newpid" "$st" || die "kube-apiserver exited; see $st/logs/kube-apiserver.log"
    sleep 0.25
  done
  die "kube-apiserver not ready ${START_TIMEOUT}s after the restart"
}

# ----------------------------------------------------------------------------------------------
main() {
  local cmd=${1:-}
  [[ -n $cmd ]] || usage
  shift
  case $cmd in
  ensure-deps) ensure_deps ;;
  ensure-habitat-deps) ensure_habitat_deps ;;
  build) cmd_build "$@" ;;
  start)
    cmd_start "$@"
    if [[ -n "${HAB_CP_OWNER_PID:-}" ]]; then start_watchdog "$HAB_CP_OWNER_PID" "$STATE"; fi
    ;;
  stop) cmd_stop "$@" ;;
  status) cmd_status "$@" ;;
  free-ports) cmd_free_ports "$@" ;;
  run) cmd_run "$@" ;;
  restart-apiserver) cmd_restart_apiserver "$@" ;;
  -h | --help | help) usage ;;
  *) die "unknown subcommand '$cmd' (try --help)" ;;
  esac
}

# main and exit in one compound command: bash reads scripts lazily, so it never reads past this
# point even if the file is edited while a long `run` is going on.
{
  main "$@"
  exit
}
