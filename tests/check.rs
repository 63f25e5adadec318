//! `hab-bootstrap check` against the real control plane: each problem it claims to find in the
//! cluster, the install and the opted-in StatefulSets is first created on purpose, then found, with
//! its fix; and it is quiet (exit 0) on a healthy install. Ring problems need real Supervisors:
//! tests/e2e_habitat/check.rs.
//!
//!   scripts/control-plane.sh run -- cargo test --locked --test check -- --include-ignored --nocapture

mod support;

use std::process::Command;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use support::{harness, objects};

/// The tests change the one webhook registration: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const CONFIG: &str = "hab-bootstrap";

struct Checked {
    code: i32,
    report: Value,
}

impl Checked {
    fn problems(&self) -> Vec<(String, String)> {
        self.report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["status"] == "error" || f["status"] == "warning")
            .map(|f| (f["check"].as_str().unwrap().to_owned(), f["message"].as_str().unwrap().to_owned()))
            .collect()
    }

    /// The one problem of `check`, with its fix; fails when absent.
    fn problem(&self, check: &str) -> (String, String) {
        let found = self.report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["check"] == check && (f["status"] == "error" || f["status"] == "warning"));
        let f = found.unwrap_or_else(|| panic!("no problem {check} found; problems: {:#?}", self.problems()));
        (
            f["message"].as_str().unwrap().to_owned(),
            f["fix"].as_str().expect("a problem has a fix").to_owned(),
        )
    }

    fn problems_of(&self, check: &str) -> Vec<(String, String)> {
        self.report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["check"] == check && (f["status"] == "error" || f["status"] == "warning"))
            .map(|f| (f["message"].as_str().unwrap().to_owned(), f["fix"].as_str().unwrap().to_owned()))
            .collect()
    }

    fn quiet(&self, prefix: &str) -> bool {
        !self.problems().iter().any(|(c, _)| c.starts_with(prefix))
    }
}

fn check(args: &[&str]) -> Checked {
    let out = Command::new(env!("CARGO_BIN_EXE_hab-bootstrap"))
        .arg("check")
        .args(args)
        .args(["-o", "json"])
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("check printed no JSON ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    let checked = Checked { code: out.status.code().unwrap(), report };
    eprintln!("[check {args:?}] exit {}, problems {:?}", checked.code, checked.problems());
    checked
}

fn kubectl(args: &[&str]) {
    let kubectl = std::env::var("CP_KUBECTL").unwrap_or_else(|_| "kubectl".into());
    let out = Command::new(kubectl).args(args).output().unwrap();
    assert!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// The webhook running and registered, the sidecar's policy and the webhook's Secret policy
/// installed, and namespace `ns` with the sidecar's RBAC: what a healthy install looks like.
async fn healthy(client: &Client, ns: &str) -> (harness::Webhook, String) {
    let webhook = harness::start_webhook(client).await;
    let ns = harness::namespace(client, ns).await;
    kubectl(&["apply", "-f", harness::repo_file("examples/sidecar-admission-policy.yaml").to_str().unwrap()]);
    apply_webhook_secrets_policy();
    kubectl(&["apply", "-n", &ns, "-f", harness::repo_file("examples/sidecar-rbac.yaml").to_str().unwrap()]);
    (webhook, ns)
}

const SECRETS_POLICY: &str = "hab-bootstrap-webhook-secrets";

fn apply_webhook_secrets_policy() {
    kubectl(&["apply", "-f", harness::webhook_secrets_policy().path().to_str().unwrap()]);
}

async fn reregister(client: &Client, webhook: &harness::Webhook) {
    harness::register(
        client,
        &webhook.ca_pem,
        webhook.port,
        CONFIG,
        &harness::repo_file("webhook/mutating-webhook-configuration.yaml"),
    )
    .await;
    harness::wait_until_effective(client).await;
}

fn configs(client: &Client) -> Api<MutatingWebhookConfiguration> {
    Api::all(client.clone())
}

#[tokio::test]
#[ignore = "needs a control plane: run scripts/test"]
async fn quiet_on_a_healthy_install() {
    if !harness::enabled() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let client = harness::client().await;
    let (_webhook, ns) = healthy(&client, "check-healthy").await;
    let checked = check(&["-n", &ns]);
    assert_eq!(checked.problems(), vec![]);
    assert_eq!(checked.code, 0);
    let text = Command::new(env!("CARGO_BIN_EXE_hab-bootstrap")).args(["check", "-n", &ns]).output().unwrap();
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains("All is well.") && !text.contains('\x1b'), "no colour off a terminal:\n{text}");
    eprintln!("{text}");
}

#[tokio::test]
#[ignore = "needs a control plane: run scripts/test"]
async fn finds_a_missing_install() {
    if !harness::enabled() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let client = harness::client().await;
    let (webhook, ns) = healthy(&client, "check-missing").await;
    configs(&client).delete(CONFIG, &DeleteParams::default()).await.unwrap();
    let checked = check(&["-n", &ns]);
    let (message, fix) = checked.problem("install.configuration");
    assert!(message.contains("not installed"), "{message}");
    assert!(fix.contains("helm install"), "{fix}");
    assert_eq!(checked.code, 1);
    reregister(&client, &webhook).await;
    assert!(check(&["-n", &ns]).quiet("install."));
}

#[tokio::test]
#[ignore = "needs a control plane: run scripts/test"]
async fn finds_a_ca_bundle_that_does_not_trust_the_served_certificate() {
    if !harness::enabled() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let client = harness::client().await;
    let (webhook, ns) = healthy(&client, "check-cabundle").await;
    let other = hab_bootstrap::certs::CertificateAuthority::generate("another CA", time::Duration::days(365))
        .unwrap();
    let mut config = configs(&client).get(CONFIG).await.unwrap();
    for hook in config.webhooks.iter_mut().flatten() {
        hook.client_config.ca_bundle = Some(ByteString(other.cert_pem.as_bytes().to_vec()));
    }
    config.metadata.managed_fields = None;
    configs(&client).replace(CONFIG, &PostParams::default(), &config).await.unwrap();
    // The API server picks the new caBundle up asynchronously: wait for the dry-run to fail too.
    let checked = harness::eventually(Duration::from_secs(30), "the dry-run failing", || async {
        let c = check(&["-n", &ns]);
        c.problems().iter().any(|(k, _)| k == "install.dry-run-statefulset").then_some(c)
    })
    .await;
    let (message, fix) = checked.problem("install.ca-bundle");
    assert!(message.contains("does not trust") && message.contains("another CA"), "{message}");
    assert!(fix.contains("caBundle"), "{fix}");
    reregister(&client, &webhook).await;
    assert!(check(&["-n", &ns]).quiet("install."));
}

#[tokio::test]
#[ignore = "needs a control plane: run scripts/test"]
async fn finds_a_certificate_about_to_expire() {
    if !harness::enabled() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let client = harness::client().await;
    let (webhook, ns) = healthy(&client, "check-expiry").await;
    webhook.serve_certificate_valid_for(time::Duration::days(10));
    let checked = harness::eventually(Duration::from_secs(15), "the new certificate served", || async {
        let c = check(&["-n", &ns]);
        (!c.quiet("install.certificate-expiry")).then_some(c)
    })
    .await;
    let (message, fix) = checked.problem("install.certificate-expiry");
    assert!(message.contains("expires in 9 day"), "{message}");
    assert!(fix.contains("certs ensure"), "{fix}");
}

#[tokio::test]
#[ignore = "needs a control plane: run scripts/test"]
async fn finds_webhooks_the_api_server_does_not_call() {
    if !harness::enabled() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let client = harness::client().await;
    let (webhook, ns) = healthy(&client, "check-notcalled").await;
    // A configuration that leaves this namespace out: present, trusted, and never called here.
    let patch = json!({"webhooks": [
        {"name": "statefulsets.hab-bootstrap.habitat.sh", "namespaceSelector": {"matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": [ns.clone()]}]}},
    ]});
    configs(&client).patch(CONFIG, &PatchParams::default(), &Patch::Strategic(patch)).await.unwrap();
    let checked = harness::eventually(Duration::from_secs(30), "the dry-run unchanged", || async {
        let c = check(&["-n", &ns]);
        (!c.quiet("install.dry-run-statefulset")).then_some(c)
    })
    .await;
    let (message, fix) = checked.problem("install.dry-run-statefulset");
    assert!(message.contains("does not call the StatefulSet webhook"), "{message}");
    assert!(fix.contains("namespaceSelector"), "{fix}");
    reregister(&client, &webhook).await;
}

#[tokio::test]
#[ignore = "needs a control plane: run scripts/test"]
async fn finds_no_ready_webhook_replicas() {
    if !harness::enabled() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let client = harness::client().await;
    let (webhook, ns) = healthy(&client, "check-replicas").await;
    // Registered by Service, as the chart does, with no pod behind the Service.
    let install_ns = harness::namespace(&client, "check-install").await;
    let svc: Service = serde_json::from_value(json!({"metadata": {"name": "hab-bootstrap"},
        "spec": {"selector": {"app.kubernetes.io/name": "hab-bootstrap"}, "ports": [{"port": 443, "targetPort": 8443}]}}))
    .unwrap();
    let services = Api::<Service>::namespaced(client.clone(), &install_ns);
    if services.get_opt("hab-bootstrap").await.unwrap().is_none() {
        services.create(&PostParams::default(), &svc).await.unwrap();
    }
    let mut config = configs(&client).get(CONFIG).await.unwrap();
    for hook in config.webhooks.iter_mut().flatten() {
        let path =
            hook.client_config.url.as_deref().and_then(|u| u.rsplit_once('/')).map(|(_, p)| format!("/{p}"));
        hook.client_config.url = None;
        hook.client_config.service = Some(k8s_openapi::api::admissionregistration::v1::ServiceReference {
            namespace: install_ns.clone(),
            name: "hab-bootstrap".into(),
            path,
            port: Some(443),
        });
    }
    config.metadata.managed_fields = None;
    configs(&client).replace(CONFIG, &PostParams::default(), &config).await.unwrap();
    let checked = check(&["-n", &ns]);
    let (message, fix) = checked.problem("install.replicas");
    assert!(message.contains("no webhook pod is ready"), "{message}");
    assert!(fix.contains(&format!("kubectl -n {install_ns} describe service hab-bootstrap")), "{fix}");
    configs(&client).delete(CONFIG, &DeleteParams::default()).await.unwrap();
    reregister(&client, &webhook).await;
}

#[tokio::test]
#[ignore = "needs a control plane: run scripts/test"]
async fn finds_the_sidecar_policy_missing() {
    if !harness::enabled() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let client = harness::client().await;
    let (_webhook, ns) = healthy(&client, "check-policy").await;
    let policies = Api::<ValidatingAdmissionPolicy>::all(client.clone());
    policies.delete("hab-bootstrap-sidecar-own-pod", &DeleteParams::default()).await.unwrap();
    let checked = check(&["-n", &ns]);
    let (_, fix) = checked.problem("cluster.sidecar-policy");
    assert!(fix.contains("examples/sidecar-admission-policy.yaml"), "{fix}");
    kubectl(&["apply", "-f", harness::repo_file("examples/sidecar-admission-policy.yaml").to_str().unwrap()]);
    assert!(check(&["-n", &ns]).quiet("cluster."));
}

#[tokio::test]
#[ignore = "needs a control plane: run scripts/test"]
async fn finds_the_sidecar_policy_unbound() {
    if !harness::enabled() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let client = harness::client().await;
    let (_webhook, ns) = healthy(&client, "check-policy-unbound").await;
    let bindings = Api::<ValidatingAdmissionPolicyBinding>::all(client.clone());
    bindings.delete("hab-bootstrap-sidecar-own-pod", &DeleteParams::default()).await.unwrap();
    let checked = check(&["-n", &ns]);
    let (message, fix) = checked.problem("cluster.sidecar-policy");
    assert!(message.contains("no binding enforces it"), "{message}");
    assert!(fix.contains("examples/sidecar-admission-policy.yaml"), "{fix}");
    kubectl(&["apply", "-f", harness::repo_file("examples/sidecar-admission-policy.yaml").to_str().unwrap()]);
    assert!(check(&["-n", &ns]).quiet("cluster."));
}

#[tokio::test]
#[ignore = "needs a control plane: run scripts/test"]
async fn finds_the_webhook_secrets_policy_missing() {
    if !harness::enabled() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let client = harness::client().await;
    let (_webhook, ns) = healthy(&client, "check-secrets-policy").await;
    Api::<ValidatingAdmissionPolicy>::all(client.clone())
        .delete(SECRETS_POLICY, &DeleteParams::default())
        .await
        .unwrap();
    let checked = check(&["-n", &ns]);
    let (message, fix) = checked.problem("install.webhook-secrets-policy");
    assert!(message.contains("is not installed") && message.contains("any Secret"), "{message}");
    assert!(fix.contains("admissionPolicies.webhookSecrets=true"), "{fix}");
    apply_webhook_secrets_policy();
    assert!(check(&["-n", &ns]).quiet("install.webhook-secrets-policy"));
}

#[tokio::test]
#[ignore = "needs a control plane: run scripts/test"]
async fn finds_the_webhook_secrets_policy_unbound() {
    if !harness::enabled() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let client = harness::client().await;
    let (_webhook, ns) = healthy(&client, "check-secrets-binding").await;
    Api::<ValidatingAdmissionPolicyBinding>::all(client.clone())
        .delete(SECRETS_POLICY, &DeleteParams::default())
        .await
        .unwrap();
    let checked = check(&["-n", &ns]);
    let (message, fix) = checked.problem("install.webhook-secrets-policy");
    assert!(message.contains("has no binding that enforces it"), "{message}");
    assert!(fix.contains("kubectl apply --server-side -k webhook/"), "{fix}");
    apply_webhook_secrets_policy();
    assert!(check(&["-n", &ns]).quiet("install.webhook-secrets-policy"));
}

async fn wait_pods(client: &Client, ns: &str, app: &str, n: usize, injected: bool) -> Vec<Pod> {
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    harness::eventually(
        Duration::from_secs(90),
        &format!("{n} pods of {app} (injected: {injected})"),
        || async {
            let list = pods.list(&ListParams::default().labels(&format!("app={app}"))).await.ok()?;
            let ok = list.items.len() == n
                && list.items.iter().all(|p| {
                    p.metadata.deletion_timestamp.is_none()
                        && p.metadata
                            .annotations
                            .as_ref()
                            .is_some_and(|a| a.contains_key("habitat/bootstrap-status"))
                            == injected
                });
            ok.then_some(list.items)
        },
    )
    .await
}

#[tokio::test]
#[ignore = "needs a control plane: run scripts/test"]
async fn finds_an_unlabelled_statefulset_and_its_escaped_pods_and_fixes_the_label_when_asked() {
    if !harness::enabled() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let client = harness::client().await;
    let (webhook, ns) = healthy(&client, "check-escaped").await;
    // Annotated while the configuration was deleted (the documented emergency exit).
    configs(&client).delete(CONFIG, &DeleteParams::default()).await.unwrap();
    Api::<Service>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &objects::headless_service("esc", "esc"))
        .await
        .unwrap();
    let mut sts = objects::statefulset_json("esc", "esc", 2, &[("habitat/bootstrap", "true")]);
    sts["spec"]["template"]["spec"]["serviceAccountName"] = json!("habitat");
    let sts: StatefulSet = serde_json::from_value(sts).unwrap();
    Api::<StatefulSet>::namespaced(client.clone(), &ns).create(&PostParams::default(), &sts).await.unwrap();
    wait_pods(&client, &ns, "esc", 2, false).await;
    reregister(&client, &webhook).await;

    let checked = check(&["-n", &ns]);
    let (message, fix) = checked.problem("statefulset.template-label");
    assert!(message.contains("no label habitat/bootstrap"), "{message}");
    assert!(fix.contains("--fix-template-labels"), "{fix}");
    let (message, _) = checked.problem("statefulset.pod-injected");
    assert!(message.contains("never injected (escaped): esc-0, esc-1"), "{message}");
    assert_eq!(checked.code, 1);

    // Only when asked: the label is stamped, the StatefulSet rolls its pods, and they are injected.
    let fixed = check(&["-n", &ns, "--fix-template-labels"]);
    assert!(
        fixed.report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["check"] == "statefulset.template-label"
                && f["message"].as_str().unwrap().starts_with("stamped"))
    );
    wait_pods(&client, &ns, "esc", 2, true).await;
    let after = check(&["-n", &ns]);
    assert!(after.quiet("statefulset."), "{:#?}", after.problems());
}

#[tokio::test]
#[ignore = "needs a control plane: run scripts/test"]
async fn finds_a_sidecar_service_account_without_rbac() {
    if !harness::enabled() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let client = harness::client().await;
    let (_webhook, ns) = healthy(&client, "check-rbac").await;
    Api::<Service>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &objects::headless_service("norbac", "norbac"))
        .await
        .unwrap();
    // The pods run as `default`, which the sidecar RBAC does not bind.
    let sts = objects::statefulset("norbac", "norbac", 1, &[("habitat/bootstrap", "true")]);
    Api::<StatefulSet>::namespaced(client.clone(), &ns).create(&PostParams::default(), &sts).await.unwrap();
    wait_pods(&client, &ns, "norbac", 1, true).await;
    let checked = check(&["-n", &ns]);
    let (message, fix) = checked
        .problems_of("statefulset.sidecar-rbac")
        .into_iter()
        .find(|(m, _)| m.contains(&format!("ServiceAccount {ns}/default may not patch pods")))
        .expect("patch pods refused");
    assert!(message.contains("the role sidecar cannot work"), "{message}");
    assert!(fix.contains("create rolebinding"), "{fix}");
    kubectl(&[
        "-n",
        &ns,
        "create",
        "rolebinding",
        "sidecar-default",
        "--role",
        "hab-bootstrap-sidecar",
        "--serviceaccount",
        &format!("{ns}:default"),
    ]);
    assert!(check(&["-n", &ns]).quiet("statefulset.sidecar-rbac"));
}

#[tokio::test]
#[ignore = "needs a control plane: run scripts/test"]
async fn finds_an_invalid_annotation() {
    if !harness::enabled() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let client = harness::client().await;
    let (webhook, ns) = healthy(&client, "check-annotation").await;
    // Valid when created (the StatefulSet webhook refuses a bad value); changed while the
    // webhook's configuration was away.
    let sts = objects::statefulset("bad", "bad", 0, &[("habitat/bootstrap", "true")]);
    let api = Api::<StatefulSet>::namespaced(client.clone(), &ns);
    api.create(&PostParams::default(), &sts).await.unwrap();
    configs(&client).delete(CONFIG, &DeleteParams::default()).await.unwrap();
    let patch = json!({"metadata": {"annotations": {"habitat/peer-mode": "pigeon"}}});
    api.patch("bad", &PatchParams::default(), &Patch::Merge(patch)).await.unwrap();
    reregister(&client, &webhook).await;
    let checked = check(&["-n", &ns]);
    let (message, fix) = checked.problem("statefulset.annotations");
    assert!(message.contains("habitat/peer-mode") && message.contains("pigeon"), "{message}");
    assert!(fix.contains("kubectl -n check-annotation annotate statefulset bad"), "{fix}");
}
