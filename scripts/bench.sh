#!/usr/bin/env bash
# Reproduces BENCHMARKS.md.
#
#   scripts/bench.sh criterion   the pure admission path (cargo bench --bench mutate)
#   scripts/bench.sh load        the real webhook against the ceiling server, over TLS, on a real
#                                control plane holding 1 000 StatefulSets and their pods
#   scripts/bench.sh soak        80% of the maximum throughput for 10 minutes: 0 errors, RSS flat
#   scripts/bench.sh load-soak   load then soak, on one control plane
#   scripts/bench.sh all         criterion, then load-soak
#   scripts/bench.sh floor [--replicas N] [--rounds R]
#                                what the API server records for a call of our webhook and of the
#                                ceiling server (a webhook that does nothing, or answers a one-op
#                                patch, or replays our patch), N (300) pods each, and each
#                                rollout's time against the same StatefulSet that no webhook is
#                                called for; R (2) rounds, the order reversed each round
#   scripts/bench.sh scale [--replicas N] [--update-rounds U] [--scale-rounds R] [--compare-bin PATH]
#                                big rings: a StatefulSet of N (1000) pods with the webhook and the
#                                same without it, through OrderedReady and Parallel rollouts, U (2)
#                                rolling updates and R (2) scales to 10 and back (the order
#                                alternating round by round), on a real control plane;
#                                the ignored test big_ring_figures in tests/e2e_big_rings/main.rs (the
#                                release webhook, started and registered as in the end-to-end tests);
#                                --compare-bin adds another build to its memory comparison, which
#                                runs HAB_BENCH_MEMORY_ROUNDS [2] times
#   scripts/bench.sh fanout [--replicas N] [--rounds R]
#                                the peer watch file's cost to the API server: a StatefulSet of N
#                                (100) pods and a sidecar process per pod, with --pod-index and
#                                without, through a rolling update, against a round without
#                                sidecars; the ignored test fanout::fanout_figures in
#                                tests/e2e_big_rings/fanout.rs (the debug build runs the webhook
#                                and the sidecars; HAB_BOOTSTRAP_BIN=<another build> runs that one);
#                                --rounds repeats the three rounds in turn R (1) times (medians)
#
# load and soak run under scripts/control-plane.sh (built once, cached) and install h2load
# (Debian's nghttp2-client) if it is missing. Everything listens on 127.0.0.1 only; every run is
# bounded in time; every server started here is stopped by its PID.
#
# Knobs (defaults in brackets):
#   HAB_BENCH_NAMESPACES [10]  HAB_BENCH_STATEFULSETS [1000] (spread over the namespaces, every
#   other one annotated habitat/bootstrap=true)  HAB_BENCH_REPLICAS [10] (pods per StatefulSet)
#   HAB_BENCH_POPULATE_TIMEOUT [2400] s to wait for the pods to be Running (then goes on with fewer)
#   HAB_BENCH_SECONDS [8] per load run  HAB_BENCH_ROUNDS [3] (ours and the ceiling alternate)
#   HAB_BENCH_SOAK_SECONDS [600]  HAB_BENCH_OUT [target/bench-results/<time>]
#   HAB_BENCH_SKIP_BUILD [unset]: 1 uses the binaries already built (CARGO_TARGET_DIR honoured)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

NAMESPACES=${HAB_BENCH_NAMESPACES:-10}
STATEFULSETS=${HAB_BENCH_STATEFULSETS:-1000}
REPLICAS=${HAB_BENCH_REPLICAS:-10}
POPULATE_TIMEOUT=${HAB_BENCH_POPULATE_TIMEOUT:-2400}
SECONDS_PER_RUN=${HAB_BENCH_SECONDS:-8}
ROUNDS=${HAB_BENCH_ROUNDS:-3}
SOAK_SECONDS=${HAB_BENCH_SOAK_SECONDS:-600}
OUT=${HAB_BENCH_OUT:-$ROOT/target/bench-results/$(date +%Y%m%d-%H%M%S)}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET_DIR/release/hab-bootstrap
CEILING=$TARGET_DIR/release/examples/ceiling
MODES=("h2-c1-m1:-c1 -m1" "h2-c1-m16:-c1 -m16" "h2-c1-m64:-c1 -m64" "h1-c16:--h1 -c16 -m1")

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[bench] ERROR: %s\n' "$*" >&2; exit 1; }

machine() {
  printf 'nproc=%s cpu="%s" mem=%s kernel=%s rustc="%s" h2load="%s"\n' "$(nproc)" \
    "$(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)" "$(free -h | awk '/Mem:/{print $2}')" \
    "$(uname -r)" "$(rustc --version)" "$(h2load --version 2>/dev/null | head -1)"
  printf 'load average at start: %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
}

ensure_h2load() {
  command -v h2load >/dev/null && return 0
  log "installing h2load (nghttp2-client)"
  local sudo=()
  [[ $(id -u) == 0 ]] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq nghttp2-client
}

build() {
  [[ ${HAB_BENCH_SKIP_BUILD:-} == 1 ]] && return 0
  log "building the webhook and the ceiling server (release)"
  cargo build --release --locked --bin hab-bootstrap --example ceiling >&2
}

# ---------------------------------------------------------------------------------------------
# Inside the control plane (KUBECONFIG and CP_* exported by scripts/control-plane.sh run)
# ---------------------------------------------------------------------------------------------
PIDS=()
stop_servers() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  PIDS=()
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

rss_kib() { awk '/^VmRSS/{print $2}' "/proc/$1/status"; }

populate() {
  local per_ns=$((STATEFULSETS / NAMESPACES)) ns i name manifest=$OUT/objects.yaml
  log "creating $STATEFULSETS StatefulSets x $REPLICAS pods and their headless Services in $NAMESPACES namespaces"
  : >"$manifest"
  for ((n = 0; n < NAMESPACES; n++)); do
    printf -- '---\napiVersion: v1\nkind: Namespace\nmetadata: {name: bench-%d}\n' "$n" >>"$manifest"
  done
  for ((n = 0; n < NAMESPACES; n++)); do
    ns=bench-$n
    for ((i = 0; i < per_ns; i++)); do
      name=s-$i
      local annotations='{}'
      ((i % 2)) || annotations='{habitat/bootstrap: "true"}'
      cat >>"$manifest" <<YAML
---
apiVersion: v1
kind: Service
metadata: {name: $name-headless, namespace: $ns}
spec: {clusterIP: None, publishNotReadyAddresses: true, selector: {app: $name}, ports: [{name: gossip, port: 9638}]}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: $name, namespace: $ns, annotations: $annotations}
spec:
  serviceName: $name-headless
  replicas: $REPLICAS
  podManagementPolicy: Parallel
  selector: {matchLabels: {app: $name}}
  template:
    metadata: {labels: {app: $name}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - {name: sup, image: "core/redis:bench", args: [sup, run, core/redis, --topology, leader]}
YAML
    done
  done
  # The control plane's one kwok node takes 110 pods: add fake nodes (kwok manages them all) for
  # the rest, 110 pods each.
  local nodes=$(((STATEFULSETS * REPLICAS + 109) / 110)) t0=$SECONDS
  for ((n = 1; n < nodes; n++)); do
    printf -- '---\n'
    sed -e "s#@NODE@#kwok-bench-$n#g" "$ROOT/scripts/control-plane/kwok-node.yaml"
  done | kubectl apply -f - >/dev/null
  log "$nodes fake nodes; creating the objects"
  kubectl create -f "$manifest" >/dev/null
  log "objects created in $((SECONDS - t0)) s; waiting for $((STATEFULSETS * REPLICAS)) pods to be Running"
  local want=$((STATEFULSETS * REPLICAS)) ready=0
  while ((SECONDS - t0 < POPULATE_TIMEOUT)); do
    # Pods, not the StatefulSets' readyReplicas: their status updates lag far behind.
    ready=$(kubectl get pods -A --field-selector=status.phase=Running --no-headers 2>/dev/null | wc -l)
    ((ready >= want)) && break
    log "  $ready/$want pods Running after $((SECONDS - t0)) s"
    sleep 20
  done
  POPULATE_SECONDS=$((SECONDS - t0))
  PODS_READY=$ready
  log "$ready/$want pods Running after $POPULATE_SECONDS s"
  local pods
  pods=$(kubectl get pods -A --no-headers 2>/dev/null | wc -l)
  printf 'statefulsets=%s services=%s nodes=%s pods=%s pods_ready=%s pods_wanted=%s populate_seconds=%s\n' \
    "$STATEFULSETS" "$STATEFULSETS" "$nodes" "$pods" "$ready" "$want" "$POPULATE_SECONDS" >>"$OUT/machine.txt"
}

start_servers() {
  "$BIN" certs generate --out-dir "$OUT/certs" --ip 127.0.0.1 >/dev/null
  OURS_PORT=$(free_port) ADMIN_PORT=$(free_port) CEILING_PORT=$(free_port)
  "$BIN" webhook --listen "127.0.0.1:$OURS_PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" \
    --tls-cert "$OUT/certs/tls.crt" --tls-key "$OUT/certs/tls.key" --shutdown-delay 0s \
    --sidecar-image hab-bootstrap:bench 2>"$OUT/webhook.log" &
  OURS_PID=$!
  PIDS+=("$OURS_PID")
  "$CEILING" "127.0.0.1:$CEILING_PORT" "$OUT/certs/tls.crt" "$OUT/certs/tls.key" 2>"$OUT/ceiling.log" &
  CEILING_PID=$!
  PIDS+=("$CEILING_PID")
  local i
  for ((i = 0; i < 600; i++)); do
    curl -fsS "http://127.0.0.1:$ADMIN_PORT/readyz" >/dev/null 2>&1 && break
    sleep 0.1
  done
  curl -fsS "http://127.0.0.1:$ADMIN_PORT/readyz" >/dev/null || die "the webhook is not ready; see $OUT/webhook.log"
  log "webhook pid $OURS_PID on :$OURS_PORT (admin :$ADMIN_PORT), ceiling pid $CEILING_PID on :$CEILING_PORT"
}

# Review bodies for pods of real StatefulSets: bench-0/s-0 is annotated (opted in: a live pod
# LIST per review), bench-0/s-1 is not (answered from the cache). dryRun: no Event per review.
make_bodies() {
  local uid0 uid1
  uid0=$(kubectl get statefulset s-0 -n bench-0 -o jsonpath='{.metadata.uid}')
  uid1=$(kubectl get statefulset s-1 -n bench-0 -o jsonpath='{.metadata.uid}')
  python3 - "$ROOT/benches/fixtures/review-opted-in.json" "$OUT" "$uid0" "$uid1" <<'PY'
import copy, json, sys
src, out, uid0, uid1 = sys.argv[1:]
base = json.load(open(src))
def body(sts, uid, opted_in):
    r = copy.deepcopy(base)
    req = r["request"]
    pod = req["object"]
    name = f"{sts}-5"
    req.update(namespace="bench-0", name=name, dryRun=True)
    m = pod["metadata"]
    m.update(name=name, namespace="bench-0")
    m["labels"] = {"app": sts, "apps.kubernetes.io/pod-index": "5", "controller-revision-hash": f"{sts}-6c9f8d7b5",
                   "statefulset.kubernetes.io/pod-name": name}
    if opted_in:
        m["labels"]["habitat/bootstrap"] = "true"
    m["ownerReferences"][0].update(name=sts, uid=uid)
    pod["spec"].update(hostname=name, subdomain=f"{sts}-headless")
    for v in pod["spec"]["volumes"]:
        if "persistentVolumeClaim" in v:
            v["persistentVolumeClaim"]["claimName"] = f"data-{name}"
    return json.dumps(r, separators=(",", ":"))
open(f"{out}/opted-in.json", "w").write(body("s-0", uid0, True))
open(f"{out}/not-ours.json", "w").write(body("s-1", uid1, False))
PY
  local b answer
  for b in opted-in not-ours; do
    answer=$(curl -fsS --cacert "$OUT/certs/ca.crt" -H 'content-type: application/json' \
      --data-binary "@$OUT/$b.json" "https://127.0.0.1:$OURS_PORT/mutate")
    printf '%s (%s bytes): %.300s\n' "$b" "$(wc -c <"$OUT/$b.json")" "$answer" >>"$OUT/machine.txt"
    case $b in
    opted-in) [[ $answer == *'"patch"'* ]] || die "the opted-in review was not injected: $answer" ;;
    not-ours) [[ $answer == *'"allowed":true'* && $answer != *'"patch"'* ]] || die "not-ours answer: $answer" ;;
    esac
  done
}

# h2load_run LABEL PORT BODY "FLAGS": one bounded run; a result line in $OUT/runs.tsv
h2load_run() {
  local label=$1 port=$2 body=$3 flags=$4 out="$OUT/runs/$1.txt" reqlog="$OUT/runs/$1.log"
  # shellcheck disable=SC2086 # flags are words
  h2load -D "$SECONDS_PER_RUN" --warm-up-time 1 -t 1 $flags -d "$OUT/$body.json" \
    -H 'content-type: application/json' --log-file "$reqlog" "https://127.0.0.1:$port/mutate" >"$out" 2>&1 || true
  local rss=""
  [[ $label == ours* ]] && rss=$(rss_kib "$OURS_PID")
  python3 - "$out" "$reqlog" "$label" "$rss" >>"$OUT/runs.tsv" <<'PY'
import re, sys
out, reqlog, label, rss = sys.argv[1:]
text = open(out).read()
rps = re.search(r"finished in [^,]+, ([\d.]+) req/s", text)
req = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout", text)
codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
lat = sorted(int(l.split("\t")[2]) for l in open(reqlog) if l.count("\t") >= 2)
pct = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] / 1000 if lat else float("nan")
non2xx = sum(int(codes.group(i)) for i in (2, 3, 4)) if codes else -1
print("\t".join(map(str, [label, rps.group(1) if rps else "nan", pct(0.50), pct(0.99),
    req.group(4) if req else 0, (int(req.group(5)) + int(req.group(6)) + int(req.group(7))) if req else -1, non2xx, rss])))
PY
  rm -f "$reqlog"
  tail -n1 "$OUT/runs.tsv" >&2
}

requests_served() {
  curl -fsS "http://127.0.0.1:$ADMIN_PORT/metrics" | awk '/^hab_bootstrap_admission_requests_total/{s+=$2} END{print s+0}'
}

load() {
  mkdir -p "$OUT/runs"
  printf 'label\treq_per_s\tp50_ms\tp99_ms\tsucceeded\tfailed\tnon_2xx\trss_kib\n' >"$OUT/runs.tsv"
  sleep 5
  printf 'rss_idle_kib=%s\n' "$(rss_kib "$OURS_PID")" >>"$OUT/machine.txt"
  local round mode label flags body first second
  for ((round = 1; round <= ROUNDS; round++)); do
    for mode in "${MODES[@]}"; do
      label=${mode%%:*} flags=${mode#*:}
      for body in not-ours opted-in; do
        # Alternate who goes first, so that drift on the shared machine hits both alike.
        if ((round % 2)); then first=ours second=ceiling; else first=ceiling second=ours; fi
        for who in $first $second; do
          local port=$OURS_PORT
          [[ $who == ceiling ]] && port=$CEILING_PORT
          h2load_run "$who.$label.$body.r$round" "$port" "$body" "$flags"
        done
      done
    done
  done
  # Issue 2: resident memory after 100 000 requests.
  local served
  served=$(requests_served)
  if ((served < 100000)); then
    log "topping up to 100 000 requests ($served served)"
    h2load -n $((100000 - served)) -c1 -m64 -t1 -d "$OUT/not-ours.json" -H 'content-type: application/json' \
      "https://127.0.0.1:$OURS_PORT/mutate" >"$OUT/runs/top-up.txt" 2>&1 || true
  fi
  sleep 5
  printf 'requests_served=%s rss_after_kib=%s\n' "$(requests_served)" "$(rss_kib "$OURS_PID")" >>"$OUT/machine.txt"
  summarize
}

summarize() {
  python3 - "$OUT" <<'PY' | tee "$OUT/summary.md"
import collections, statistics, sys
out = sys.argv[1]
rows = [l.rstrip("\n").split("\t") for l in open(f"{out}/runs.tsv")][1:]
runs = collections.defaultdict(list)
for label, rps, p50, p99, ok, failed, non2xx, rss in rows:
    who, mode, body, _ = label.split(".")
    runs[(mode, body, who)].append((float(rps), float(p50), float(p99), int(failed), int(non2xx), rss))
med = lambda xs: statistics.median(xs)
print("| mode | body | ours req/s | ceiling req/s | ratio | ours p50 ms | ceiling p50 ms | ratio | ours p99 ms | ceiling p99 ms | ratio | failed |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for mode in ["h2-c1-m1", "h2-c1-m16", "h2-c1-m64", "h1-c16"]:
    for body in ["not-ours", "opted-in"]:
        o, c = runs.get((mode, body, "ours")), runs.get((mode, body, "ceiling"))
        if not o or not c:
            continue
        m = lambda rs, i: med([r[i] for r in rs])
        failed = sum(r[3] + r[4] for r in o + c)
        print(f"| {mode} | {body} | {m(o,0):.0f} | {m(c,0):.0f} | {m(o,0)/m(c,0):.2f} | {m(o,1):.2f} | {m(c,1):.2f} | "
              f"{m(o,1)/m(c,1):.2f} | {m(o,2):.2f} | {m(c,2):.2f} | {m(o,2)/m(c,2):.2f} | {failed} |")
rss = [int(r[-1]) for r in rows if r[-1]]
if rss:
    print(f"\nours RSS during the runs: max {max(rss)/1024:.1f} MiB, median {med(rss)/1024:.1f} MiB")
print("\n" + open(f"{out}/machine.txt").read())
PY
}

# 80% of the maximum throughput of the cache-only path, with a trickle of opted-in reviews (live
# pod LIST each) beside it. Pass: no failed request, no non-2xx, RSS at the end within 4 MiB and
# 10% of RSS after the first minute.
soak() {
  mkdir -p "$OUT/runs"
  log "soak: measuring the maximum (not-ours, HTTP/2, 64 streams, 10 s)"
  h2load -D 10 --warm-up-time 1 -c1 -m64 -t1 -d "$OUT/not-ours.json" -H 'content-type: application/json' \
    "https://127.0.0.1:$OURS_PORT/mutate" >"$OUT/runs/soak-max.txt" 2>&1 || true
  local max rate
  max=$(sed -n 's/.*finished in [^,]*, \([0-9.]*\) req\/s.*/\1/p' "$OUT/runs/soak-max.txt")
  rate=$(python3 -c "print(int(float('$max') * 0.8))")
  log "soak: max $max req/s; $rate req/s for $SOAK_SECONDS s, plus 20 opted-in req/s"
  (
    while kill -0 "$OURS_PID" 2>/dev/null; do
      printf '%s\t%s\n' "$SECONDS" "$(rss_kib "$OURS_PID")"
      sleep 5
    done
  ) >"$OUT/soak-rss.tsv" &
  local sampler=$!
  h2load -D "$SOAK_SECONDS" -c1 -m64 -t1 --rps "$rate" -d "$OUT/not-ours.json" -H 'content-type: application/json' \
    "https://127.0.0.1:$OURS_PORT/mutate" >"$OUT/runs/soak-not-ours.txt" 2>&1 &
  local a=$!
  h2load -D "$SOAK_SECONDS" -c1 -m4 -t1 --rps 20 -d "$OUT/opted-in.json" -H 'content-type: application/json' \
    "https://127.0.0.1:$OURS_PORT/mutate" >"$OUT/runs/soak-opted-in.txt" 2>&1 &
  local b=$!
  wait "$a" || true
  wait "$b" || true
  kill "$sampler" 2>/dev/null || true
  wait "$sampler" 2>/dev/null || true
  python3 - "$OUT" "$max" "$rate" <<'PY' | tee -a "$OUT/soak.md"
import re, statistics, sys
out, mx, rate = sys.argv[1:]
ok = True
for name in ["soak-not-ours", "soak-opted-in"]:
    text = open(f"{out}/runs/{name}.txt").read()
    req = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout", text)
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    rps = re.search(r"finished in ([^,]+), ([\d.]+) req/s", text)
    bad = int(req.group(5)) + int(req.group(6)) + int(req.group(7)) + sum(int(codes.group(i)) for i in (2, 3, 4))
    ok &= bad == 0 and int(req.group(4)) > 0
    print(f"{name}: {req.group(4)} succeeded, {bad} failed or non-2xx, {rps.group(2)} req/s over {rps.group(1)}")
rss = [int(l.split()[1]) for l in open(f"{out}/soak-rss.tsv") if l.split()[1:]]
early, late = statistics.median(rss[12:24]), statistics.median(rss[-12:])
flat = late - early <= 4096 and late <= early * 1.10
ok &= flat
print(f"max {mx} req/s, soak at {rate} req/s; RSS after the first minute {early/1024:.1f} MiB, at the end {late/1024:.1f} MiB, max {max(rss)/1024:.1f} MiB: {'flat' if flat else 'GROWING'}")
print("soak:", "PASS" if ok else "FAIL")
sys.exit(0 if ok else 1)
PY
}

inner() { # what: load | soak | all
  mkdir -p "$OUT"
  machine >"$OUT/machine.txt"
  trap stop_servers EXIT
  populate
  start_servers
  make_bodies
  case $1 in
  load) load ;;
  soak) soak ;;
  load-soak | all) load && soak ;;
  esac
}

# Big rings: the measurement is a test (tests/e2e_big_rings/main.rs) so that it starts and registers the
# webhook as the end-to-end tests do; the webhook is the release build.
# Runs the ignored test $1 of tests/e2e_big_rings on a control plane of its own, with the
# environment given after it (NAME=value ...); the test writes its report to $OUT/$2.
big_rings_test() {
  local test=$1 report=$2
  shift 2
  # The build first, so the control plane does not idle through a compile.
  cargo test --locked --test e2e_big_rings --no-run >&2
  scripts/control-plane.sh build
  mkdir -p "$OUT"
  machine >"$OUT/machine.txt"
  log "results in $OUT; $*"
  env HAB_BENCH_OUT="$OUT" HAB_BOOTSTRAP_E2E_REQUIRED=1 "$@" scripts/control-plane.sh run -- \
    cargo test --locked --test e2e_big_rings -- --ignored --exact "$test" --nocapture
  printf 'load average at the end: %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/machine.txt"
  cat "$OUT/machine.txt" >>"$OUT/$report"
  cat "$OUT/$report"
}

scale() {
  local replicas=1000 update_rounds=2 scale_rounds=2 compare=()
  while (($#)); do
    case $1 in
    --replicas) replicas=$2; shift 2 ;;
    --update-rounds) update_rounds=$2; shift 2 ;;
    --scale-rounds) scale_rounds=$2; shift 2 ;;
    --compare-bin) compare=("HAB_BENCH_COMPARE_BIN=$(realpath "$2")"); shift 2 ;;
    *) die "scale: unknown argument $1" ;;
    esac
  done
  [[ ${HAB_BENCH_SKIP_BUILD:-} == 1 ]] || cargo build --release --locked --bin hab-bootstrap >&2
  big_rings_test big_ring_figures big-rings.md HAB_BENCH_REPLICAS="$replicas" HAB_BOOTSTRAP_BIN="$BIN" \
    HAB_BENCH_UPDATE_ROUNDS="$update_rounds" HAB_BENCH_SCALE_ROUNDS="$scale_rounds" "${compare[@]}"
}

# The peer watch file's fan-out: the sidecars are processes the test starts from the stored pods.
fanout() {
  local replicas=100 rounds=1
  while (($#)); do
    case $1 in
    --replicas) replicas=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    *) die "fanout: unknown argument $1" ;;
    esac
  done
  big_rings_test fanout::fanout_figures fanout.md HAB_BENCH_REPLICAS="$replicas" \
    HAB_BENCH_FANOUT_ROUNDS="$rounds"
}

# The floor under the API server's admission figures: the test admission_floor_figures in
# tests/e2e_big_rings/floor.rs (our webhook and the ceiling example, each the webhook of one
# StatefulSet's pods, rolled out in turn).
floor() {
  local replicas=300 rounds=2
  while (($#)); do
    case $1 in
    --replicas) replicas=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    *) die "floor: unknown argument $1" ;;
    esac
  done
  build
  big_rings_test floor::admission_floor_figures admission-floor.md HAB_BENCH_REPLICAS="$replicas" \
    HAB_BENCH_FLOOR_ROUNDS="$rounds" HAB_BENCH_CEILING_BIN="$CEILING" HAB_BOOTSTRAP_BIN="$BIN"
}

case ${1:-} in
criterion) cargo bench --locked --bench mutate ;;
scale) shift; scale "$@" ;;
fanout) shift; fanout "$@" ;;
floor) shift; floor "$@" ;;
load | soak | load-soak | all)
  ensure_h2load
  [[ $1 == all ]] && cargo bench --locked --bench mutate
  build
  mkdir -p "$OUT"
  log "results in $OUT"
  HAB_BENCH_OUT=$OUT exec scripts/control-plane.sh run -- "$0" _inner "$1"
  ;;
_inner) inner "$2" ;;
*) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
