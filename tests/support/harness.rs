//! The end-to-end harness: a real kube-apiserver, etcd, controller-manager, scheduler and kwok
//! started by `scripts/control-plane.sh run` (which exports `KUBECONFIG` and `CP_APISERVER_URL`),
//! our webhook as a local process with a generated certificate, registered from `webhook/` with a
//! URL client config and a real caBundle.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use hab_bootstrap::certs::CertificateAuthority;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

pub const CLUSTER_DOMAIN: &str = "hab.test";

/// The shared webhook process and what it needs to be restarted.
pub struct Webhook {
    pub port: u16,
    pub admin_port: u16,
    pub ca_pem: String,
    ca: CertificateAuthority,
    dir: PathBuf,
    /// Flags added to every start.
    args: Vec<String>,
    child: Option<Child>,
    /// The build it runs and extra environment for it (e.g. an allocator setting, or `RUST_LOG`,
    /// which it overrides), applied from the next `start` on.
    pub binary: PathBuf,
    pub env: Vec<(String, String)>,
}

pub use super::control_plane::enabled;

pub use super::webhook_process::{free_port, webhook_command, webhook_command_of};

impl Webhook {
    fn new() -> Self {
        hab_bootstrap::install_crypto_provider();
        let dir = std::env::temp_dir().join(format!("hab-bootstrap-e2e-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // Valid long enough that `hab-bootstrap check` finds nothing to warn about (30 days).
        let ca = CertificateAuthority::generate("hab-bootstrap e2e CA", time::Duration::days(365)).unwrap();
        let w = Self {
            port: free_port(),
            admin_port: free_port(),
            ca_pem: ca.cert_pem.clone(),
            ca,
            dir,
            args: Vec::new(),
            child: None,
            binary: super::webhook_process::binary(),
            env: Vec::new(),
        };
        w.serve_certificate_valid_for(time::Duration::days(90));
        hab_bootstrap::certs::write(&w.dir.join("ca.crt"), &w.ca_pem, 0o644).unwrap();
        w
    }

    /// Another replica: the same certificate and flags, its own ports, started, not registered (the
    /// API server calls the first one only).
    pub fn replica(&self) -> Self {
        let mut other = Self {
            port: free_port(),
            admin_port: free_port(),
            ca_pem: self.ca_pem.clone(),
            ca: CertificateAuthority::from_pem(&self.ca.cert_pem, &self.ca.key_pem).unwrap(),
            dir: self.dir.clone(),
            args: self.args.clone(),
            child: None,
            binary: self.binary.clone(),
            env: self.env.clone(),
        };
        other.start();
        other
    }

    /// Writes a new serving certificate from the same CA, valid for `valid_for`; the webhook
    /// serves it within its reload interval (2 s).
    pub fn serve_certificate_valid_for(&self, valid_for: time::Duration) {
        let serving =
            self.ca.issue(&["localhost".into()], &["127.0.0.1".parse().unwrap()], valid_for).unwrap();
        hab_bootstrap::certs::write(&self.dir.join("tls.crt"), &serving.cert_pem, 0o644).unwrap();
        hab_bootstrap::certs::write(&self.dir.join("tls.key"), &serving.key_pem, 0o600).unwrap();
    }

    /// The serving certificate and key files (another server may serve them: the CA trusts them
    /// for 127.0.0.1 on any port).
    pub fn tls_files(&self) -> (PathBuf, PathBuf) {
        (self.dir.join("tls.crt"), self.dir.join("tls.key"))
    }

    pub fn cert_reloader(&self) -> std::sync::Arc<hab_bootstrap::webhook::server::tls::CertReloader> {
        hab_bootstrap::webhook::server::tls::CertReloader::load(
            self.dir.join("tls.crt"),
            self.dir.join("tls.key"),
        )
        .unwrap()
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("webhook.log")
    }

    pub fn start(&mut self) {
        if self.child.is_some() {
            return;
        }
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path()).unwrap();
        let child = webhook_command_of(&self.binary, self.port, self.admin_port, &self.dir, log)
            .args(["--shutdown-delay", "0s", "--drain-timeout", "5s"])
            .args(["--cluster-domain", CLUSTER_DOMAIN, "--sidecar-image", "hab-bootstrap:e2e"])
            .args(&self.args)
            .env("RUST_LOG", "info,hab_bootstrap=debug")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .spawn()
            .expect("starting the webhook");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.ready() {
            assert!(
                Instant::now() < deadline,
                "webhook not ready in 30 s; log: {}",
                self.log_path().display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM and wait, as Kubernetes stops a pod.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(15);
            while child.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// The running process's id, to read its `/proc/<pid>/status`.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn ready(&self) -> bool {
        http_get(self.admin_port, "/readyz").is_some_and(|(status, _)| status == 200)
    }

    pub fn metrics(&self) -> String {
        http_get(self.admin_port, "/metrics").map(|(_, body)| body).unwrap_or_default()
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A minimal HTTP/1.0 GET to 127.0.0.1 (the admin port is plain HTTP).
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.split_whitespace().nth(1)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Some((status, body))
}

/// Starts the webhook and registers the project's configuration for it.
pub async fn start_webhook(client: &Client) -> Webhook {
    start_webhook_with(client, &[]).await
}

/// [`start_webhook`] with more flags.
pub async fn start_webhook_with(client: &Client, args: &[&str]) -> Webhook {
    let mut w = Webhook::new();
    w.args = args.iter().map(|a| a.to_string()).collect();
    w.start();
    register(
        client,
        &w.ca_pem,
        w.port,
        "hab-bootstrap",
        &repo_file("webhook/mutating-webhook-configuration.yaml"),
    )
    .await;
    wait_until_effective(client).await;
    w
}

pub fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The chart's policy on the webhook's Secrets and its binding, as `webhook/` has them, in a file
/// of their own for `kubectl apply -f`: what `check` expects of a healthy install. It restricts the
/// chart's webhook ServiceAccount only, not the test webhook.
pub fn webhook_secrets_policy() -> tempfile::NamedTempFile {
    let all = std::fs::read_to_string(repo_file("webhook/admission-policies.yaml")).unwrap();
    let ours: Vec<&str> =
        all.split("\n---\n").filter(|doc| doc.contains("name: hab-bootstrap-webhook-secrets\n")).collect();
    assert_eq!(ours.len(), 2, "the policy and its binding");
    let file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(file.path(), ours.join("\n---\n")).unwrap();
    file
}

pub async fn client() -> Client {
    Client::try_default().await.expect("a client from KUBECONFIG")
}

/// Registers a webhook configuration file with every clientConfig turned into a URL on
/// 127.0.0.1:`port` (keeping each path) and the caBundle of our CA: the selectors, policies and
/// rules are the ones users install.
pub async fn register(client: &Client, ca_pem: &str, port: u16, name: &str, file: &Path) {
    let text = std::fs::read_to_string(file).unwrap();
    let mut config: MutatingWebhookConfiguration = serde_yaml_ng::from_str(&text).unwrap();
    config.metadata.name = Some(name.to_owned());
    for hook in config.webhooks.iter_mut().flatten() {
        let path = hook.client_config.service.as_ref().and_then(|s| s.path.clone()).unwrap_or_default();
        hook.client_config.service = None;
        hook.client_config.url = Some(format!("https://127.0.0.1:{port}{path}"));
        hook.client_config.ca_bundle = Some(ByteString(ca_pem.as_bytes().to_vec()));
    }
    let api = Api::<MutatingWebhookConfiguration>::all(client.clone());
    api.patch(name, &PatchParams::apply("hab-bootstrap-e2e").force(), &Patch::Apply(&config)).await.unwrap();
}

/// Webhook configurations take effect asynchronously: wait until a dry-run StatefulSet comes back
/// labelled by us.
pub async fn wait_until_effective(client: &Client) {
    let ns = namespace(client, "e2e-probe").await;
    let api = Api::<k8s_openapi::api::apps::v1::StatefulSet>::namespaced(client.clone(), &ns);
    let sts = super::objects::statefulset("probe", "probe", 1, &[("habitat/bootstrap", "true")]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let created = api.create(&PostParams { dry_run: true, ..Default::default() }, &sts).await.unwrap();
        let labels = created.spec.unwrap().template.metadata.unwrap().labels.unwrap();
        if labels.get("habitat/bootstrap").map(String::as_str) == Some("true") {
            return;
        }
        assert!(Instant::now() < deadline, "the webhook configuration never took effect");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Creates a namespace (labels optional) and waits for its default ServiceAccount.
pub async fn namespace_with(client: &Client, name: &str, labels: serde_json::Value) -> String {
    let api = Api::<Namespace>::all(client.clone());
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap();
    api.patch(name, &PatchParams::apply("hab-bootstrap-e2e").force(), &Patch::Apply(&ns)).await.unwrap();
    let sa = Api::<ServiceAccount>::namespaced(client.clone(), name);
    let deadline = Instant::now() + Duration::from_secs(30);
    while sa.get_opt("default").await.unwrap().is_none() {
        assert!(Instant::now() < deadline, "no default ServiceAccount in {name}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    name.to_owned()
}

pub async fn namespace(client: &Client, name: &str) -> String {
    namespace_with(client, name, json!({})).await
}

/// Polls `f` until it returns Some, or fails after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
