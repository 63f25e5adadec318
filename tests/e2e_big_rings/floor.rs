//! What the API server records for a webhook that does nothing: `admission_floor_figures`, run by
//! `scripts/bench.sh floor`. The `ceiling` example (the webhook's own TLS and HTTP stack, a handler
//! that only parses the review and allows it) is registered for the pods of a StatefulSet that is
//! not ours, next to our webhook for an opted-in one of the same size; both roll out in turn, in
//! both orders, and the API server's `apiserver_admission_webhook_admission_duration_seconds` is
//! read for each. What the API server adds to any webhook call on this machine is the floor under
//! our figure.
//!
//! Two more StatefulSets tell what applying a patch costs the API server, inside the call it
//! measures: the ceiling answers one with a one-operation patch, the other with our own patch
//! replayed (the one our webhook answered for a pod of the plain floor StatefulSet, renamed as one
//! of ours, so that every path of it applies).
//!
//! A fifth StatefulSet of the same template is called by no webhook: each rollout's time is told
//! against it (the median of the rounds), so that what a rollout loses to the API server's
//! handling of a patch is told apart from what it loses to the server that computes it.

use std::process::{Child, Command, Stdio};

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use super::*;

const FLOOR_WEBHOOK: &str = "floor.hab-bootstrap.test";
const FLOOR_LABEL: &str = "hab-bench/floor";

/// The floor's StatefulSets: name, the value of their `FLOOR_LABEL`, the ceiling's path for it
/// (examples/ceiling.rs) and what it answers.
const FLOORS: [(&str, &str, &str); 3] = [
    ("floor", POD_PATH, "does nothing"),
    ("floor-one-op", "/mutate-pod-one-op", "a one-op patch"),
    ("floor-replay", "/mutate-pod-replay", "our patch, replayed"),
];
const POD_PATH: &str = hab_bootstrap::webhook::server::routes::POD_PATH;

/// The ceiling server, stopped when dropped.
struct Ceiling(Child);

impl Drop for Ceiling {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What the webhook called for the pods of StatefulSet `name` answers.
fn answers(name: &str) -> &'static str {
    match FLOORS.iter().find(|(floor, ..)| *floor == name) {
        Some((_, _, answers)) => answers,
        None if name == "with" => "our patch",
        None => "not called",
    }
}

/// The name the API server gives the webhook of floor StatefulSet `name`.
fn floor_webhook(name: &str) -> String {
    format!("{name}.{FLOOR_WEBHOOK}")
}

/// The floor's configuration: every pod CREATE labelled for one of `FLOORS` goes to the ceiling
/// server's path for it.
fn floor_configuration(port: u16, ca_pem: &str) -> MutatingWebhookConfiguration {
    use base64::Engine;
    let webhooks: Vec<Value> = FLOORS
        .iter()
        .map(|(name, path, _)| {
            json!({
                "name": floor_webhook(name),
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "failurePolicy": "Fail",
                "timeoutSeconds": 5,
                "clientConfig": {
                    "url": format!("https://127.0.0.1:{port}{path}"),
                    "caBundle": base64::engine::general_purpose::STANDARD.encode(ca_pem),
                },
                "objectSelector": {"matchLabels": {FLOOR_LABEL: name}},
                "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}],
            })
        })
        .collect();
    serde_json::from_value(json!({"metadata": {"name": FLOOR_WEBHOOK}, "webhooks": webhooks})).unwrap()
}

/// The patch our webhook answers for pod 0 of the plain floor StatefulSet, asked as if it were
/// pod 0 of the opted-in `with` (same template; names and labels changed): the ceiling replays it.
async fn our_patch_for_a_floor_pod(client: &Client, ns: &str, webhook: &Webhook) -> String {
    use base64::Engine;
    use http_body_util::{BodyExt, Full};
    let mut pod =
        serde_json::to_value(Api::<Pod>::namespaced(client.clone(), ns).get("floor-0").await.unwrap())
            .unwrap();
    // As the API server sends it: before it is stored, so without what storing adds.
    let meta = pod["metadata"].as_object_mut().unwrap();
    for stored in ["uid", "resourceVersion", "creationTimestamp", "managedFields"] {
        meta.remove(stored);
    }
    pod.as_object_mut().unwrap().remove("status");
    let text =
        serde_json::to_string(&pod).unwrap().replace("floor-0", "with-0").replace("\"floor\"", "\"with\"");
    let mut pod: Value = serde_json::from_str(&text).unwrap();
    let with = Api::<StatefulSet>::namespaced(client.clone(), ns).get("with").await.unwrap();
    pod["metadata"]["ownerReferences"][0]["uid"] = json!(with.metadata.uid);
    let labels = pod["metadata"]["labels"].as_object_mut().unwrap();
    labels.remove(FLOOR_LABEL);
    labels.insert("habitat/bootstrap".into(), json!("true"));
    let review = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "floor-replay", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "name": "with-0", "namespace": ns, "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:statefulset-controller"},
            "object": pod,
        },
    });
    let request = hyper::Request::post(format!("https://127.0.0.1:{}{POD_PATH}", webhook.port))
        .header("content-type", "application/json")
        .body(Full::new(serde_json::to_vec(&review).unwrap().into()))
        .unwrap();
    let response = support::tls_client::client(&webhook.ca_pem, false).request(request).await.unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let answer: Value = serde_json::from_slice(&body).unwrap();
    let patch = answer["response"]["patch"].as_str().unwrap_or_else(|| panic!("no patch in {answer}"));
    let patch = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(patch).unwrap()).unwrap();
    // The token volume's name is random per pod: the ceiling puts each pod's own in its place.
    let token = pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["name"].as_str())
        .find(|name| name.starts_with("kube-api-access-"))
        .expect("the pod's service account token volume");
    patch.replace(token, "@SERVICE_ACCOUNT_VOLUME@")
}

/// Waits until the API server calls the floor webhook (configurations take effect asynchronously).
async fn wait_until_floor_is_called(client: &Client, ns: &str) {
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "floor-probe", "labels": {FLOOR_LABEL: "floor"}},
        "spec": {"containers": [{"name": "c", "image": "x"}]},
    }))
    .unwrap();
    let called = |m: &Metrics| {
        m.sum(&format!("{ADMISSION}_count"), &[&format!("name=\"{}\"", floor_webhook("floor"))])
    };
    let before = called(&Metrics::of_apiserver(client).await);
    eventually(Duration::from_secs(30), "the floor webhook called", || async {
        pods.create(&PostParams { dry_run: true, ..Default::default() }, &pod).await.ok()?;
        (called(&Metrics::of_apiserver(client).await) > before).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "takes minutes; run by scripts/bench.sh floor"]
async fn admission_floor_figures() {
    if !enabled() {
        return;
    }
    let replicas = bench_replicas(300);
    let ceiling_bin =
        std::env::var("HAB_BENCH_CEILING_BIN").expect("HAB_BENCH_CEILING_BIN: the ceiling example");
    let client = client().await;
    let webhook = start_figures_webhook(&client).await;
    let port = free_port();
    let (crt, key) = webhook.tls_files();
    let replay_file = std::env::temp_dir().join(format!("hab-bench-replay-{}.json", std::process::id()));
    let _ = std::fs::remove_file(&replay_file);
    let ceiling = Ceiling(
        Command::new(&ceiling_bin)
            .arg(format!("127.0.0.1:{port}"))
            .args([&crt, &key, &replay_file])
            .stdout(Stdio::null())
            .spawn()
            .expect("starting the ceiling server"),
    );
    let configurations = Api::<MutatingWebhookConfiguration>::all(client.clone());
    configurations
        .patch(
            FLOOR_WEBHOOK,
            &PatchParams::apply("hab-bootstrap-bench").force(),
            &Patch::Apply(&floor_configuration(port, &webhook.ca_pem)),
        )
        .await
        .unwrap();
    // `without` is called by no webhook at all: what every other rollout time is compared with.
    let names: Vec<&str> =
        ["without", "with"].into_iter().chain(FLOORS.iter().map(|(name, ..)| *name)).collect();
    add_nodes(&client, "admission-floor", names.len() as i32 * replicas + 10).await;
    let ns = namespace(&client, NS_FIGURES).await;
    wait_until_floor_is_called(&client, &ns).await;
    let statefulsets = Api::<StatefulSet>::namespaced(client.clone(), &ns);
    let floor_statefulset = |name: &str| {
        let mut sts = statefulset(name, replicas, "OrderedReady", false);
        let template = sts.spec.as_mut().unwrap().template.metadata.get_or_insert_with(Default::default);
        template.labels.get_or_insert_with(Default::default).insert(FLOOR_LABEL.into(), name.into());
        sts
    };

    let mut report = format!(
        "## What the API server records for a webhook call: ours, and the ceiling's doing nothing or patching ({replicas} pods, OrderedReady)\n\n\
         | round | StatefulSet | its webhook answers | rollout s | API server: the webhook it calls | the webhook's own | our webhook process: CPU / waiting for a core, ms per pod |\n|---|---|---|---|---|---|---|\n"
    );
    // Round 1 rolls out `without` and `with` first and the replayed floor last: the patch to
    // replay is taken from the plain floor's pod 0 in between. Each next round runs them the other
    // way round (HAB_BENCH_FLOOR_ROUNDS, 2).
    let rounds: usize = std::env::var("HAB_BENCH_FLOOR_ROUNDS").map_or(2, |v| v.parse().unwrap());
    let mut order = names.clone();
    let mut replayed_bytes = 0;
    let mut rollouts: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for round in 1..=rounds {
        for &name in &order {
            let sts = if FLOORS.iter().any(|(floor, ..)| *floor == name) {
                floor_statefulset(name)
            } else {
                statefulset(name, replicas, "OrderedReady", name == "with")
            };
            let answers = answers(name);
            let pid = webhook.pid().unwrap();
            let (api_before, ours_before, sched_before) =
                (Metrics::of_apiserver(&client).await, Metrics::of_webhook(&webhook), sched_seconds(pid));
            let started = Instant::now();
            create(&client, &ns, &sts).await;
            wait_rolled_out(&statefulsets, name, STEP_TIMEOUT).await;
            let seconds = started.elapsed().as_secs_f64();
            // Our webhook runs through every rollout (it watches every StatefulSet): what it spends
            // outside `with` is its background, the rest its admissions.
            let sched = sched_seconds(pid).since(sched_before);
            let per_pod = |s: f64| s * 1000.0 / f64::from(replicas);
            let sched = format!("{:.2} / {:.2}", per_pod(sched.cpu), per_pod(sched.waiting));
            rollouts.entry(name).or_default().push(seconds);
            let api = Metrics::of_apiserver(&client).await.since(&api_before);
            let (called, own) = if name == "without" {
                ("—".to_owned(), "—".to_owned())
            } else if name == "with" {
                let own = Metrics::of_webhook(&webhook).since(&ours_before);
                (
                    api.histogram(ADMISSION, &[OUR_POD_WEBHOOK]).to_string(),
                    own.histogram("hab_bootstrap_admission_duration_seconds", &["webhook=\"pods\""])
                        .to_string(),
                )
            } else {
                let called = api.histogram(ADMISSION, &[&format!("name=\"{}\"", floor_webhook(name))]);
                (called.to_string(), "—".to_owned())
            };
            eprintln!("[floor] round {round}, {name}: {seconds:.1} s; API server: {called}");
            writeln!(report, "| {round} | {name} | {answers} | {seconds:.1} | {called} | {own} | {sched} |")
                .unwrap();
            if name == "floor" && !replay_file.exists() {
                let patch = our_patch_for_a_floor_pod(&client, &ns, &webhook).await;
                eprintln!("[floor] our patch for floor-0: {} bytes", patch.len());
                replayed_bytes = patch.len();
                std::fs::write(&replay_file, patch).unwrap();
            }
        }
        for &name in &names {
            delete(&client, name).await;
        }
        order.reverse();
    }
    writeln!(report, "\nOur patch, replayed: {replayed_bytes} bytes of JSON patch.").unwrap();
    // What each answer costs a rollout: the median of its rounds against the StatefulSet that no
    // webhook is called for (the same template; `with` and the replay store the same pods).
    let without = median(&rollouts["without"]);
    writeln!(
        report,
        "\n| StatefulSet | its webhook answers | rollout s, each round | median s | vs without |\n|---|---|---|---|---|"
    )
    .unwrap();
    for &name in &names {
        let answers = answers(name);
        let each: Vec<String> = rollouts[name].iter().map(|s| format!("{s:.1}")).collect();
        let m = median(&rollouts[name]);
        writeln!(report, "| {name} | {answers} | {} | {m:.1} | **{:.2}** |", each.join(", "), m / without)
            .unwrap();
    }
    eprintln!("{report}");
    if let Ok(dir) = std::env::var("HAB_BENCH_OUT") {
        std::fs::write(std::path::Path::new(&dir).join("admission-floor.md"), &report).unwrap();
    }
    configurations.delete(FLOOR_WEBHOOK, &DeleteParams::default()).await.unwrap();
    drop(ceiling);
    let _ = std::fs::remove_file(&replay_file);
    clean_up(&client, &ns, webhook).await;
}
