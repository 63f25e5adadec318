//! Escaped pods do not stay silent, against the real control plane: each way of escaping the
//! webhook is first created on purpose (the webhook configuration deleted, the documented emergency
//! exit, while a StatefulSet is annotated or scaled), then found by the webhook's scan (a gauge by
//! StatefulSet, one Warning Event however many replicas and scans, a log line) and by `check`, with
//! the fix; and nothing is reported on a healthy install.
//!
//!   scripts/control-plane.sh run -- cargo test --locked --test e2e_escaped -- --include-ignored --nocapture

mod support;

use std::process::Command;
use std::time::Duration;

use hab_bootstrap::injection::annotations;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::events::v1::Event;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use support::{harness, objects};

/// The tests delete the one webhook registration: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const CONFIG: &str = "hab-bootstrap";
/// Scans every second here (60 s by default), so that a few seconds are many scans.
const SCAN: [&str; 2] = ["--escape-scan-interval", "1s"];

async fn without_configuration(client: &Client) {
    Api::<MutatingWebhookConfiguration>::all(client.clone())
        .delete(CONFIG, &DeleteParams::default())
        .await
        .unwrap();
}

async fn reregister(client: &Client, webhook: &harness::Webhook) {
    let file = harness::repo_file("webhook/mutating-webhook-configuration.yaml");
    harness::register(client, &webhook.ca_pem, webhook.port, CONFIG, &file).await;
    harness::wait_until_effective(client).await;
}

async fn create_statefulset(client: &Client, ns: &str, name: &str, replicas: i32) {
    Api::<Service>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &objects::headless_service(name, name))
        .await
        .unwrap();
    let sts = objects::statefulset(name, name, replicas, &[("habitat/bootstrap", "true")]);
    Api::<StatefulSet>::namespaced(client.clone(), ns).create(&PostParams::default(), &sts).await.unwrap();
}

/// Waits for `n` pods of `app`, and returns how many of them are injected.
async fn wait_pods(client: &Client, ns: &str, app: &str, n: usize, injected: usize) {
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    harness::eventually(
        Duration::from_secs(90),
        &format!("{n} pods of {app}, {injected} injected"),
        || async {
            let list = pods.list(&ListParams::default().labels(&format!("app={app}"))).await.ok()?;
            let live: Vec<&Pod> =
                list.items.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
            let with_status = live
                .iter()
                .filter(|p| {
                    p.metadata
                        .annotations
                        .as_ref()
                        .is_some_and(|a| a.contains_key("habitat/bootstrap-status"))
                })
                .count();
            (live.len() == n && list.items.len() == n && with_status == injected).then_some(())
        },
    )
    .await
}

/// The Events the scan records in `ns` (by reason), as (reason, regarded object, note).
async fn escape_events(client: &Client, ns: &str) -> Vec<(String, String, String)> {
    let events = Api::<Event>::namespaced(client.clone(), ns).list(&ListParams::default()).await.unwrap();
    events
        .items
        .into_iter()
        .filter(|e| matches!(e.reason.as_deref(), Some("TemplateLabelMissing" | "PodsNotInjected")))
        .map(|e| {
            let regarding = e.regarding.and_then(|r| r.name).unwrap_or_default();
            (e.reason.unwrap_or_default(), regarding, e.note.unwrap_or_default())
        })
        .collect()
}

/// The series of `metric` for StatefulSet `ns/sts` in a replica's `/metrics`, if any.
fn series(webhook: &harness::Webhook, metric: &str, ns: &str, sts: &str) -> Option<String> {
    let prefix = format!("{metric}{{namespace=\"{ns}\",statefulset=\"{sts}\"}} ");
    webhook.metrics().lines().find_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
}

async fn series_eventually(
    webhook: &harness::Webhook,
    metric: &str,
    ns: &str,
    sts: &str,
    want: Option<&str>,
) {
    harness::eventually(Duration::from_secs(60), &format!("{metric} of {ns}/{sts} = {want:?}"), || async {
        (series(webhook, metric, ns, sts).as_deref() == want).then_some(())
    })
    .await
}

fn check(ns: &str) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_hab-bootstrap"))
        .args(["check", "-n", ns, "-o", "json"])
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}): {}", String::from_utf8_lossy(&out.stderr)))
}

/// The (message, fix) of every problem `check` reports under `id`.
fn problems(report: &Value, id: &str) -> Vec<(String, String)> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["check"] == id && (f["status"] == "error" || f["status"] == "warning"))
        .map(|f| (f["message"].as_str().unwrap().to_owned(), f["fix"].as_str().unwrap().to_owned()))
        .collect()
}

fn log_mentions(webhook: &harness::Webhook, needles: &[&str]) -> usize {
    let log = std::fs::read_to_string(webhook.log_path()).unwrap_or_default();
    log.lines().filter(|l| needles.iter().all(|n| l.contains(n))).count()
}

#[tokio::test]
#[ignore = "needs a control plane: run scripts/test"]
async fn an_unlabelled_statefulset_is_reported_once_by_two_replicas() {
    if !harness::enabled() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let client = harness::client().await;
    let webhook = harness::start_webhook_with(&client, &SCAN).await;
    let replica = webhook.replica();
    let ns = harness::namespace(&client, "escaped-template").await;
    // Annotated while the configuration was deleted: the template never gets the label.
    without_configuration(&client).await;
    create_statefulset(&client, &ns, "esc", 2).await;
    wait_pods(&client, &ns, "esc", 2, 0).await;
    reregister(&client, &webhook).await;

    for w in [&webhook, &replica] {
        series_eventually(w, "hab_bootstrap_template_label_missing", &ns, "esc", Some("1")).await;
    }
    // Its pods carry no label, so the scan does not see them one by one: the StatefulSet is the
    // finding (check names the pods, below).
    assert_eq!(series(&webhook, "hab_bootstrap_escaped_pods", &ns, "esc"), None);
    // Many scans by two replicas: one Event.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let events = escape_events(&client, &ns).await;
    assert_eq!(events.len(), 1, "{events:#?}");
    let (reason, regarding, note) = &events[0];
    assert_eq!((reason.as_str(), regarding.as_str()), ("TemplateLabelMissing", "esc"));
    assert!(note.contains("--fix-template-labels") && note.contains("rolls its pods"), "{note}");
    // Each replica logs it once (they share the log file here).
    assert_eq!(log_mentions(&webhook, &["escaped the webhook", &ns, "TemplateLabelMissing"]), 2);

    let report = check(&ns);
    let (message, fix) = &problems(&report, "statefulset.template-label")[0];
    assert!(message.contains("no label habitat/bootstrap"), "{message}");
    assert!(fix.contains("--fix-template-labels"), "{fix}");
    let (message, _) = &problems(&report, "statefulset.pod-injected")[0];
    assert!(message.contains("never injected (escaped): esc-0, esc-1"), "{message}");

    // Fixed (by the operator): the StatefulSet rolls its pods, injected, and the series goes.
    let label = json!({"spec": {"template": {"metadata": {"labels": {"habitat/bootstrap": "true"}}}}});
    Api::<StatefulSet>::namespaced(client.clone(), &ns)
        .patch("esc", &PatchParams::default(), &Patch::Merge(&label))
        .await
        .unwrap();
    wait_pods(&client, &ns, "esc", 2, 2).await;
    series_eventually(&webhook, "hab_bootstrap_template_label_missing", &ns, "esc", None).await;
    assert_eq!(series(&webhook, "hab_bootstrap_escaped_pods", &ns, "esc"), None);
    assert!(log_mentions(&webhook, &["no longer escaped", &ns]) >= 1);
}

#[tokio::test]
#[ignore = "needs a control plane: run scripts/test"]
async fn pods_created_while_the_configuration_was_absent_are_reported() {
    if !harness::enabled() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let client = harness::client().await;
    let webhook = harness::start_webhook_with(&client, &SCAN).await;
    let ns = harness::namespace(&client, "escaped-pods").await;
    create_statefulset(&client, &ns, "grow", 1).await;
    wait_pods(&client, &ns, "grow", 1, 1).await;
    // Scaled up while the configuration was deleted: the new pods carry the label, not the injection.
    without_configuration(&client).await;
    let scale = json!({"spec": {"replicas": 3}});
    let statefulsets = Api::<StatefulSet>::namespaced(client.clone(), &ns);
    statefulsets.patch("grow", &PatchParams::default(), &Patch::Merge(&scale)).await.unwrap();
    wait_pods(&client, &ns, "grow", 3, 1).await;
    // What the scan's watch is sent: the escaped pods, not the injected one.
    assert_eq!(not_injected(&client, &ns).await, ["grow-1", "grow-2"]);
    reregister(&client, &webhook).await;

    series_eventually(&webhook, "hab_bootstrap_escaped_pods", &ns, "grow", Some("2")).await;
    assert_eq!(series(&webhook, "hab_bootstrap_template_label_missing", &ns, "grow"), None);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let events = escape_events(&client, &ns).await;
    assert_eq!(events.len(), 1, "{events:#?}");
    let (reason, regarding, note) = &events[0];
    assert_eq!((reason.as_str(), regarding.as_str()), ("PodsNotInjected", "grow"));
    assert!(note.starts_with("2 pod(s) never injected"), "{note}");
    assert!(note.contains(&format!("kubectl -n {ns} delete pod grow-1 grow-2")), "{note}");

    let report = check(&ns);
    assert!(problems(&report, "statefulset.template-label").is_empty());
    let (message, fix) = &problems(&report, "statefulset.pod-injected")[0];
    assert!(message.contains("never injected (escaped): grow-1, grow-2"), "{message}");
    assert!(fix.contains("delete pod grow-1 grow-2"), "{fix}");

    // Fixed as told: the pods are recreated, injected, and the series goes.
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    for pod in ["grow-1", "grow-2"] {
        pods.delete(pod, &DeleteParams::default()).await.unwrap();
    }
    wait_pods(&client, &ns, "grow", 3, 3).await;
    series_eventually(&webhook, "hab_bootstrap_escaped_pods", &ns, "grow", None).await;
    assert_eq!(not_injected(&client, &ns).await, Vec::<String>::new());
}

/// The pods the API server selects for the escape scan's watch, by name.
async fn not_injected(client: &Client, ns: &str) -> Vec<String> {
    let selector = ListParams::default().labels(&annotations::not_injected_selector());
    let list = Api::<Pod>::namespaced(client.clone(), ns).list(&selector).await.unwrap();
    let mut names: Vec<String> = list
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.metadata.name)
        .collect();
    names.sort();
    names
}

#[tokio::test]
#[ignore = "needs a control plane: run scripts/test"]
async fn quiet_on_a_healthy_install_with_build_and_certificate_metrics() {
    if !harness::enabled() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let client = harness::client().await;
    let webhook = harness::start_webhook_with(&client, &SCAN).await;
    let ns = harness::namespace(&client, "escaped-none").await;
    create_statefulset(&client, &ns, "fine", 2).await;
    wait_pods(&client, &ns, "fine", 2, 2).await;
    tokio::time::sleep(Duration::from_secs(4)).await;

    let metrics = webhook.metrics();
    assert!(!metrics.contains(&format!("namespace=\"{ns}\"")), "{metrics}");
    assert_eq!(escape_events(&client, &ns).await, vec![]);
    assert_eq!(log_mentions(&webhook, &["escaped the webhook", &ns]), 0);

    let version = env!("CARGO_PKG_VERSION");
    assert!(
        metrics
            .contains(&format!("hab_bootstrap_build_info{{version=\"{version}\",component=\"webhook\"}} 1"))
    );
    // The harness's certificate: valid 90 days, from a CA valid 365.
    let expiry = |which: &str| -> i64 {
        let prefix =
            format!("hab_bootstrap_certificate_expiry_timestamp_seconds{{certificate=\"{which}\"}} ");
        let line = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("{which}: {metrics}"));
        (line.parse::<i64>().unwrap() - time::OffsetDateTime::now_utc().unix_timestamp()) / 86_400
    };
    assert!((88..=90).contains(&expiry("serving")), "{}", expiry("serving"));
    assert!((363..=365).contains(&expiry("ca")), "{}", expiry("ca"));
    assert!(log_mentions(&webhook, &["serving", "version=", version]) >= 1);
}
