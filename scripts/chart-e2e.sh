#!/usr/bin/env bash
# chart-e2e.sh: the chart against a real kube-apiserver. It installs webhook configurations that
# point at in-cluster Services nobody serves (every opted-in workload of the cluster would then be
# refused), so it wants a control plane of its own, which `scripts/test` gives it:
#
#   scripts/control-plane.sh run -- scripts/chart-e2e.sh
#
# Proves, in this order:
#  1. every object of every value set (charts/hab-bootstrap/ci/*-values.yaml and the defaults) is
#     accepted by server-side dry-run, the cert-manager and Prometheus Operator objects against the
#     real CRDs (from the Go module proxy), the pod templates under Pod Security "restricted";
#  2. least privilege: the webhook, running as the chart's ServiceAccount (impersonated) with only
#     the chart's RBAC, syncs its caches, injects the pods of an opted-in StatefulSet through the
#     chart's webhook configuration and records Events; `kubectl auth can-i` for what it must and
#     must not do (and the same for the certificate keeper); each denial of the chart's admission
#     policies (the sidecar token confined to the role label of its own pod, the webhook to its
#     ring-key Secrets) on the real API server;
#  3. a real install (kubectl apply --server-side of the render, in a restricted namespace): the
#     Deployments' pods are admitted (kwok runs them); `certs watch`, as the chart's certs
#     ServiceAccount with the chart's Deployment arguments, creates the Secret and the caBundle;
#  4. a second apply changes nothing (resourceVersions equal, `kubectl diff` empty); an upgrade with
#     changed values keeps the caBundle we own, and so does `kubectl apply -k webhook/`; an
#     unreachable webhook refuses opted-in StatefulSets only (fail closed), never the others;
#  5. helm install, upgrade (twice) and uninstall of a second release: the caBundle survives
#     upgrades, and uninstall leaves nothing (the certificate Secret is garbage-collected).
#
# Needs KUBECONFIG and kubectl on PATH (control-plane.sh run sets both), Go (helm and the CRDs),
# and the binary (HAB_BOOTSTRAP_BIN, default target/debug/hab-bootstrap; built if missing).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
CHART=charts/hab-bootstrap
NS=hab-bootstrap
CERT_MANAGER_VERSION=${HAB_CERT_MANAGER_VERSION:-v1.21.2}
PROM_OPERATOR_VERSION=${HAB_PROM_OPERATOR_VERSION:-v0.85.0}

: "${KUBECONFIG:?run under scripts/control-plane.sh run}"
command -v kubectl >/dev/null || { echo "kubectl not on PATH" >&2; exit 1; }
HELM=$(scripts/tools.sh helm)
BIN=${HAB_BOOTSTRAP_BIN:-$ROOT/target/debug/hab-bootstrap}
[[ -x $BIN ]] || cargo build --locked --bin hab-bootstrap >&2

WORK=$(mktemp -d "${TMPDIR:-/tmp}/chart-e2e.XXXXXX")
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  if [[ ${KEEP_WORK:-} == 1 ]]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

T0=$SECONDS
step() { printf '\n== [%3ds] %s\n' $((SECONDS - T0)) "$*" >&2; }
ok() { printf '   ok: %s\n' "$*" >&2; }
fail() { printf '   FAIL: %s\n' "$*" >&2; exit 1; }
render() { "$HELM" template "$@"; }

# until SECONDS CMD...: poll CMD (quietly) until it succeeds
until_ok() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    sleep 0.5
  done
}

# A copy of the admin kubeconfig that acts as a ServiceAccount (impersonation): RBAC decides as
# it would for the pod's token.
sa_kubeconfig() { # namespace name -> path
  local f="$WORK/kubeconfig-$1-$2"
  awk -v sa="system:serviceaccount:$1:$2" -v ns="$1" '
    { print }
    /^  user:$/ {
      print "    as: " sa
      print "    as-groups: [\"system:serviceaccounts\", \"system:serviceaccounts:" ns "\", \"system:authenticated\"]"
    }' "$KUBECONFIG" >"$f"
  printf '%s\n' "$f"
}

mwc_bundle() { # config webhook-index
  kubectl get mutatingwebhookconfiguration "$1" -o jsonpath="{.webhooks[$2].clientConfig.caBundle}"
}

both_bundles_set() { [[ -n $(mwc_bundle "$1" 0) && -n $(mwc_bundle "$1" 1) ]]; }

# ------------------------------------------------------------------------------------------------
step "CRDs of cert-manager $CERT_MANAGER_VERSION and the Prometheus Operator $PROM_OPERATOR_VERSION (Go module proxy)"
moddir() { (export GOFLAGS=-mod=mod GOTOOLCHAIN=local; go mod download -json "$1" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p'); }
CM=$(moddir "github.com/cert-manager/cert-manager@$CERT_MANAGER_VERSION")
PO=$(moddir "github.com/prometheus-operator/prometheus-operator@$PROM_OPERATOR_VERSION")
kubectl apply --server-side -f "$CM/deploy/crds/cert-manager.io_certificates.yaml" \
  -f "$CM/deploy/crds/cert-manager.io_issuers.yaml" -f "$CM/deploy/crds/cert-manager.io_clusterissuers.yaml" \
  -f "$PO/example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml" \
  -f "$PO/example/prometheus-operator-crd/monitoring.coreos.com_podmonitors.yaml" \
  -f "$PO/example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml" >/dev/null
kubectl wait --for=condition=Established --timeout=30s crd/certificates.cert-manager.io \
  crd/issuers.cert-manager.io crd/clusterissuers.cert-manager.io crd/servicemonitors.monitoring.coreos.com \
  crd/podmonitors.monitoring.coreos.com crd/prometheusrules.monitoring.coreos.com >/dev/null
ok "6 CRDs established"

# ------------------------------------------------------------------------------------------------
step "server-side dry-run of every value set, pod templates under Pod Security restricted"
kubectl apply --server-side -f webhook/namespace.yaml >/dev/null
# Warnings for workload templates that would break the profile: make them loud.
kubectl label --overwrite namespace "$NS" pod-security.kubernetes.io/warn=restricted >/dev/null
# The provided mode with a real pair, so that a real install of it would serve.
"$BIN" certs generate --out-dir "$WORK/provided" --dns "hab-bootstrap.$NS.svc" >/dev/null
kubectl -n "$NS" create secret tls my-webhook-tls --cert="$WORK/provided/tls.crt" --key="$WORK/provided/tls.key" \
  --dry-run=client -o yaml | kubectl apply --server-side -f - >/dev/null
for values in "" "$CHART"/ci/*-values.yaml; do
  args=() label=defaults
  if [[ -n $values ]]; then args=(-f "$values"); label=$(basename "$values"); fi
  [[ $label == provided-values.yaml ]] && args+=(--set "certificates.provided.caBundle=$(base64 -w0 "$WORK/provided/ca.crt")")
  render hab-bootstrap "$CHART" --namespace "$NS" "${args[@]}" >"$WORK/render.yaml"
  n=$(grep -c '^kind: ' "$WORK/render.yaml")
  if ! kubectl apply --server-side --dry-run=server -f "$WORK/render.yaml" >"$WORK/out" 2>"$WORK/err"; then
    cat "$WORK/err" >&2
    fail "dry-run refused ($label)"
  fi
  if grep -i 'warning' "$WORK/err" >&2; then fail "warnings from the API server ($label)"; fi
  [[ $(grep -c 'serverside-applied (server dry run)' "$WORK/out") == "$n" ]] || { cat "$WORK/out" >&2; fail "not all $n objects applied ($label)"; }
  ok "$label: $n objects accepted"
done

# ------------------------------------------------------------------------------------------------
step "least privilege: what the chart's ServiceAccounts may and may not do (kubectl auth can-i)"
render hab-bootstrap "$CHART" --namespace "$NS" >"$WORK/render.yaml"
# The ServiceAccounts and RBAC first (no webhook configuration yet: nothing is blocked meanwhile).
kubectl apply --server-side -f webhook/serviceaccount.yaml -f webhook/rbac.yaml -f webhook/admission-policies.yaml >/dev/null
awk '/^---$/{doc++} doc < 5' webhook/certs-self-managed.yaml | kubectl apply --server-side -f - >/dev/null # SA + RBAC only
CHECKS=0
can_as() { # expect(yes|no) user verb resource [flags...]
  local want=$1 user=$2 got
  shift 2
  got=$(kubectl auth can-i --as="$user" "$@" 2>/dev/null || true)
  [[ $got == "$want" ]] || fail "$user can-i $* = $got, want $want"
  CHECKS=$((CHECKS + 1))
}
can() { local want=$1 sa=$2; shift 2; can_as "$want" "system:serviceaccount:$NS:$sa" "$@"; }
W=hab-bootstrap C=hab-bootstrap-certs
can yes $W list statefulsets.apps -A
can yes $W watch statefulsets.apps -A
can yes $W get statefulsets.apps -n default
can yes $W watch services -A
# The pods labelled habitat/bootstrap=true, for the escape scan (RBAC cannot narrow by label).
can yes $W list pods -A
can yes $W watch pods -A
can yes $W create secrets -n default
can yes $W create events.events.k8s.io -n default
can yes $W patch events.events.k8s.io -n default
can yes $W create subjectaccessreviews.authorization.k8s.io
can yes $W create secrets -n default
can no $W get secrets -n "$NS"
can no $W list secrets -A
can no $W update secrets -n default
can no $W delete secrets -n default
can no $W get pods -n default
can no $W patch pods -n default
can no $W update statefulsets.apps -n default
can no $W patch mutatingwebhookconfigurations.admissionregistration.k8s.io/hab-bootstrap
can yes $C get secrets/hab-bootstrap-tls -n "$NS"
can yes $C update secrets/hab-bootstrap-tls -n "$NS"
can yes $C create secrets -n "$NS"
can no $C get secrets/other -n "$NS"
can no $C list secrets -n "$NS"
can no $C get secrets/hab-bootstrap-tls -n default
can yes $C patch mutatingwebhookconfigurations.admissionregistration.k8s.io/hab-bootstrap
can no $C patch mutatingwebhookconfigurations.admissionregistration.k8s.io/other
can no $C create mutatingwebhookconfigurations.admissionregistration.k8s.io
can no $C list pods -n "$NS"
S=some-habitat-sa
kubectl create namespace sa-proof >/dev/null
kubectl -n sa-proof create serviceaccount $S >/dev/null
kubectl -n sa-proof create rolebinding hab-bootstrap-sidecar --clusterrole=hab-bootstrap-sidecar --serviceaccount=sa-proof:$S >/dev/null
can_s() { local want=$1; shift; can_as "$want" "system:serviceaccount:sa-proof:$S" "$@"; }
can_s yes patch pods -n sa-proof
can_s yes watch pods -n sa-proof
can_s yes create events.events.k8s.io -n sa-proof
can_s no get pods -n sa-proof
can_s no get secrets -n sa-proof
can_s no patch pods -n default
can_s no delete pods -n sa-proof
can_s yes create events.events.k8s.io -n sa-proof
ok "webhook, certificate keeper and (bound per namespace) role sidecar: $CHECKS checks"

# ------------------------------------------------------------------------------------------------
step "the webhook as its ServiceAccount injects an opted-in StatefulSet through the chart's configuration"
"$BIN" certs generate --out-dir "$WORK/local-tls" --ip 127.0.0.1 >/dev/null
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null ||
  echo $((30000 + RANDOM % 20000)); }
WPORT=$(port) APORT=$(port)
KUBECONFIG=$(sa_kubeconfig "$NS" hab-bootstrap) "$BIN" webhook --log-format text \
  --listen "127.0.0.1:$WPORT" --admin-listen "127.0.0.1:$APORT" \
  --tls-cert "$WORK/local-tls/tls.crt" --tls-key "$WORK/local-tls/tls.key" --tls-ca "$WORK/local-tls/ca.crt" \
  --escape-scan-interval 1s --shutdown-delay 0s --drain-timeout 2s --cluster-domain cluster.local --sidecar-image hab-bootstrap:e2e \
  </dev/null >/dev/null 2>"$WORK/webhook.log" &
PIDS+=($!)
until_ok 30 curl -fsS "http://127.0.0.1:$APORT/readyz" || { cat "$WORK/webhook.log" >&2; fail "not ready as its ServiceAccount"; }
ok "caches synced with the chart's RBAC only"
# The chart's configuration (from webhook/, i.e. the chart's defaults), pointed at this process
# and scoped to namespace sa-proof.
ca=$(base64 -w0 "$WORK/local-tls/ca.crt")
awk -v port="$WPORT" -v ca="$ca" '
  /^  name: hab-bootstrap$/ && !named { print "  name: hab-bootstrap-sa-proof"; named = 1; next }
  /^      service:$/ { inservice = 1; next }
  inservice && /^        path: / { path = $2; next }
  inservice && /^        port: / { print "      url: https://127.0.0.1:" port path; print "      caBundle: " ca; inservice = 0; next }
  inservice { next }
  /operator: NotIn/ { sub("NotIn", "In"); print; getline; print "          values: [\"sa-proof\"]"; next }
  { print }' webhook/mutating-webhook-configuration.yaml >"$WORK/mwc-sa-proof.yaml"
grep -q 'url: https://127.0.0.1' "$WORK/mwc-sa-proof.yaml" || fail "could not rewrite the configuration"
kubectl apply --server-side -f "$WORK/mwc-sa-proof.yaml" >/dev/null
cat >"$WORK/sts.yaml" <<'EOF'
apiVersion: v1
kind: Service
metadata:
  name: redis
spec:
  clusterIP: None
  publishNotReadyAddresses: true
  selector: {app: redis}
  ports: [{name: gossip, port: 9638}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: redis
  annotations:
    habitat/bootstrap: "true"
spec:
  serviceName: redis
  replicas: 2
  selector: {matchLabels: {app: redis}}
  template:
    metadata: {labels: {app: redis}}
    spec:
      serviceAccountName: some-habitat-sa
      terminationGracePeriodSeconds: 1
      containers:
        - name: redis
          image: core/redis:e2e
          args: [sup, run, core/redis, --topology, leader]
          volumeMounts: [{name: hab-sup, mountPath: /hab/sup}]
      volumes: [{name: hab-sup, emptyDir: {}}]
EOF
awk '/^---$/{doc++; next} doc == 1' "$WORK/sts.yaml" >"$WORK/sts-only.yaml"
labelled() { [[ $(kubectl -n sa-proof create --dry-run=server -f "$WORK/sts-only.yaml" -o jsonpath='{.spec.template.metadata.labels.habitat/bootstrap}') == true ]]; }
until_ok 30 labelled || fail "the configuration never took effect"
kubectl -n sa-proof apply --server-side -f "$WORK/sts.yaml" >/dev/null
until_ok 60 kubectl -n sa-proof get pod redis-1 || fail "pod redis-1 never created"
args=$(kubectl -n sa-proof get pod redis-1 -o jsonpath='{.spec.containers[?(@.name=="redis")].args}')
[[ $args == *--peer-watch-file* ]] || fail "redis-1 has no --peer-watch-file: $args"
key=$(kubectl -n sa-proof get secret redis-habitat-ring -o jsonpath='{.data.ring-key}' | base64 -d | head -1)
[[ $key == SYM-SEC-1 ]] || fail "the webhook, as its ServiceAccount, created no ring key Secret"
status=$(kubectl -n sa-proof get pod redis-1 -o jsonpath='{.metadata.annotations.habitat/bootstrap-status}')
[[ -n $status ]] || fail "redis-1 has no status annotation"
until_ok 30 bash -c "kubectl -n sa-proof get events.events.k8s.io -o jsonpath='{.items[*].reportingController}' | grep -q hab-bootstrap" ||
  fail "no Event recorded by hab-bootstrap"
sleep 2 # two escape scans, as the ServiceAccount
if grep -i 'forbidden' "$WORK/webhook.log" >&2; then fail "the webhook was refused something"; fi
metrics=$(curl -fsS "http://127.0.0.1:$APORT/metrics")
for series in 'hab_bootstrap_certificate_expiry_timestamp_seconds{certificate="ca"}' 'hab_bootstrap_build_info{'; do
  [[ $metrics == *"$series"* ]] || fail "no $series in the webhook's metrics"
done
[[ $metrics != *'namespace="sa-proof"'* ]] || fail "the escape scan reports the injected StatefulSet"
ok "redis-1 injected ($args); its ring key Secret created; Events recorded; nothing forbidden in the webhook's log; nothing escaped"
kill -TERM "${PIDS[-1]}" && wait "${PIDS[-1]}" || true
unset 'PIDS[-1]'
kubectl delete mutatingwebhookconfiguration hab-bootstrap-sa-proof >/dev/null

# ------------------------------------------------------------------------------------------------
step "the chart's admission policies, each denial on the real API server"
# A PATCH as the sidecar's token bound to pod $1 (the user info extras of the pod-bound token the
# kubelet mounts), or bound to no pod when $1 is empty: straight to the API with the admin's
# client certificate and impersonation headers (kubectl patch would GET first, which the sidecar
# may not). Prints the HTTP status; the answer is in $WORK/answer.
kcfg() { kubectl config view --raw --minify -o jsonpath="{$1}"; }
ADMIN_CERT=$(kcfg .users[0].user.client-certificate) ADMIN_KEY=$(kcfg .users[0].user.client-key)
API_CA=$(kcfg .clusters[0].cluster.certificate-authority) API_URL=$(kcfg .clusters[0].cluster.server)
if [[ -z $API_CA ]]; then API_CA=$WORK/api-ca.crt; kcfg '.clusters[0].cluster.certificate-authority-data' | base64 -d >"$API_CA"; fi
[[ -n $ADMIN_CERT && -n $ADMIN_KEY ]] || fail "the admin kubeconfig has no client certificate files"
patch_as() { # bound-pod target merge-patch
  local h=(-H "Impersonate-User: system:serviceaccount:sa-proof:$S" -H "Impersonate-Group: system:serviceaccounts"
    -H "Impersonate-Group: system:serviceaccounts:sa-proof" -H "Impersonate-Group: system:authenticated")
  if [[ -n $1 ]]; then
    h+=(-H "Impersonate-Extra-authentication.kubernetes.io%2fpod-name: $1"
      -H "Impersonate-Extra-authentication.kubernetes.io%2fpod-uid: $(kubectl -n sa-proof get pod "$1" -o jsonpath='{.metadata.uid}')")
  fi
  curl -sS --cacert "$API_CA" --cert "$ADMIN_CERT" --key "$ADMIN_KEY" -X PATCH "${h[@]}" \
    -H 'Content-Type: application/merge-patch+json' --data "$3" -o "$WORK/answer" -w '%{http_code}' \
    "$API_URL/api/v1/namespaces/sa-proof/pods/$2"
}
POLICIES=0
allowed() { # bound-pod target patch
  [[ $(patch_as "$@") == 200 ]] || { cat "$WORK/answer" >&2; fail "refused: $2 $3 (token of ${1:-no pod})"; }
  POLICIES=$((POLICIES + 1))
}
denied() { # bound-pod target patch message
  local code
  code=$(patch_as "$1" "$2" "$3")
  [[ $code != 200 ]] || fail "accepted: $2 $3 (token of ${1:-no pod})"
  grep -q "hab-bootstrap-sidecar-own-pod" "$WORK/answer" && grep -qF "$4" "$WORK/answer" ||
    { cat "$WORK/answer" >&2; fail "refused for another reason ($code): $2 $3"; }
  POLICIES=$((POLICIES + 1))
}
# The policy takes effect a moment after it is created.
policy_active() { [[ $(patch_as redis-0 redis-1 '{"metadata":{"labels":{"role":"leader"}}}') == 403 ]]; }
until_ok 30 policy_active || { cat "$WORK/answer" >&2; fail "the sidecar policy never took effect"; }
allowed redis-0 redis-0 '{"metadata":{"labels":{"role":"leader"}}}'
allowed redis-0 redis-0 '{"metadata":{"labels":{"role":"follower"}}}'
allowed redis-0 redis-0 '{"metadata":{"labels":{"role":null}}}'
denied redis-0 redis-1 '{"metadata":{"labels":{"role":"leader"}}}' "may change only its own pod (redis-0), not redis-1"
denied "" redis-0 '{"metadata":{"labels":{"role":"leader"}}}' "its token is bound to no pod"
denied redis-0 redis-0 '{"metadata":{"labels":{"app":"stolen"}}}' "may change only the role label"
denied redis-0 redis-0 '{"metadata":{"labels":{"role":"boss"}}}' "may only be leader or follower"
denied redis-0 redis-0 '{"metadata":{"annotations":{"x":"y"}}}' "annotations, finalizers or owners"
denied redis-0 redis-0 '{"metadata":{"finalizers":["example.com/x"]}}' "annotations, finalizers or owners"
denied redis-0 redis-0 '{"spec":{"activeDeadlineSeconds":30}}' "may not change its pod's spec"
[[ -z $(kubectl -n sa-proof get pod redis-1 -o jsonpath='{.metadata.labels.role}') ]] || fail "redis-1 was relabelled"
# An identity without the sidecar role is not restricted (the webhook's own rollout, operators).
kubectl -n sa-proof label pod redis-1 other=ok >/dev/null || fail "the admin was restricted"
ring_secret() { # name type managed-by
  printf 'apiVersion: v1\nkind: Secret\nmetadata:\n  name: %s\n  labels: {app.kubernetes.io/managed-by: %s}\ntype: %s\nstringData: {k: v}\n' "$1" "$3" "$2"
}
WK=$(sa_kubeconfig "$NS" hab-bootstrap)
secret_denied() { # name type managed-by message
  if ring_secret "$1" "$2" "$3" | KUBECONFIG=$WK kubectl -n sa-proof create -f - >/dev/null 2>"$WORK/err"; then
    fail "the webhook created Secret $1 ($2, $3)"
  fi
  grep -q "hab-bootstrap-webhook-secrets" "$WORK/err" && grep -qF "$4" "$WORK/err" ||
    { cat "$WORK/err" >&2; fail "Secret $1 refused for another reason"; }
  POLICIES=$((POLICIES + 1))
}
until_ok 30 bash -c "! printf 'apiVersion: v1\nkind: Secret\nmetadata: {name: probe}\n' | KUBECONFIG=$WK kubectl -n sa-proof create --dry-run=server -f -" ||
  fail "the webhook Secret policy never took effect"
secret_denied other Opaque hab-bootstrap "named <statefulset>-habitat-ring"
secret_denied redis-habitat-ring example.com/other hab-bootstrap "type Opaque"
secret_denied redis-habitat-ring Opaque someone-else "managed-by=hab-bootstrap"
# (redis-habitat-ring exists already: the webhook created it for redis-1 above.)
ring_secret probe-habitat-ring Opaque hab-bootstrap | KUBECONFIG=$WK kubectl -n sa-proof create -f - >/dev/null 2>"$WORK/err" ||
  { cat "$WORK/err" >&2; fail "the webhook could not create its ring-key Secret"; }
KUBECONFIG=$WK kubectl -n sa-proof get secret redis-habitat-ring >/dev/null 2>&1 && fail "the webhook can read Secrets"
ok "$POLICIES policy checks: the sidecar token changes only the role label of its own pod; the webhook creates only ring-key Secrets"

kubectl delete namespace sa-proof --wait=false >/dev/null

# ------------------------------------------------------------------------------------------------
step "real install: kubectl apply --server-side of the default render into namespace $NS"
kubectl label --overwrite namespace "$NS" pod-security.kubernetes.io/enforce=restricted >/dev/null
kubectl apply --server-side -f "$WORK/render.yaml" >/dev/null
kubectl -n "$NS" rollout status deployment/hab-bootstrap deployment/hab-bootstrap-certs --timeout=90s >/dev/null ||
  fail "the Deployments did not roll out"
[[ $(kubectl -n "$NS" get pods -l app.kubernetes.io/component=webhook -o name | wc -l) == 2 ]] || fail "not 2 webhook pods"
ok "both Deployments rolled out, pods admitted under enforce=restricted"

step "certs watch as the chart's certs ServiceAccount, with the Deployment's own arguments"
read -r -a cargs <<<"$(kubectl -n "$NS" get deployment hab-bootstrap-certs -o jsonpath='{.spec.template.spec.containers[0].args[*]}')"
cargs=("${cargs[@]//\$(POD_NAMESPACE)/$NS}")
KUBECONFIG=$(sa_kubeconfig "$NS" hab-bootstrap-certs) HABITAT_BOOTSTRAP_LOG_FORMAT=text "$BIN" "${cargs[@]}" \
  </dev/null >/dev/null 2>"$WORK/certs.log" &
PIDS+=($!)
until_ok 30 both_bundles_set hab-bootstrap || { cat "$WORK/certs.log" >&2; fail "no caBundle"; }
until_ok 10 kubectl -n "$NS" get secret hab-bootstrap-tls || fail "no Secret"
kill -TERM "${PIDS[-1]}" && wait "${PIDS[-1]}" || fail "certs watch did not stop cleanly on SIGTERM"
unset 'PIDS[-1]'
if grep -iE 'forbidden|error' "$WORK/certs.log" >&2; then fail "certs watch logged errors"; fi
[[ $(mwc_bundle hab-bootstrap 0) == $(kubectl -n "$NS" get secret hab-bootstrap-tls -o jsonpath='{.data.ca\.crt}') ]] ||
  fail "caBundle is not the Secret's ca.crt"
owner=$(kubectl -n "$NS" get secret hab-bootstrap-tls -o jsonpath='{.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}')
[[ $owner == MutatingWebhookConfiguration/hab-bootstrap ]] || fail "Secret owner: $owner"
managers=$(kubectl get mutatingwebhookconfiguration hab-bootstrap --show-managed-fields -o jsonpath='{range .metadata.managedFields[*]}{.manager}/{.operation} {end}')
[[ $managers == *"hab-bootstrap-certs/Apply"* ]] || fail "managers: $managers"
ok "Secret (owned by the configuration) and caBundle written; managers: $managers"
kubectl create --dry-run=server -f certs/rotate-now-job.yaml >/dev/null 2>"$WORK/err" || { cat "$WORK/err" >&2; fail "certs/rotate-now-job.yaml refused"; }
if grep -i warning "$WORK/err" >&2; then fail "certs/rotate-now-job.yaml: warnings"; fi
ok "certs/rotate-now-job.yaml accepted in the restricted namespace"

# ------------------------------------------------------------------------------------------------
step "a second apply changes nothing; kubectl diff is empty"
versions() { kubectl get -f "$WORK/render.yaml" -o jsonpath='{range .items[*]}{.kind}/{.metadata.name}={.metadata.resourceVersion}{"\n"}{end}'; }
versions >"$WORK/rv-before"
secret_rv=$(kubectl -n "$NS" get secret hab-bootstrap-tls -o jsonpath='{.metadata.resourceVersion}')
kubectl apply --server-side -f "$WORK/render.yaml" >/dev/null
versions >"$WORK/rv-after"
diff "$WORK/rv-before" "$WORK/rv-after" >&2 || fail "the second apply changed objects"
kubectl diff --server-side -f "$WORK/render.yaml" >&2 || fail "kubectl diff is not empty"
both_bundles_set hab-bootstrap || fail "the caBundle is gone"
ok "$(wc -l <"$WORK/rv-after") objects unchanged (resourceVersions), caBundle kept"

step "upgrade with changed values keeps the caBundle; the Secret is not touched"
render hab-bootstrap "$CHART" --namespace "$NS" --set webhook.timeoutSeconds=7 --set replicas=3 >"$WORK/render2.yaml"
kubectl apply --server-side -f "$WORK/render2.yaml" >/dev/null
[[ $(kubectl get mutatingwebhookconfiguration hab-bootstrap -o jsonpath='{.webhooks[*].timeoutSeconds}') == "7 7" ]] ||
  fail "timeoutSeconds not upgraded"
both_bundles_set hab-bootstrap || fail "the upgrade removed the caBundle"
[[ $(kubectl -n "$NS" get secret hab-bootstrap-tls -o jsonpath='{.metadata.resourceVersion}') == "$secret_rv" ]] ||
  fail "the Secret changed"
ok "timeoutSeconds 7, caBundle kept, Secret untouched"

step "the plain manifests: kubectl apply --server-side -k webhook/ over the install, then kubectl diff"
kubectl apply --server-side -k webhook/ >/dev/null
kubectl diff --server-side -k webhook/ >&2 || fail "kubectl diff -k webhook/ is not empty after applying it"
both_bundles_set hab-bootstrap || fail "applying webhook/ removed the caBundle"
[[ $(kubectl get mutatingwebhookconfiguration hab-bootstrap -o jsonpath='{.webhooks[*].timeoutSeconds}') == "5 5" ]] ||
  fail "webhook/ did not set its own values"
ok "applied, no diff afterwards, caBundle kept"

step "nobody serves the installed webhook here: opted-in StatefulSets are refused, others are not"
kubectl create namespace elsewhere >/dev/null
sed -e 's/name: redis$/name: plain/' -e '/habitat\/bootstrap/d' -e '/annotations:/d' \
  -e 's/app: redis/app: plain/g' -e 's/serviceAccountName: some-habitat-sa/serviceAccountName: default/' \
  "$WORK/sts.yaml" >"$WORK/plain.yaml"
kubectl -n elsewhere apply --server-side -f "$WORK/plain.yaml" >/dev/null || fail "a plain StatefulSet was refused"
until_ok 60 kubectl -n elsewhere get pod plain-1 || fail "the plain StatefulSet's pods were not created"
if kubectl -n elsewhere apply --server-side -f "$WORK/sts.yaml" >/dev/null 2>"$WORK/refused"; then fail "an opted-in StatefulSet got through"; fi
grep -q 'failed calling webhook "statefulsets.hab-bootstrap.habitat.sh"' "$WORK/refused" || { cat "$WORK/refused" >&2; fail "refused for another reason"; }
ok "plain StatefulSet and its pods created; opted-in one refused: $(grep -o 'failed calling webhook "[^"]*"' "$WORK/refused" | head -1)"
kubectl delete namespace elsewhere --wait=false >/dev/null

# ------------------------------------------------------------------------------------------------
step "helm install / upgrade / uninstall (release hb2 in namespace hb2, selfManaged)"
"$HELM" install hb2 "$CHART" --namespace hb2 --create-namespace >"$WORK/install.txt"
grep -q 'habitat/bootstrap: "true"' "$WORK/install.txt" && grep -q 'clusterrole=hb2-hab-bootstrap-sidecar' "$WORK/install.txt" &&
  grep -q 'ValidatingAdmissionPolicy hb2-hab-bootstrap-sidecar-own-pod' "$WORK/install.txt" ||
  { cat "$WORK/install.txt" >&2; fail "NOTES.txt does not say how to opt in and bind the sidecar role"; }
M=hb2-hab-bootstrap
KUBECONFIG=$(sa_kubeconfig hb2 "$M-certs") HABITAT_BOOTSTRAP_LOG_FORMAT=text "$BIN" certs ensure --namespace hb2 \
  --secret "$M-tls" --service "$M" --webhook-config "$M" >/dev/null 2>"$WORK/hb2.log" || { cat "$WORK/hb2.log" >&2; fail "ensure as hb2's certs ServiceAccount"; }
both_bundles_set "$M" || fail "no caBundle after ensure"
bundle=$(mwc_bundle "$M" 0)
"$HELM" upgrade hb2 "$CHART" --namespace hb2 --reuse-values --set webhook.timeoutSeconds=8 >/dev/null
"$HELM" upgrade hb2 "$CHART" --namespace hb2 --reuse-values >/dev/null
[[ $(mwc_bundle "$M" 0) == "$bundle" && $(mwc_bundle "$M" 1) == "$bundle" ]] || fail "helm upgrade changed the caBundle"
[[ $(kubectl get mutatingwebhookconfiguration "$M" -o jsonpath='{.webhooks[0].timeoutSeconds}') == 8 ]] || fail "upgrade not applied"
ok "two upgrades (revision $("$HELM" -n hb2 history hb2 -o json | grep -o '"revision":[0-9]*' | tail -1 | cut -d: -f2)): caBundle kept, timeoutSeconds 8"
"$HELM" uninstall hb2 --namespace hb2 >/dev/null
until_ok 60 bash -c "! kubectl -n hb2 get secret $M-tls" || fail "the certificate Secret outlived the uninstall"
left=$(kubectl get clusterrole,clusterrolebinding,mutatingwebhookconfiguration -l app.kubernetes.io/instance=hb2 -o name)
left+=$(kubectl -n hb2 get all,secret,serviceaccount,role,rolebinding,pdb -l app.kubernetes.io/instance=hb2 -o name)
[[ -z $left ]] || fail "left after uninstall: $left"
ok "uninstall removed everything, the Secret garbage-collected with its webhook configuration"

step "chart e2e passed in $((SECONDS - T0)) s"
