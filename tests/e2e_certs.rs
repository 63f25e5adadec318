//! `hab-bootstrap certs ensure` against a real kube-apiserver (run under `scripts/control-plane.sh
//! run`, as `scripts/test` does; skipped with a message otherwise).
//!
//! The rotation test runs the real webhook binary on the certificate files of the Secret, written
//! the way the kubelet writes a mounted Secret (a `..data` symlink swapped atomically), behind the
//! project's webhook configuration (`webhook/`, generated from the chart) with its caBundle written
//! by `certs ensure`, and creates pods in a loop through a forced rotation of the CA and serving
//! certificate and then the retirement of the old CA: not one creation may fail.
//!
//! The configuration registered here is scoped to this test's namespace and to pods labelled
//! `certs-e2e=true`, so it never sees the pods of the other end-to-end tests (whose webhook may be
//! stopped on purpose), and theirs never sees ours.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hab_bootstrap::certs::inspect::{self, Cert};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use support::harness;

const SERVICE: &str = "hab-bootstrap";
const SECRET: &str = "webhook-tls";

/// Registers the project's configuration under `name` for a webhook on 127.0.0.1:`port`, without
/// a caBundle (that is `ensure`'s job), scoped to `ns` and to pods labelled `certs-e2e=true`.
async fn register_scoped(client: &Client, name: &str, port: u16, ns: &str) {
    let text =
        std::fs::read_to_string(harness::repo_file("webhook/mutating-webhook-configuration.yaml")).unwrap();
    let mut config: serde_json::Value = serde_yaml_ng::from_str(&text).unwrap();
    config["metadata"]["name"] = json!(name);
    for hook in config["webhooks"].as_array_mut().unwrap() {
        let path = hook["clientConfig"]["service"]["path"].as_str().unwrap_or("/").to_owned();
        hook["clientConfig"] = json!({"url": format!("https://127.0.0.1:{port}{path}")});
        hook["namespaceSelector"] = json!({"matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "In", "values": [ns]}
        ]});
        if let Some(labels) = hook["objectSelector"]["matchLabels"].as_object_mut() {
            assert!(
                labels.remove("habitat/bootstrap").is_some(),
                "the pod webhook selects on the opt-in label"
            );
            labels.insert("certs-e2e".into(), json!("true"));
        }
    }
    let api = Api::<MutatingWebhookConfiguration>::all(client.clone());
    api.patch(name, &PatchParams::apply("hab-bootstrap-e2e").force(), &Patch::Apply(&config)).await.unwrap();
}

/// Runs `hab-bootstrap certs ensure` (the real binary) and returns (success, stdout + stderr).
async fn certs_ensure(ns: &str, config: &str, secret: &str, extra: &[&str]) -> (bool, String) {
    let out = tokio::process::Command::new(support::webhook_process::binary())
        .args(["certs", "ensure", "--namespace", ns, "--secret", secret, "--service", SERVICE])
        .args(["--webhook-config", config, "--ip", "127.0.0.1", "--propagation-delay", "2s"])
        .args(extra)
        .output()
        .await
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprintln!("certs ensure {extra:?}: {}", text.trim());
    (out.status.success(), text)
}

fn data(secret: &Secret, key: &str) -> Vec<u8> {
    secret.data.as_ref().and_then(|d| d.get(key)).map(|b| b.0.clone()).unwrap_or_default()
}

fn certs_of(pem: &[u8]) -> Vec<Cert> {
    inspect::parse_bundle(std::str::from_utf8(pem).unwrap()).unwrap()
}

/// The caBundle of each webhook of the configuration.
async fn bundles(client: &Client, name: &str) -> Vec<Vec<u8>> {
    let mwc = Api::<MutatingWebhookConfiguration>::all(client.clone()).get(name).await.unwrap();
    mwc.webhooks
        .unwrap_or_default()
        .into_iter()
        .map(|w| w.client_config.ca_bundle.map(|b| b.0).unwrap_or_default())
        .collect()
}

/// A directory written the way the kubelet writes a Secret volume: the files live in a
/// timestamped directory, `..data` points at it, and each name is a symlink through `..data`.
/// An update writes a new directory and renames a new `..data` symlink over the old one.
struct Projection {
    dir: PathBuf,
    generation: u32,
    current: BTreeMap<String, Vec<u8>>,
}

impl Projection {
    fn new(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        Self { dir: dir.to_owned(), generation: 0, current: BTreeMap::new() }
    }

    /// Projects `items` of the Secret (the chart mounts only tls.crt and tls.key); true if changed.
    fn update(&mut self, secret: &Secret, items: &[&str]) -> bool {
        let files: BTreeMap<String, Vec<u8>> =
            items.iter().map(|k| ((*k).to_owned(), data(secret, k))).collect();
        if files == self.current {
            return false;
        }
        self.generation += 1;
        let target = format!("..{}_{}", std::process::id(), self.generation);
        let new_dir = self.dir.join(&target);
        std::fs::create_dir(&new_dir).unwrap();
        for (name, bytes) in &files {
            std::fs::write(new_dir.join(name), bytes).unwrap();
        }
        let tmp = self.dir.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&target, &tmp).unwrap();
        let old = std::fs::read_link(self.dir.join("..data")).ok();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
        for name in files.keys() {
            let link = self.dir.join(name);
            if std::fs::symlink_metadata(&link).is_err() {
                std::os::unix::fs::symlink(format!("..data/{name}"), &link).unwrap();
            }
        }
        if let Some(old) = old {
            let _ = std::fs::remove_dir_all(self.dir.join(old));
        }
        self.current = files;
        true
    }
}

/// The real webhook binary serving the projected files.
struct WebhookProcess {
    child: Child,
    port: u16,
    admin_port: u16,
    log: PathBuf,
}

impl WebhookProcess {
    fn start(certs: &Path, port: u16, log: PathBuf) -> Self {
        let admin_port = harness::free_port();
        let child = harness::webhook_command(port, admin_port, certs, std::fs::File::create(&log).unwrap())
            .args(["--shutdown-delay", "0s", "--drain-timeout", "2s", "--cert-reload-interval", "1s"])
            .spawn()
            .unwrap();
        let w = Self { child, port, admin_port, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        while harness::http_get(w.admin_port, "/readyz").is_none_or(|(s, _)| s != 200) {
            assert!(Instant::now() < deadline, "webhook not ready; log {}", w.log.display());
            std::thread::sleep(Duration::from_millis(100));
        }
        w
    }

    /// Pods admitted as "not a StatefulSet pod" (ours are bare pods): proof the webhook was called.
    fn admitted(&self) -> u64 {
        let metrics = harness::http_get(self.admin_port, "/metrics").map(|(_, b)| b).unwrap_or_default();
        metrics
            .lines()
            .find(|l| l.starts_with("hab_bootstrap_skips_total") && l.contains("no_statefulset_owner"))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0)
    }

    /// Does the webhook serve a certificate that `ca_pem` alone verifies?
    async fn serves_cert_of(&self, ca_pem: &[u8]) -> bool {
        let mut roots = rustls::RootCertStore::empty();
        for cert in certs_of(ca_pem) {
            roots.add(rustls_pki_types::CertificateDer::from(cert.der)).unwrap();
        }
        let config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let Ok(tcp) = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await else { return false };
        let name =
            rustls_pki_types::ServerName::IpAddress("127.0.0.1".parse::<std::net::IpAddr>().unwrap().into());
        connector.connect(name, tcp).await.is_ok()
    }
}

impl Drop for WebhookProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Creates a pod every `every` until stopped; returns (created, failures).
fn pod_loop(
    client: Client,
    ns: String,
    every: Duration,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(u32, Vec<String>)> {
    tokio::spawn(async move {
        let api = Api::<Pod>::namespaced(client, &ns);
        let (mut created, mut failures) = (0, Vec::new());
        let mut i = 0;
        while !stop.load(Ordering::SeqCst) {
            i += 1;
            let name = format!("p-{i}");
            let pod: Pod = serde_json::from_value(json!({
                "metadata": {"name": name, "labels": {
                    "certs-e2e": "true", "statefulset.kubernetes.io/pod-name": name}},
                "spec": {"terminationGracePeriodSeconds": 0,
                         "containers": [{"name": "c", "image": "pause:e2e"}]}
            }))
            .unwrap();
            match api.create(&PostParams::default(), &pod).await {
                Ok(_) => created += 1,
                Err(e) => failures.push(format!("{name}: {e}")),
            }
            tokio::time::sleep(every).await;
        }
        (created, failures)
    })
}

/// The first pod creation that goes through: the configuration has taken effect.
async fn wait_admitting(client: &Client, ns: &str) {
    let api = Api::<Pod>::namespaced(client.clone(), ns);
    let deadline = Instant::now() + Duration::from_secs(30);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "probe", "labels": {"certs-e2e": "true", "statefulset.kubernetes.io/pod-name": "probe"}},
        "spec": {"containers": [{"name": "c", "image": "pause:e2e"}]}
    }))
    .unwrap();
    loop {
        match api.create(&PostParams { dry_run: true, ..Default::default() }, &pod).await {
            Ok(_) => return,
            Err(e) => assert!(Instant::now() < deadline, "never admitted: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn cleanup(client: &Client, config: &str, ns: &str) {
    let _ = Api::<MutatingWebhookConfiguration>::all(client.clone())
        .delete(config, &DeleteParams::default())
        .await;
    let _ = Api::<Namespace>::all(client.clone()).delete(ns, &DeleteParams::background()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a control plane: run scripts/test"]
async fn ensure_creates_rotates_and_retires_without_failing_one_pod() {
    if !harness::enabled() {
        return;
    }
    hab_bootstrap::install_crypto_provider();
    let client = harness::client().await;
    let ns = harness::namespace(&client, "certs-e2e").await;
    let config = "hab-bootstrap-certs-e2e";
    let port = harness::free_port();
    register_scoped(&client, config, port, &ns).await;
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
    let configs = Api::<MutatingWebhookConfiguration>::all(client.clone());

    // 1. First run: a CA, a serving certificate, the caBundle in every webhook.
    let (ok, out) = certs_ensure(&ns, config, SECRET, &[]).await;
    assert!(ok, "{out}");
    let secret = secrets.get(SECRET).await.unwrap();
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
    let keys: Vec<_> = secret.data.as_ref().unwrap().keys().cloned().collect();
    assert_eq!(keys, ["ca.crt", "ca.key", "tls.crt", "tls.key"]);
    let mwc = configs.get(config).await.unwrap();
    let owner = &secret.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), Some(&owner.uid)),
        ("MutatingWebhookConfiguration", mwc.metadata.uid.as_ref())
    );
    let ca1 = data(&secret, "ca.crt");
    assert_eq!(certs_of(&ca1).len(), 1);
    assert_eq!(bundles(&client, config).await, vec![ca1.clone(); 2], "both webhooks carry the CA");
    let serving = &certs_of(&data(&secret, "tls.crt"))[0];
    let want_dns: std::collections::BTreeSet<String> =
        [SERVICE.to_owned(), format!("{SERVICE}.{ns}"), format!("{SERVICE}.{ns}.svc")].into();
    assert_eq!(serving.names.dns, want_dns);
    assert!(inspect::signed_by(serving, &certs_of(&ca1)[0]));
    // The caBundle is the only field of our manager; the other manager kept the rest.
    let managers = mwc.metadata.managed_fields.clone().unwrap_or_default();
    let ours =
        managers.iter().find(|m| m.manager.as_deref() == Some("hab-bootstrap-certs")).expect("our manager");
    assert_eq!(ours.operation.as_deref(), Some("Apply"));
    let owned = serde_json::to_string(&ours.fields_v1).unwrap();
    assert!(owned.contains("f:caBundle"), "{owned}");
    for other in ["f:rules", "f:url", "f:failurePolicy", "f:namespaceSelector", "f:labels"] {
        assert!(!owned.contains(other), "we own {other}: {owned}");
    }

    // 2. Second run: nothing to do, nothing written.
    let (secret_rv, mwc_rv) =
        (secret.metadata.resource_version.clone(), mwc.metadata.resource_version.clone());
    let (ok, out) = certs_ensure(&ns, config, SECRET, &[]).await;
    assert!(ok && out.contains("up to date"), "{out}");
    assert_eq!(secrets.get(SECRET).await.unwrap().metadata.resource_version, secret_rv);
    assert_eq!(configs.get(config).await.unwrap().metadata.resource_version, mwc_rv);

    // 3. The webhook serves the Secret's files, kept up to date like a kubelet would.
    let dir = std::env::temp_dir().join(format!("hab-bootstrap-e2e-certs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut projection = Projection::new(&dir.join("tls"));
    projection.update(&secret, &["tls.crt", "tls.key"]);
    let webhook = WebhookProcess::start(&dir.join("tls"), port, dir.join("webhook.log"));
    wait_admitting(&client, &ns).await;
    let stop_kubelet = Arc::new(AtomicBool::new(false));
    let kubelet = {
        let (secrets, stop) = (secrets.clone(), stop_kubelet.clone());
        tokio::spawn(async move {
            let mut swaps = 0;
            while !stop.load(Ordering::SeqCst) {
                if let Ok(s) = secrets.get(SECRET).await
                    && projection.update(&s, &["tls.crt", "tls.key"])
                {
                    swaps += 1;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            swaps
        })
    };
    let stop_pods = Arc::new(AtomicBool::new(false));
    let pods = pod_loop(client.clone(), ns.clone(), Duration::from_millis(150), stop_pods.clone());
    tokio::time::sleep(Duration::from_secs(3)).await;

    // 4. Forced rotation: renew-before longer than any lifetime.
    let (ok, out) = certs_ensure(&ns, config, SECRET, &["--renew-before", "10y"]).await;
    assert!(ok && out.contains("new CA") && out.contains("new serving certificate"), "{out}");
    let rotated = secrets.get(SECRET).await.unwrap();
    let bundle = certs_of(&data(&rotated, "ca.crt"));
    assert_eq!(bundle.len(), 2, "new and old CA trusted during the overlap");
    assert_eq!(bundle[1].der, certs_of(&ca1)[0].der, "the old CA is still there");
    assert_ne!(bundle[0].der, bundle[1].der);
    let new_serving = &certs_of(&data(&rotated, "tls.crt"))[0];
    assert!(inspect::signed_by(new_serving, &bundle[0]), "the serving certificate moved to the new CA");
    assert_eq!(bundles(&client, config).await, vec![data(&rotated, "ca.crt"); 2]);

    // The replica picks the new certificate up from the swapped symlink.
    let new_ca_pem = bundle[0].pem.clone().into_bytes();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !webhook.serves_cert_of(&new_ca_pem).await {
        assert!(Instant::now() < deadline, "the webhook never served the new certificate");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    // 5. The old CA retires (overlap over): the bundle shrinks to the new CA alone.
    let (ok, out) = certs_ensure(&ns, config, SECRET, &["--overlap", "0s"]).await;
    assert!(ok && out.contains("no longer trusted"), "{out}");
    let retired = secrets.get(SECRET).await.unwrap();
    assert_eq!(certs_of(&data(&retired, "ca.crt")).len(), 1);
    assert_eq!(data(&retired, "tls.crt"), data(&rotated, "tls.crt"), "the serving certificate stays");
    assert_eq!(bundles(&client, config).await, vec![data(&retired, "ca.crt"); 2]);
    tokio::time::sleep(Duration::from_secs(3)).await;

    stop_pods.store(true, Ordering::SeqCst);
    let (created, failures) = pods.await.unwrap();
    stop_kubelet.store(true, Ordering::SeqCst);
    let swaps = kubelet.await.unwrap();
    let admitted = webhook.admitted();
    eprintln!(
        "created {created} pods, {} failed; {swaps} Secret swaps; webhook admitted {admitted}",
        failures.len()
    );
    assert!(failures.is_empty(), "pod creations failed during the rotation: {failures:#?}");
    assert!(created >= 30, "only {created} pods created");
    assert!(swaps >= 1, "the projected files never changed");
    assert!(admitted >= u64::from(created), "the webhook saw {admitted} of {created} pods");
    drop(webhook);
    cleanup(&client, config, &ns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a control plane: run scripts/test"]
async fn ensure_refuses_what_it_does_not_own_and_races_safely() {
    if !harness::enabled() {
        return;
    }
    let client = harness::client().await;
    let ns = harness::namespace(&client, "certs-e2e-guard").await;
    let config = "hab-bootstrap-certs-e2e-guard";

    // No configuration yet: a clear error, nothing created.
    let (ok, out) = certs_ensure(&ns, config, SECRET, &[]).await;
    assert!(!ok && out.contains("not found"), "{out}");
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
    assert!(secrets.get_opt(SECRET).await.unwrap().is_none());
    register_scoped(&client, config, harness::free_port(), &ns).await;

    // A Secret someone else made is left alone.
    let foreign: Secret =
        serde_json::from_value(json!({"metadata": {"name": "theirs"}, "stringData": {"tls.crt": "x"}}))
            .unwrap();
    secrets.create(&PostParams::default(), &foreign).await.unwrap();
    let (ok, out) = certs_ensure(&ns, config, "theirs", &[]).await;
    assert!(!ok && out.contains("not created by"), "{out}");
    assert_eq!(data(&secrets.get("theirs").await.unwrap(), "tls.crt"), b"x");

    // Three copies racing on a fresh Secret (a rolling update): all succeed, one CA wins.
    let runs = futures::future::join_all((0..3).map(|_| certs_ensure(&ns, config, SECRET, &[]))).await;
    for (ok, out) in &runs {
        assert!(ok, "{out}");
    }
    let secret = secrets.get(SECRET).await.unwrap();
    let bundle = data(&secret, "ca.crt");
    assert_eq!(certs_of(&bundle).len(), 1);
    assert_eq!(bundles(&client, config).await, vec![bundle.clone(); 2]);
    assert!(inspect::signed_by(&certs_of(&data(&secret, "tls.crt"))[0], &certs_of(&bundle)[0]));
    cleanup(&client, config, &ns).await;
}

/// `certs watch` with its 10-minute interval repairs a caBundle wiped by a `kubectl replace` of the
/// configuration, and a deleted Secret, within seconds: it watches both objects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a control plane: run scripts/test"]
async fn watch_repairs_a_wiped_ca_bundle_within_seconds() {
    if !harness::enabled() {
        return;
    }
    let client = harness::client().await;
    let ns = harness::namespace(&client, "certs-e2e-repair").await;
    let config = "hab-bootstrap-certs-e2e-repair";
    register_scoped(&client, config, harness::free_port(), &ns).await;
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _watch = Killed(
        std::process::Command::new(env!("CARGO_BIN_EXE_hab-bootstrap"))
            .args(["certs", "watch", "--namespace", &ns, "--secret", SECRET, "--service", SERVICE])
            .args(["--webhook-config", config, "--ip", "127.0.0.1", "--interval", "10m"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let want = harness::eventually(Duration::from_secs(30), "the first caBundle", || async {
        let b = bundles(&client, config).await;
        (b.len() == 2 && b.iter().all(|x| !x.is_empty())).then_some(b)
    })
    .await;
    let configs = Api::<MutatingWebhookConfiguration>::all(client.clone());
    let repaired_in = |started: Instant| {
        let (client, want) = (client.clone(), want.clone());
        async move {
            loop {
                if bundles(&client, config).await == want {
                    return started.elapsed();
                }
                assert!(started.elapsed() < Duration::from_secs(60), "not repaired in 60 s");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let mut times = Vec::new();
    for _ in 0..3 {
        // What `kubectl replace` of the plain manifest does: the configuration without caBundles.
        let mut mwc = configs.get(config).await.unwrap();
        for hook in mwc.webhooks.iter_mut().flatten() {
            hook.client_config.ca_bundle = None;
        }
        mwc.metadata.managed_fields = None;
        configs.replace(config, &PostParams::default(), &mwc).await.unwrap();
        assert!(bundles(&client, config).await.iter().all(|b| b.is_empty()));
        times.push(repaired_in(Instant::now()).await);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    times.sort();
    eprintln!(
        "caBundle wiped by a replace, repaired by certs watch (interval 10m) in {times:?} (median {:?})",
        times[1]
    );
    assert!(times[2] < Duration::from_secs(5), "repairs took {times:?}");
    // A deleted Secret is recreated at once too (with a new CA, published in the caBundle).
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
    secrets.delete(SECRET, &DeleteParams::default()).await.unwrap();
    let deleted = Instant::now();
    harness::eventually(Duration::from_secs(30), "the Secret recreated", || async {
        secrets.get_opt(SECRET).await.unwrap().map(|_| ())
    })
    .await;
    eprintln!("deleted Secret recreated in {:?}", deleted.elapsed());
    assert!(deleted.elapsed() < Duration::from_secs(10));
    cleanup(&client, config, &ns).await;
}
