//! End-to-end scenarios against a real control plane (scripts/test starts it). One test runs them
//! in order because they share one webhook process and its registration, and scenario 5 stops it.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Event as CoreEvent, Pod, Service};
use k8s_openapi::api::events::v1::Event;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use support::harness::*;
use support::objects;

const ROLLOUT: Duration = Duration::from_secs(90);

fn fqdn(sts: &str, ordinal: u32, service: &str, ns: &str) -> String {
    format!("{sts}-{ordinal}.{service}.{ns}.svc.{CLUSTER_DOMAIN}")
}

fn supervisor(pod: &Pod) -> &k8s_openapi::api::core::v1::Container {
    &pod.spec.as_ref().unwrap().containers[0]
}

fn peers(pod: &Pod) -> Vec<String> {
    let args = supervisor(pod).args.clone().unwrap_or_default();
    args.windows(2).filter(|w| w[0] == "--peer").map(|w| w[1].clone()).collect()
}

fn env(pod: &Pod, name: &str) -> Option<String> {
    supervisor(pod).env.iter().flatten().find(|e| e.name == name).and_then(|e| e.value.clone())
}

fn sidecars(pod: &Pod) -> usize {
    let spec = pod.spec.as_ref().unwrap();
    spec.init_containers.iter().flatten().chain(&spec.containers).filter(|c| c.name == "habitat-role").count()
}

fn is_ready(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    status.and_then(|s| s.pod_ip.as_ref()).is_some()
        && status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn assert_injected(pod: &Pod) {
    let name = pod.metadata.name.as_deref().unwrap();
    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
    assert!(annotations.contains_key("habitat/bootstrap-status"), "{name}: no status annotation");
    assert_eq!(sidecars(pod), 1, "{name}: one role sidecar");
    assert!(env(pod, "HABITAT_BOOTSTRAP_SERVICE_FQDN").is_some(), "{name}: identity env");
}

fn assert_untouched(pod: &Pod) {
    let name = pod.metadata.name.as_deref().unwrap();
    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
    assert!(!annotations.contains_key("habitat/bootstrap-status"), "{name} was injected");
    assert_eq!(sidecars(pod), 0, "{name} got a sidecar");
    assert!(peers(pod).is_empty(), "{name} got peers");
}

/// Waits until exactly `ordinals` exist for `sts`, all Ready (kwok plays the kubelet), and returns them.
async fn wait_ready(pods: &Api<Pod>, sts: &str, ordinals: &[u32]) -> BTreeMap<u32, Pod> {
    let want: Vec<String> = ordinals.iter().map(|o| format!("{sts}-{o}")).collect();
    eventually(ROLLOUT, &format!("pods {want:?} Ready"), || async {
        let list = pods.list(&ListParams::default().labels(&format!("app={sts}"))).await.ok()?;
        let live: Vec<&Pod> = list.items.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
        let mut names: Vec<String> = live.iter().map(|p| p.metadata.name.clone().unwrap()).collect();
        names.sort();
        let mut sorted_want = want.clone();
        sorted_want.sort();
        (names == sorted_want && live.iter().all(|p| is_ready(p))).then(|| {
            live.iter()
                .map(|p| {
                    let ordinal =
                        p.metadata.name.as_ref().unwrap().rsplit('-').next().unwrap().parse().unwrap();
                    (ordinal, (*p).clone())
                })
                .collect()
        })
    })
    .await
}

async fn create_statefulset(client: &Client, ns: &str, sts: &StatefulSet, service: &Service) {
    Api::<Service>::namespaced(client.clone(), ns).create(&PostParams::default(), service).await.unwrap();
    Api::<StatefulSet>::namespaced(client.clone(), ns).create(&PostParams::default(), sts).await.unwrap();
}

/// As `kubectl scale` does, through the scale subresource.
async fn scale(client: &Client, ns: &str, sts: &str, replicas: i32) {
    let api = Api::<StatefulSet>::namespaced(client.clone(), ns);
    api.patch_scale(sts, &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": replicas}})))
        .await
        .unwrap();
}

/// Deletes a pod and waits for the StatefulSet controller to replace it (a new uid).
async fn recreate(pods: &Api<Pod>, name: &str) -> Pod {
    let old = pods.get(name).await.unwrap().metadata.uid;
    pods.delete(name, &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await.unwrap();
    eventually(ROLLOUT, &format!("{name} recreated and Ready"), || async {
        let p = pods.get_opt(name).await.ok()??;
        (p.metadata.uid != old && p.metadata.deletion_timestamp.is_none() && is_ready(&p)).then_some(p)
    })
    .await
}

#[tokio::test]
#[ignore = "needs a control plane: run scripts/test"]
async fn e2e_scenarios() {
    if !enabled() {
        return;
    }
    let client = client().await;
    let mut webhook = start_webhook(&client).await;
    let started = Instant::now();
    s1_to_s3_rollout_recreate_scale(&client).await;
    eprintln!("scenarios 1-3 passed");
    s4_others_untouched(&client).await;
    eprintln!("scenario 4 passed");
    s5_webhook_down(&client, &mut webhook).await;
    eprintln!("scenario 5 passed");
    s6_namespace_domain_ordinals_service(&client).await;
    eprintln!("scenario 6 passed");
    s7_dry_run(&client).await;
    eprintln!("scenario 7 passed");
    s8_restricted_pod_security(&client).await;
    eprintln!("scenario 8 passed");
    s9_reinvocation(&client, &webhook).await;
    eprintln!("scenario 9 passed");
    report_admission_latency(&client, &webhook, started.elapsed()).await;
    // Other test binaries share this control plane: leave no webhook registered that nobody serves.
    Api::<k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration>::all(client.clone())
        .delete("hab-bootstrap", &DeleteParams::default())
        .await
        .unwrap();
    webhook.stop();
}

/// 1: a first ordered rollout; 2: pod 0 recreated while 1 and 2 live; 3: scale 3 → 5 → 1, and a
/// lone pod 0 recreated founds a new ring.
async fn s1_to_s3_rollout_recreate_scale(client: &Client) {
    let ns = namespace(client, "e2e-rollout").await;
    let sts = objects::statefulset("redis", "redis", 3, &[("habitat/bootstrap", "true")]);
    create_statefulset(client, &ns, &sts, &objects::headless_service("redis", "redis")).await;
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    let f = |o| fqdn("redis", o, "redis", &ns);

    let ready = wait_ready(&pods, "redis", &[0, 1, 2]).await;
    assert_eq!(peers(&ready[&0]), Vec::<String>::new());
    assert_eq!(peers(&ready[&1]), vec![f(0)]);
    assert_eq!(peers(&ready[&2]), vec![f(0), f(1)]);
    for (ordinal, pod) in &ready {
        assert_injected(pod);
        assert_eq!(env(pod, "HABITAT_BOOTSTRAP_ORDINAL"), Some(ordinal.to_string()));
        assert_eq!(
            env(pod, "HABITAT_BOOTSTRAP_SERVICE_FQDN"),
            Some(format!("redis.{ns}.svc.{CLUSTER_DOMAIN}"))
        );
        // The template label was stamped by the StatefulSet webhook.
        assert_eq!(pod.metadata.labels.as_ref().unwrap()["habitat/bootstrap"], "true");
    }
    let events = Api::<Event>::namespaced(client.clone(), &ns);
    let injected = eventually(Duration::from_secs(20), "Injected events", || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        let n = list.items.iter().filter(|e| e.reason.as_deref() == Some("Injected")).count();
        (n >= 3).then_some(list.items)
    })
    .await;
    assert!(injected.iter().any(|e| e.note.as_deref().unwrap_or_default().starts_with("redis-2: peers")));

    // 2: pod 0 comes back with a new identity and joins the live members.
    let pod0 = recreate(&pods, "redis-0").await;
    assert_eq!(peers(&pod0), vec![f(1), f(2)]);
    assert_injected(&pod0);

    // 3: scale up; the new pods peer every live member.
    scale(client, &ns, "redis", 5).await;
    let ready = wait_ready(&pods, "redis", &[0, 1, 2, 3, 4]).await;
    assert_eq!(peers(&ready[&3]), vec![f(0), f(1), f(2)]);
    assert_eq!(peers(&ready[&4]), vec![f(0), f(1), f(2), f(3)]);
    scale(client, &ns, "redis", 1).await;
    wait_ready(&pods, "redis", &[0]).await;
    let pod0 = recreate(&pods, "redis-0").await;
    assert_eq!(peers(&pod0), Vec::<String>::new(), "a lone pod 0 founds a new ring");
    assert_injected(&pod0);
}

/// 4: a StatefulSet without the annotation and a Deployment are left alone.
async fn s4_others_untouched(client: &Client) {
    let ns = namespace(client, "e2e-others").await;
    let sts = objects::statefulset("plain", "plain", 2, &[]);
    create_statefulset(client, &ns, &sts, &objects::headless_service("plain", "plain")).await;
    create_deployment(client, &ns, "web", 2).await;
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    for pod in wait_ready(&pods, "plain", &[0, 1]).await.values() {
        assert_untouched(pod);
        assert!(!pod.metadata.labels.as_ref().unwrap().contains_key("habitat/bootstrap"));
    }
    let web = eventually(ROLLOUT, "deployment pods", || async {
        let list = pods.list(&ListParams::default().labels("app=web")).await.ok()?;
        (list.items.len() == 2).then_some(list.items)
    })
    .await;
    web.iter().for_each(assert_untouched);
}

async fn create_deployment(client: &Client, ns: &str, name: &str, replicas: i32) {
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "web", "image": "nginx:e2e", "args": ["sup", "run", "core/nginx"]}]}
            }
        }
    }))
    .unwrap();
    Api::<Deployment>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
}

/// 5: with the webhook down, an opted-in StatefulSet's new pod is refused with the webhook's name
/// in the reason, every other pod is created; once it is back, the pod is created, injected.
async fn s5_webhook_down(client: &Client, webhook: &mut Webhook) {
    let ns = namespace(client, "e2e-down").await;
    let sts = objects::statefulset("redis", "redis", 1, &[("habitat/bootstrap", "true")]);
    create_statefulset(client, &ns, &sts, &objects::headless_service("redis", "redis")).await;
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    wait_ready(&pods, "redis", &[0]).await;

    webhook.stop();
    // Changing an opted-in, already labelled StatefulSet does not need us.
    let statefulsets = Api::<StatefulSet>::namespaced(client.clone(), &ns);
    let bump = json!({"spec": {"replicas": 2}});
    statefulsets.patch("redis", &PatchParams::default(), &Patch::Merge(bump)).await.unwrap();
    let plain = objects::statefulset("plain", "plain", 1, &[]);
    create_statefulset(client, &ns, &plain, &objects::headless_service("plain", "plain")).await;
    create_deployment(client, &ns, "web", 1).await;
    wait_ready(&pods, "plain", &[0]).await;
    eventually(ROLLOUT, "the deployment's pod", || async {
        let list = pods.list(&ListParams::default().labels("app=web")).await.ok()?;
        (list.items.len() == 1).then_some(())
    })
    .await;
    let events = Api::<CoreEvent>::namespaced(client.clone(), &ns);
    let refusal = eventually(ROLLOUT, "a FailedCreate event naming our webhook", || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items.into_iter().find_map(|e| {
            let message = e.message.unwrap_or_default();
            (e.reason.as_deref() == Some("FailedCreate") && message.contains("pods.hab-bootstrap.habitat.sh"))
                .then_some(message)
        })
    })
    .await;
    eprintln!("refusal while the webhook is down: {refusal}");
    assert!(pods.get_opt("redis-1").await.unwrap().is_none(), "redis-1 must not start without its peers");
    // An opted-in StatefulSet cannot even be created or changed meanwhile: that too is refused.
    let another = objects::statefulset("other", "other", 1, &[("habitat/bootstrap", "true")]);
    let err = statefulsets.create(&PostParams::default(), &another).await.unwrap_err();
    assert!(err.to_string().contains("statefulsets.hab-bootstrap.habitat.sh"), "{err}");

    webhook.start();
    let ready = wait_ready(&pods, "redis", &[0, 1]).await;
    assert_eq!(peers(&ready[&1]), vec![fqdn("redis", 0, "redis", &ns)]);
    assert_injected(&ready[&1]);
}

/// 6: another namespace, `spec.ordinals.start: 5`, a serviceName unlike the StatefulSet's name,
/// a gossip port of its own; the custom cluster domain is the webhook's setting in every scenario.
async fn s6_namespace_domain_ordinals_service(client: &Client) {
    let ns = namespace(client, "e2e-custom").await;
    let mut sts = objects::statefulset_json("ring", "members", 3, &[("habitat/bootstrap", "true")]);
    sts["spec"]["ordinals"] = json!({"start": 5});
    sts["spec"]["template"]["spec"]["containers"][0]["args"] =
        json!(["sup", "run", "core/redis", "--listen-gossip", "0.0.0.0:9700"]);
    let sts: StatefulSet = serde_json::from_value(sts).unwrap();
    create_statefulset(client, &ns, &sts, &objects::headless_service("members", "ring")).await;
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    let ready = wait_ready(&pods, "ring", &[5, 6, 7]).await;
    let f = |o| format!("{}:9700", fqdn("ring", o, "members", &ns));
    assert_eq!(peers(&ready[&5]), Vec::<String>::new());
    assert_eq!(peers(&ready[&6]), vec![f(5)]);
    assert_eq!(peers(&ready[&7]), vec![f(5), f(6)]);
    assert_eq!(env(&ready[&7], "HABITAT_BOOTSTRAP_POD_FQDN"), Some(fqdn("ring", 7, "members", &ns)));
}

/// 7: a server-side dry-run create is mutated and leaves no Event behind.
async fn s7_dry_run(client: &Client) {
    let ns = namespace(client, "e2e-dryrun").await;
    let sts = objects::statefulset("redis", "redis", 1, &[("habitat/bootstrap", "true")]);
    create_statefulset(client, &ns, &sts, &objects::headless_service("redis", "redis")).await;
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    let ready = wait_ready(&pods, "redis", &[0]).await;
    let stored = Api::<StatefulSet>::namespaced(client.clone(), &ns).get("redis").await.unwrap();

    // What the controller would send for ordinal 3, by hand, as a dry run.
    let mut pod: Value = serde_json::to_value(&ready[&0]).unwrap();
    for field in ["uid", "resourceVersion", "creationTimestamp", "managedFields", "annotations"] {
        pod["metadata"].as_object_mut().unwrap().remove(field);
    }
    pod.as_object_mut().unwrap().remove("status");
    pod["metadata"]["name"] = json!("redis-3");
    pod["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"] = json!("redis-3");
    pod["metadata"]["labels"]["apps.kubernetes.io/pod-index"] = json!("3");
    pod["metadata"]["ownerReferences"][0]["uid"] = json!(stored.metadata.uid);
    let spec: &mut Value = &mut pod["spec"];
    spec["hostname"] = json!("redis-3");
    spec.as_object_mut().unwrap().remove("initContainers");
    spec["containers"] =
        json!([{"name": "redis", "image": "core/redis:e2e", "args": ["sup", "run", "core/redis"]}]);
    let pod: Pod = serde_json::from_value(pod).unwrap();
    let created = pods.create(&PostParams { dry_run: true, ..Default::default() }, &pod).await.unwrap();
    assert_eq!(peers(&created), vec![fqdn("redis", 0, "redis", &ns)]);
    assert_injected(&created);
    assert!(pods.get_opt("redis-3").await.unwrap().is_none());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let events = Api::<Event>::namespaced(client.clone(), &ns).list(&ListParams::default()).await.unwrap();
    let about_3 =
        events.items.iter().filter(|e| e.note.as_deref().unwrap_or_default().contains("redis-3")).count();
    assert_eq!(about_3, 0, "a dry run leaves no Event");
}

/// 8: a namespace enforcing the "restricted" Pod Security profile admits our sidecar.
async fn s8_restricted_pod_security(client: &Client) {
    let labels = json!({"pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version": "latest"});
    let ns = namespace_with(client, "e2e-restricted", labels).await;
    let mut sts = objects::statefulset_json("secure", "secure", 2, &[("habitat/bootstrap", "true")]);
    sts["spec"]["template"]["spec"]["securityContext"] =
        json!({"runAsNonRoot": true, "runAsUser": 42, "seccompProfile": {"type": "RuntimeDefault"}});
    sts["spec"]["template"]["spec"]["containers"][0]["securityContext"] =
        json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}});
    let sts: StatefulSet = serde_json::from_value(sts).unwrap();
    create_statefulset(client, &ns, &sts, &objects::headless_service("secure", "secure")).await;
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    let ready = wait_ready(&pods, "secure", &[0, 1]).await;
    ready.values().for_each(assert_injected);
}

/// 9: another mutating webhook after ours changes the pod, so the API server calls ours again
/// (reinvocationPolicy: IfNeeded): the stored pod has each injected item exactly once.
async fn s9_reinvocation(client: &Client, webhook: &Webhook) {
    let ns = namespace(client, "e2e-reinvoke").await;
    let other = other_webhook::start(webhook).await;
    other_webhook::register(client, webhook, other.port, &ns).await;
    let sts = objects::statefulset("redis", "redis", 2, &[("habitat/bootstrap", "true")]);
    create_statefulset(client, &ns, &sts, &objects::headless_service("redis", "redis")).await;
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    let ready = wait_ready(&pods, "redis", &[0, 1]).await;
    let pod = &ready[&1];
    let names: Vec<&str> = supervisor(pod).env.iter().flatten().map(|e| e.name.as_str()).collect();
    assert_eq!(names.iter().filter(|n| **n == "OTHER_WEBHOOK").count(), 1, "{names:?}");
    for ours in ["HABITAT_BOOTSTRAP_PEERS", "HABITAT_BOOTSTRAP_ORDINAL", "HABITAT_BOOTSTRAP_POD_IP"] {
        assert_eq!(names.iter().filter(|n| **n == ours).count(), 1, "{ours} in {names:?}");
    }
    assert_eq!(peers(pod), vec![fqdn("redis", 0, "redis", &ns)]);
    assert_eq!(sidecars(pod), 1);
    assert!(other.calls() >= 2, "the other webhook was called for both pods");
    // Each pod was admitted twice by us, and the second time changed nothing.
    let unchanged = webhook
        .metrics()
        .lines()
        .find(|l| {
            l.starts_with("hab_bootstrap_admission_requests_total")
                && l.contains("outcome=\"unchanged\"")
                && l.contains("webhook=\"pods\"")
        })
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(unchanged >= 2, "reinvocations answered without a patch: {unchanged}");
    Api::<k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration>::all(client.clone())
        .delete("zz-other", &DeleteParams::default())
        .await
        .unwrap();
}

mod other_webhook {
    //! A second mutating webhook that adds an env var to the first container.
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::routing::post;
    use base64::Engine;
    use serde_json::{Value, json};

    use crate::support::harness::{Webhook, register as register_config};

    pub struct Other {
        pub port: u16,
        calls: Arc<AtomicUsize>,
    }

    impl Other {
        pub fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    pub async fn start(ours: &Webhook) -> Other {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&calls);
        let app = axum::Router::new().route(
            "/mutate",
            post(move |axum::Json(review): axum::Json<Value>| {
                counter.fetch_add(1, Ordering::SeqCst);
                // HAB_BOOTSTRAP_E2E_CAPTURE=<file> keeps a real review from the API server, the
                // source of tests/fixtures/admission/captured-*.json.
                if let Ok(path) = std::env::var("HAB_BOOTSTRAP_E2E_CAPTURE") {
                    let _ = std::fs::write(path, serde_json::to_string_pretty(&review).unwrap());
                }
                async move {
                    let has_env = review["request"]["object"]["spec"]["containers"][0]["env"].is_array();
                    let patch = if has_env {
                        json!([{"op": "add", "path": "/spec/containers/0/env/-", "value": {"name": "OTHER_WEBHOOK", "value": "1"}}])
                    } else {
                        json!([{"op": "add", "path": "/spec/containers/0/env", "value": [{"name": "OTHER_WEBHOOK", "value": "1"}]}])
                    };
                    let patch = base64::engine::general_purpose::STANDARD.encode(patch.to_string());
                    axum::Json(json!({
                        "apiVersion": "admission.k8s.io/v1",
                        "kind": "AdmissionReview",
                        "response": {"uid": review["request"]["uid"], "allowed": true, "patchType": "JSONPatch", "patch": patch}
                    }))
                }
            }),
        );
        let certs = ours.cert_reloader();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(hab_bootstrap::webhook::server::serve_tls(
            listener,
            certs.server_config(),
            app,
            std::future::pending(),
            std::time::Duration::from_secs(1),
        ));
        Other { port, calls }
    }

    /// Named to sort after ours, so it runs after us and our reinvocation follows its change.
    pub async fn register(client: &kube::Client, ours: &Webhook, port: u16, ns: &str) {
        let file = std::env::temp_dir().join(format!("zz-other-{}.yaml", std::process::id()));
        let config = format!(
            r#"apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata: {{name: zz-other}}
webhooks:
  - name: other.e2e.example
    admissionReviewVersions: ["v1"]
    sideEffects: None
    failurePolicy: Fail
    timeoutSeconds: 5
    rules: [{{operations: ["CREATE"], apiGroups: [""], apiVersions: ["v1"], resources: ["pods"]}}]
    namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: {ns}}}}}
    clientConfig: {{service: {{name: x, namespace: x, path: /mutate}}}}
"#
        );
        std::fs::write(&file, config).unwrap();
        register_config(client, &ours.ca_pem, port, "zz-other", &file).await;
        // Let the API server pick it up.
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
}

/// The API server's own measure of our webhook across the suite.
async fn report_admission_latency(client: &Client, webhook: &Webhook, suite: Duration) {
    let text = client.request_text(http::Request::get("/metrics").body(Vec::new()).unwrap()).await.unwrap();
    let ours: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.starts_with("apiserver_admission_webhook_admission_duration_seconds")
                && l.contains("hab-bootstrap.habitat.sh")
        })
        .collect();
    let mut report = format!("suite took {:.1} s\n", suite.as_secs_f64());
    for name in ["pods.hab-bootstrap.habitat.sh", "statefulsets.hab-bootstrap.habitat.sh"] {
        let lines: Vec<&&str> = ours
            .iter()
            .filter(|l| l.contains(&format!("name=\"{name}\"")) && l.contains("rejected=\"false\""))
            .collect();
        let value = |suffix: &str| -> f64 {
            lines
                .iter()
                .filter(|l| l.contains(suffix))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        let (sum, count) = (value("_sum{"), value("_count{"));
        let buckets: Vec<(f64, f64)> = lines
            .iter()
            .filter(|l| l.contains("_bucket{"))
            .filter_map(|l| {
                let le = l.split("le=\"").nth(1)?.split('"').next()?;
                Some((le.parse().unwrap_or(f64::INFINITY), l.rsplit(' ').next()?.parse().ok()?))
            })
            .collect();
        let quantile = |q: f64| {
            let mut by_le: BTreeMap<String, f64> = BTreeMap::new();
            for (le, n) in &buckets {
                *by_le.entry(format!("{le:020.6}")).or_default() += n;
            }
            by_le
                .iter()
                .find(|(_, n)| **n >= q * count)
                .map(|(le, _)| le.trim_start_matches('0').to_owned())
                .unwrap_or_default()
        };
        report += &format!(
            "apiserver_admission_webhook_admission_duration_seconds{{name={name}}}: {count} calls, mean {:.2} ms, p50 <= {} s, p99 <= {} s\n",
            if count > 0.0 { sum / count * 1000.0 } else { 0.0 },
            quantile(0.5),
            quantile(0.99)
        );
    }
    let metrics = webhook.metrics();
    let ours_requests: Vec<&str> =
        metrics.lines().filter(|l| l.starts_with("hab_bootstrap_admission_requests_total")).collect();
    report += &format!("webhook: {}\n", ours_requests.join("; "));
    eprintln!("{report}");
    if let Ok(path) = std::env::var("HAB_BOOTSTRAP_E2E_REPORT") {
        std::fs::write(path, report).unwrap();
    }
}
