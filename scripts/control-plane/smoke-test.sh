#!/usr/bin/env bash
# Smoke test of the loopback control plane started by scripts/control-plane.sh:
#
#   scripts/control-plane.sh run -- scripts/control-plane/smoke-test.sh
#
# Checks, with the built kubectl against the real API server and controllers:
#   - a 3-replica OrderedReady StatefulSet behind a headless Service: the StatefulSet controller
#     creates web-0, web-1, web-2 in order (each only after the previous one is Ready), the
#     scheduler binds them to the kwok node, kwok gives them pod IPs and marks them Ready;
#   - pods get the ServiceAccount token volume (ServiceAccount admission + default SA);
#   - deleting web-0 gets it recreated (new UID) and Ready again;
#   - a Deployment's pods appear and become available;
#   - a MutatingWebhookConfiguration with a url clientConfig (no server behind it) is accepted;
#   - deleting the namespace finishes (namespace controller + garbage collector + kwok).
# Needs the env of `control-plane.sh start` (KUBECONFIG, CP_CA_CERT, kubectl on PATH or CP_KUBECTL).
set -euo pipefail

KUBECTL=${CP_KUBECTL:-kubectl}
NS=cp-smoke-$$
TIMEOUT=${SMOKE_TIMEOUT:-60}
k() { "$KUBECTL" "$@"; }
say() { printf '[smoke %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
fail() {
  say "FAIL: $*"
  k get pods -n "$NS" -o wide >&2 || true
  k get events -n "$NS" --sort-by=.lastTimestamp >&2 || true
  exit 1
}

# until DESC CMD...: poll CMD (0.2 s) until it succeeds, at most TIMEOUT s
until_ok() {
  local desc=$1 deadline=$((SECONDS + TIMEOUT))
  shift
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || fail "timed out after ${TIMEOUT}s: $desc"
    sleep 0.2
  done
  say "ok: $desc"
}

pod_ready() { # name -> Ready=True and has a podIP
  local out
  out=$(k get pod -n "$NS" "$1" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status} {.status.podIP}' 2>/dev/null) || return 1
  [[ $out == "True "?* ]]
}

t0=$SECONDS
k create namespace "$NS" >/dev/null
# the namespace's default ServiceAccount is created by the serviceaccount controller
until_ok "default ServiceAccount in $NS" k get sa default -n "$NS"

# Record the order of pod events (watch order = etcd revision order) to check OrderedReady:
# web-N must be ADDED only after web-(N-1) was seen Ready.
events=$(mktemp)
k get pods -n "$NS" -w --output-watch-events \
  -o 'jsonpath={.type} {.object.metadata.name} {.object.status.conditions[?(@.type=="Ready")].status}{"\n"}' \
  >"$events" 2>&1 &
watch_pid=$!
trap 'kill "$watch_pid" 2>/dev/null || true; rm -f "$events"' EXIT
sleep 1 # let the watch start before the StatefulSet exists
k apply -n "$NS" -f - >/dev/null <<'EOF'
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  clusterIP: None
  selector: {app: web}
  ports: [{name: http, port: 80}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: web
spec:
  serviceName: web
  replicas: 3
  podManagementPolicy: OrderedReady
  selector: {matchLabels: {app: web}}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: registry.invalid/never-pulled:1.0
        ports: [{containerPort: 80, name: http}]
        readinessProbe: {tcpSocket: {port: 80}}
EOF

for i in 0 1 2; do until_ok "web-$i Ready with a pod IP" pod_ready "web-$i"; done
k get pods -n "$NS" -o wide >&2
sleep 0.5
kill "$watch_pid" 2>/dev/null || true
order=$(awk '
  $1 == "ADDED" { n = substr($2, 5) + 0; if (n > 0 && !ready[n - 1]) { print "web-" n " added before web-" n - 1 " was Ready"; bad = 1 } added[n] = 1 }
  $3 == "True" { ready[substr($2, 5) + 0] = 1 }
  END { for (i = 0; i < 3; i++) if (!added[i]) { print "no ADDED event for web-" i; bad = 1 } exit bad }' "$events") ||
  fail "OrderedReady: $order; events: $(tr '\n' ';' <"$events")"
say "ok: web-0, web-1, web-2 created in order, each after the previous was Ready ($(grep -c . "$events") watch events)"

node=$(k get pod -n "$NS" web-0 -o 'jsonpath={.spec.nodeName}')
[[ $node == "${CP_KWOK_NODE:-kwok-node-0}" ]] || fail "web-0 scheduled to '$node'"
vols=$(k get pod -n "$NS" web-0 -o 'jsonpath={.spec.volumes[*].name} {.spec.serviceAccountName}')
[[ $vols == *kube-api-access-*" default" ]] || fail "no ServiceAccount token volume on web-0: $vols"
say "ok: scheduled to $node, ServiceAccount token volume present ($vols)"

uid0=$(k get pod -n "$NS" web-0 -o 'jsonpath={.metadata.uid}')
k delete pod -n "$NS" web-0 --wait=false >/dev/null
recreated() {
  local uid
  uid=$(k get pod -n "$NS" web-0 -o 'jsonpath={.metadata.uid}' 2>/dev/null) || return 1
  [[ -n $uid && $uid != "$uid0" ]] && pod_ready web-0
}
until_ok "web-0 recreated (new UID) and Ready" recreated
sts_ready() { [[ $(k get sts -n "$NS" web -o 'jsonpath={.status.readyReplicas}') == 3 ]]; }
until_ok "StatefulSet readyReplicas=3" sts_ready

k create deployment -n "$NS" api --image=registry.invalid/api:1.0 --replicas=2 >/dev/null
until_ok "Deployment api available (2 pods)" k wait -n "$NS" deployment/api --for=condition=Available --timeout=1s
[[ $(k get pods -n "$NS" -l app=api --no-headers | wc -l) == 2 ]] || fail "Deployment pods != 2"

ca_b64=$(base64 -w0 <"${CP_CA_CERT:?CP_CA_CERT not set}")
k apply -f - >/dev/null <<EOF
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata:
  name: cp-smoke-$$
webhooks:
- name: smoke.hab-bootstrap.invalid
  admissionReviewVersions: [v1]
  sideEffects: None
  failurePolicy: Ignore
  timeoutSeconds: 2
  clientConfig:
    url: https://127.0.0.1:9/mutate
    caBundle: $ca_b64
  namespaceSelector:
    matchLabels: {cp-smoke-never: "true"}
  rules:
  - operations: [CREATE]
    apiGroups: [""]
    apiVersions: [v1]
    resources: [pods]
EOF
k get mutatingwebhookconfiguration "cp-smoke-$$" >/dev/null
k delete mutatingwebhookconfiguration "cp-smoke-$$" >/dev/null
say "ok: MutatingWebhookConfiguration with url clientConfig accepted"

k delete namespace "$NS" --wait=false >/dev/null
ns_gone() { ! k get namespace "$NS"; }
until_ok "namespace $NS deleted" ns_gone
say "all checks passed in $((SECONDS - t0)) s"
echo "7 passed, 0 failed"
