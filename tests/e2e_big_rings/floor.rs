//! What the API server records for a webhook that does nothing: `admission_floor_figures`, run by
//! `scripts/bench.sh floor`. The `ceiling` example (the webhook's own TLS and HTTP stack, a handler
//! that only parses the review and allows it) is registered for the pods of a StatefulSet that is
//! not ours, next to our webhook for an opted-in one of the same size; both roll out in turn, in
//! both orders, and the API server's `apiserver_admission_webhook_admission_duration_seconds` is
//! read for each. What the API server adds to any webhook call on this machine is the floor under
//! our figure.

use std::process::{Child, Command, Stdio};

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use super::*;

const FLOOR_WEBHOOK: &str = "floor.hab-bootstrap.test";
const FLOOR_LABEL: &str = "hab-bench/floor";

/// The ceiling server, stopped when dropped.
struct Ceiling(Child);

impl Drop for Ceiling {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The floor's configuration: every pod CREATE with the floor label goes to the ceiling server.
fn floor_configuration(port: u16, ca_pem: &str) -> MutatingWebhookConfiguration {
    use base64::Engine;
    serde_json::from_value(json!({
        "metadata": {"name": FLOOR_WEBHOOK},
        "webhooks": [{
            "name": FLOOR_WEBHOOK,
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": "Fail",
            "timeoutSeconds": 5,
            "clientConfig": {
                "url": format!("https://127.0.0.1:{port}{}", hab_bootstrap::webhook::server::routes::POD_PATH),
                "caBundle": base64::engine::general_purpose::STANDARD.encode(ca_pem),
            },
            "objectSelector": {"matchLabels": {FLOOR_LABEL: "true"}},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}],
        }],
    }))
    .unwrap()
}

/// Waits until the API server calls the floor webhook (configurations take effect asynchronously).
async fn wait_until_floor_is_called(client: &Client, ns: &str) {
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "floor-probe", "labels": {FLOOR_LABEL: "true"}},
        "spec": {"containers": [{"name": "c", "image": "x"}]},
    }))
    .unwrap();
    let called = |m: &Metrics| m.sum(&format!("{ADMISSION}_count"), &[&format!("name=\"{FLOOR_WEBHOOK}\"")]);
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
    let ceiling = Ceiling(
        Command::new(&ceiling_bin)
            .arg(format!("127.0.0.1:{port}"))
            .args([&crt, &key])
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
    add_nodes(&client, "admission-floor", 2 * replicas + 10).await;
    let ns = namespace(&client, NS_FIGURES).await;
    wait_until_floor_is_called(&client, &ns).await;
    let statefulsets = Api::<StatefulSet>::namespaced(client.clone(), &ns);
    let floor_statefulset = || {
        let mut sts = statefulset("floor", replicas, "OrderedReady", false);
        let template = sts.spec.as_mut().unwrap().template.metadata.get_or_insert_with(Default::default);
        template.labels.get_or_insert_with(Default::default).insert(FLOOR_LABEL.into(), "true".into());
        sts
    };

    let mut report = format!(
        "## What the API server records for a webhook call, ours and one that does nothing ({replicas} pods, OrderedReady)\n\n\
         | round | StatefulSet | rollout s | API server: the webhook it calls | the webhook's own |\n|---|---|---|---|---|\n"
    );
    for (round, order) in [(1, ["with", "floor"]), (2, ["floor", "with"])] {
        for name in order {
            let sts = if name == "with" {
                statefulset("with", replicas, "OrderedReady", true)
            } else {
                floor_statefulset()
            };
            let (api_before, ours_before) =
                (Metrics::of_apiserver(&client).await, Metrics::of_webhook(&webhook));
            let started = Instant::now();
            create(&client, &ns, &sts).await;
            wait_rolled_out(&statefulsets, name, STEP_TIMEOUT).await;
            let seconds = started.elapsed().as_secs_f64();
            let api = Metrics::of_apiserver(&client).await.since(&api_before);
            let (called, own) = if name == "with" {
                let own = Metrics::of_webhook(&webhook).since(&ours_before);
                (
                    api.histogram(ADMISSION, &[OUR_POD_WEBHOOK]),
                    own.histogram("hab_bootstrap_admission_duration_seconds", &["webhook=\"pods\""])
                        .to_string(),
                )
            } else {
                (api.histogram(ADMISSION, &[&format!("name=\"{FLOOR_WEBHOOK}\"")]), "—".to_owned())
            };
            eprintln!("[floor] round {round}, {name}: {seconds:.1} s; API server: {called}");
            writeln!(report, "| {round} | {name} | {seconds:.1} | {called} | {own} |").unwrap();
        }
        for name in ["with", "floor"] {
            delete(&client, name).await;
        }
    }
    eprintln!("{report}");
    if let Ok(dir) = std::env::var("HAB_BENCH_OUT") {
        std::fs::write(std::path::Path::new(&dir).join("admission-floor.md"), &report).unwrap();
    }
    configurations.delete(FLOOR_WEBHOOK, &DeleteParams::default()).await.unwrap();
    drop(ceiling);
    clean_up(&client, &ns, webhook).await;
}
