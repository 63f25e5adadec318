//! The role sidecar against a real API server (started by `scripts/control-plane.sh run`): the real
//! `hab-bootstrap sidecar` binary, authenticated as a ServiceAccount of `examples/sidecar-rbac.yaml`
//! with a token bound to its pod, under `examples/sidecar-admission-policy.yaml`, reading a
//! stand-in Supervisor that serves the captured census fixtures. No webhook is registered here
//! (tests/e2e does that), and every object lives in this binary's own namespaces.
//!
//! `figures` (ignored; `scripts/sidecar-figures.sh`) measures the numbers of the closing note of
//! issue 4 and prints them; it asserts none of them.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::{Value, json};
use support::supervisor::{Reply, StandInSupervisor};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The stand-in's fixtures are of service group `roletest.prod`.
const GROUP: &str = "roletest.prod";
const SA: &str = "habitat";
const POLICY: &str = "hab-bootstrap-sidecar-own-pod";
const RBAC_FILE: &str = "examples/sidecar-rbac.yaml";
const POLICY_FILE: &str = "examples/sidecar-admission-policy.yaml";
const WAIT: Duration = Duration::from_secs(60);

// ------------------------------------------------------------------------------------------------
// The cluster side
// ------------------------------------------------------------------------------------------------

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

async fn admin_client() -> Client {
    hab_bootstrap::install_crypto_provider();
    Client::try_default().await.expect("a client from KUBECONFIG")
}

/// Runs the control plane's kubectl (users apply the example files with kubectl, so do we).
fn kubectl(args: &[&str]) -> String {
    let bin = std::env::var_os("CP_BIN_DIR")
        .map_or_else(|| PathBuf::from("kubectl"), |d| Path::new(&d).join("kubectl"));
    let out = std::process::Command::new(&bin).args(args).output().expect("running kubectl");
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The shipped RBAC in `ns` and the shipped policy, exactly as a user applies them.
fn apply_examples(namespaces: &[&str]) {
    for ns in namespaces {
        kubectl(&["apply", "-n", ns, "-f", repo_file(RBAC_FILE).to_str().unwrap()]);
    }
    kubectl(&["apply", "-f", repo_file(POLICY_FILE).to_str().unwrap()]);
}

async fn namespace(client: &Client, name: &str) {
    let api = Api::<Namespace>::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    api.patch(name, &PatchParams::apply("hab-bootstrap-e2e-sidecar").force(), &Patch::Apply(&ns))
        .await
        .unwrap();
}

/// Polls `f` until it returns Some, or fails after `timeout` naming `what`.
async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A pod that only exists for kwok to run: a container image nobody pulls, no grace period.
fn plain_pod(name: &str, service_account: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "serviceAccountName": service_account,
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "supervisor", "image": "core/redis:e2e"}],
        }
    }))
    .unwrap()
}

fn pod_ip(pod: &Pod) -> Option<Ipv4Addr> {
    pod.status.as_ref()?.pod_ip.as_deref()?.parse().ok()
}

fn is_running(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        && pod_ip(pod).is_some()
}

async fn create_running(pods: &Api<Pod>, pod: &Pod) -> Pod {
    let name = pod.metadata.name.clone().unwrap();
    pods.create(&PostParams::default(), pod).await.unwrap();
    wait_running(pods, &name).await
}

async fn wait_running(pods: &Api<Pod>, name: &str) -> Pod {
    eventually(WAIT, &format!("pod {name} Running with an IP"), || async {
        pods.get_opt(name).await.ok()?.filter(is_running)
    })
    .await
}

fn label_of(pod: &Pod) -> Option<String> {
    pod.metadata.labels.as_ref()?.get("role").cloned()
}

async fn stored_label(pods: &Api<Pod>, name: &str) -> Option<String> {
    label_of(&pods.get(name).await.unwrap())
}

async fn wait_label(pods: &Api<Pod>, name: &str, want: Option<&str>) {
    let what = format!("the stored pod {name} to have role label {want:?}");
    eventually(WAIT, &what, || async { (stored_label(pods, name).await.as_deref() == want).then_some(()) })
        .await;
}

/// A ServiceAccount token from the TokenRequest API; bound to `pod` when given, as the kubelet's
/// projected token is (that binding is what puts the pod's name in the request's user info).
async fn token(admin: &Client, ns: &str, service_account: &str, pod: Option<&Pod>) -> String {
    support::pod_token::service_account_token(admin, ns, service_account, pod).await.unwrap()
}

async fn client_from(kubeconfig: &Path) -> Client {
    let config = Config::from_custom_kubeconfig(
        Kubeconfig::read_from(kubeconfig).unwrap(),
        &KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    Client::try_from(config).unwrap()
}

/// A kubeconfig and a client for `service_account`, with a token bound to `pod` if given.
async fn identity(
    admin: &Client,
    dir: &Path,
    ns: &str,
    service_account: &str,
    pod: Option<&Pod>,
) -> (PathBuf, Client) {
    let name = pod.and_then(|p| p.metadata.name.clone()).unwrap_or_else(|| "unbound".into());
    let path = dir.join(format!("kubeconfig-{service_account}-{name}"));
    support::pod_token::write_token_kubeconfig(&path, &token(admin, ns, service_account, pod).await, ns);
    let client = client_from(&path).await;
    (path, client)
}

fn status_of(result: &Result<Pod, kube::Error>) -> Option<(u16, &str)> {
    match result {
        Err(kube::Error::Api(status)) => Some((status.code, status.message.as_str())),
        _ => None,
    }
}

#[track_caller]
fn assert_refused_by_policy(result: &Result<Pod, kube::Error>, what: &str, message: &str) {
    let Some((code, text)) = status_of(result) else {
        panic!("{what}: expected a refusal by {POLICY}, got {result:?}");
    };
    assert!(matches!(code, 403 | 422), "{what}: HTTP {code}: {text}");
    assert!(text.contains(&format!("ValidatingAdmissionPolicy '{POLICY}'")), "{what}: {text}");
    assert!(text.contains(message), "{what}: {text:?} should say {message:?}");
}

#[track_caller]
fn assert_refused_by_rbac(result: &Result<Pod, kube::Error>, what: &str, verb: &str) {
    let Some((code, text)) = status_of(result) else {
        panic!("{what}: expected a refusal by RBAC, got {result:?}");
    };
    assert_eq!(code, 403, "{what}: {text}");
    assert!(text.contains(&format!("cannot {verb} resource \"pods\"")), "{what}: {text}");
}

async fn merge(pods: &Api<Pod>, name: &str, patch: Value) -> Result<Pod, kube::Error> {
    pods.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await
}

fn role_patch(value: Value) -> Value {
    json!({"metadata": {"labels": {"role": value}}})
}

// ------------------------------------------------------------------------------------------------
// The sidecar process
// ------------------------------------------------------------------------------------------------

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let code = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Some((code, body))
}

/// The binary under test: this build's, or HAB_SIDECAR_BIN (e.g. the image's static musl build).
fn sidecar_binary() -> PathBuf {
    std::env::var_os("HAB_SIDECAR_BIN")
        .map_or_else(|| env!("CARGO_BIN_EXE_hab-bootstrap").into(), PathBuf::from)
}

struct Sidecar {
    child: tokio::process::Child,
    admin_port: u16,
    log: PathBuf,
}

impl Sidecar {
    /// `hab-bootstrap sidecar` as the webhook injects it (flags and downward-API variables), with
    /// `kubeconfig` in place of the mounted ServiceAccount token.
    fn start(kubeconfig: &Path, ns: &str, pod: &str, census_url: &str, extra: &[&str], log: PathBuf) -> Self {
        let admin_port = free_port();
        let log_file = std::fs::File::create(&log).unwrap();
        let mut command = tokio::process::Command::new(sidecar_binary());
        command
            .args(["sidecar", "--census-url", census_url, "--service-group", GROUP, "--label-key", "role"])
            .args(["--metrics-listen", &format!("127.0.0.1:{admin_port}")])
            .args(extra)
            .env_clear()
            .env("KUBECONFIG", kubeconfig)
            .env("HABITAT_BOOTSTRAP_POD_NAME", pod)
            .env("HABITAT_BOOTSTRAP_POD_NAMESPACE", ns)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .kill_on_drop(true);
        // If this test process dies, the sidecar goes with it.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = command.spawn().expect("the sidecar starts");
        Self { child, admin_port, log }
    }

    fn pid(&self) -> u32 {
        self.child.id().expect("the sidecar is running")
    }

    async fn metrics(&self) -> String {
        http_get(self.admin_port, "/metrics").await.map(|(_, body)| body).unwrap_or_default()
    }

    /// The value of one exposition line (`name{labels}`), 0 when absent.
    async fn metric(&self, series: &str) -> f64 {
        metric_value(&self.metrics().await, series)
    }

    /// SIGTERM, as the kubelet stops a container, and the exit status.
    async fn terminate(mut self) -> ExitStatus {
        let pid = self.pid() as i32;
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("the sidecar exits after SIGTERM")
            .unwrap()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn metric_value(exposition: &str, series: &str) -> f64 {
    exposition
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

// ------------------------------------------------------------------------------------------------
// The scenarios
// ------------------------------------------------------------------------------------------------

const NS: &str = "sidecar-e2e";
const NS_OTHER: &str = "sidecar-e2e-other";
const NS_RING: &str = "sidecar-e2e-ring";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a control plane: run scripts/test"]
async fn e2e_sidecar() {
    if !support::control_plane::enabled() {
        return;
    }
    let started = Instant::now();
    let admin = admin_client().await;
    let dir = tempfile::tempdir().unwrap();
    for ns in [NS, NS_OTHER, NS_RING] {
        namespace(&admin, ns).await;
    }
    apply_examples(&[NS, NS_OTHER, NS_RING]);

    let pods = Api::<Pod>::namespaced(admin.clone(), NS);
    let solo = create_running(&pods, &plain_pod("solo", SA)).await;
    create_running(&pods, &plain_pod("neighbour", SA)).await;
    create_running(&Api::namespaced(admin.clone(), NS_OTHER), &plain_pod("elsewhere", SA)).await;
    let (kubeconfig, sidecar_client) = identity(&admin, dir.path(), NS, SA, Some(&solo)).await;
    wait_until_policy_effective(&admin, &sidecar_client).await;
    eprintln!("[{:>5.1?}] RBAC and policy applied and in effect", started.elapsed());

    labels_follow_the_census(&admin, &kubeconfig, dir.path()).await;
    eprintln!("[{:>5.1?}] the label follows the census on the stored pod", started.elapsed());
    least_privilege(&admin, &sidecar_client, dir.path()).await;
    eprintln!("[{:>5.1?}] RBAC and the policy allow only the own pod's role label", started.elapsed());
    watch_file_follows_the_statefulset(&admin, dir.path()).await;
    eprintln!("[{:>5.1?}] the watch file follows the StatefulSet, never partial", started.elapsed());

    for ns in [NS, NS_OTHER, NS_RING] {
        let _ = Api::<Namespace>::all(admin.clone()).delete(ns, &DeleteParams::default()).await;
    }
    // The policy stays: it constrains only holders of the sidecar Role, and `figures` may be using it.
}

/// Policies take effect asynchronously: until the sidecar's patch of another pod is refused by it.
async fn wait_until_policy_effective(admin: &Client, sidecar: &Client) {
    let as_sidecar = Api::<Pod>::namespaced(sidecar.clone(), NS);
    let as_admin = Api::<Pod>::namespaced(admin.clone(), NS);
    eventually(WAIT, "the admission policy to take effect", || async {
        let result = merge(&as_sidecar, "neighbour", role_patch(json!("leader"))).await;
        if result.is_ok() {
            merge(&as_admin, "neighbour", role_patch(Value::Null)).await.unwrap();
            return None;
        }
        assert_refused_by_policy(
            &result,
            "another pod's label",
            "may change only its own pod (solo), not neighbour",
        );
        Some(())
    })
    .await;
}

/// The label appears (follower), changes (leader), and disappears: an election longer than the
/// grace, the Supervisor unreachable, SIGTERM. Checked on the stored pod each time.
async fn labels_follow_the_census(admin: &Client, kubeconfig: &Path, dir: &Path) {
    const GRACE: Duration = Duration::from_secs(2);
    let pods = Api::<Pod>::namespaced(admin.clone(), NS);
    let mut supervisor = StandInSupervisor::start(Reply::census("follower")).await;
    let sidecar = Sidecar::start(
        kubeconfig,
        NS,
        "solo",
        &supervisor.url(),
        &["--interval", "250ms", "--unknown-grace", "2s"],
        dir.join("sidecar-solo.log"),
    );
    wait_label(&pods, "solo", Some("follower")).await;
    supervisor.set(Reply::census("leader"));
    wait_label(&pods, "solo", Some("leader")).await;

    supervisor.set(Reply::census("election-in-progress"));
    let election = Instant::now();
    supervisor.wait_requests(3).await;
    if election.elapsed() < GRACE {
        assert_eq!(stored_label(&pods, "solo").await.as_deref(), Some("leader"), "kept during the grace");
    }
    wait_label(&pods, "solo", None).await;
    assert!(election.elapsed() >= GRACE, "removed after {:?}, before the grace", election.elapsed());

    supervisor.set(Reply::census("follower"));
    wait_label(&pods, "solo", Some("follower")).await;
    supervisor.stop();
    wait_label(&pods, "solo", None).await;
    supervisor.restart().await;
    supervisor.set(Reply::census("leader"));
    wait_label(&pods, "solo", Some("leader")).await;

    let metrics = sidecar.metrics().await;
    for (value, count) in [("follower", 2.0), ("leader", 2.0), ("removed", 2.0)] {
        let series = format!("hab_bootstrap_sidecar_label_writes_total{{value=\"{value}\",result=\"ok\"}}");
        assert_eq!(metric_value(&metrics, &series), count, "{series} in\n{metrics}");
    }
    assert!(!metrics.contains("result=\"error\""), "a write was refused:\n{metrics}\n{}", sidecar.log_text());

    let status = sidecar.terminate().await;
    assert!(status.success(), "exit status {status:?}");
    assert_eq!(stored_label(&pods, "solo").await, None, "removed before exiting");
}

/// What the sidecar's identity may do, patching directly with its token: only the role label of
/// its own pod. And what the policy leaves alone: identities without the sidecar Role, and those
/// that also hold everything (cluster-admin).
async fn least_privilege(admin: &Client, sidecar: &Client, dir: &Path) {
    let pods = Api::<Pod>::namespaced(sidecar.clone(), NS);
    merge(&pods, "solo", role_patch(json!("follower"))).await.expect("its own pod's role label");
    merge(&pods, "solo", role_patch(Value::Null)).await.expect("removing its own pod's role label");

    let result = merge(&pods, "neighbour", role_patch(json!("leader"))).await;
    assert_refused_by_policy(
        &result,
        "another pod's role label",
        "may change only its own pod (solo), not neighbour",
    );
    let result = merge(&pods, "solo", json!({"metadata": {"labels": {"app": "hijacked"}}})).await;
    assert_refused_by_policy(
        &result,
        "another label of its pod",
        "may change only the role label of its pod",
    );
    let result = merge(&pods, "solo", role_patch(json!("boss"))).await;
    assert_refused_by_policy(&result, "a role value", "may only be leader or follower");
    let result = merge(&pods, "solo", json!({"metadata": {"annotations": {"x": "y"}}})).await;
    assert_refused_by_policy(&result, "an annotation of its pod", "may not change its pod's annotations");
    let image = json!([{"op": "replace", "path": "/spec/containers/0/image", "value": "evil:latest"}]);
    let result = pods
        .patch("solo", &PatchParams::default(), &Patch::Json::<()>(serde_json::from_value(image).unwrap()))
        .await;
    assert_refused_by_policy(&result, "its pod's image", "may not change its pod's spec");
    let result = merge(&pods, "solo", json!({"spec": {"activeDeadlineSeconds": 60}})).await;
    assert_refused_by_policy(&result, "its pod's spec", "may not change its pod's spec");

    let elsewhere = Api::<Pod>::namespaced(sidecar.clone(), NS_OTHER);
    let result = merge(&elsewhere, "elsewhere", role_patch(json!("leader"))).await;
    assert_refused_by_rbac(&result, "a pod of another namespace", "patch");
    assert_refused_by_rbac(&pods.get("solo").await, "reading a pod", "get");
    let deleted = pods.delete("neighbour", &DeleteParams::default()).await.map(|_| Pod::default());
    assert_refused_by_rbac(&deleted, "deleting a pod", "delete");

    // Events about its pod (a departed predecessor), in its namespace only.
    let event = |ns: &str| -> k8s_openapi::api::events::v1::Event {
        serde_json::from_value(json!({
            "metadata": {"generateName": "solo-"},
            "eventTime": "2026-01-01T00:00:00.000000Z",
            "reportingController": "hab-bootstrap.habitat.sh/sidecar",
            "reportingInstance": "solo",
            "action": "Depart",
            "reason": "PredecessorDeparted",
            "type": "Normal",
            "regarding": {"apiVersion": "v1", "kind": "Pod", "namespace": ns, "name": "solo"},
        }))
        .unwrap()
    };
    Api::<k8s_openapi::api::events::v1::Event>::namespaced(sidecar.clone(), NS)
        .create(&PostParams::default(), &event(NS))
        .await
        .expect("an Event in its namespace");
    let result = Api::<k8s_openapi::api::events::v1::Event>::namespaced(sidecar.clone(), NS_OTHER)
        .create(&PostParams::default(), &event(NS_OTHER))
        .await
        .map(|_| Pod::default());
    let (code, text) = status_of(&result).expect("an Event in another namespace is refused");
    assert_eq!(code, 403, "{text}");
    assert!(text.contains("cannot create resource \"events\""), "{text}");

    let as_admin = Api::<Pod>::namespaced(admin.clone(), NS);
    let (_, unbound) = identity(admin, dir, NS, SA, None).await;
    let result = merge(&Api::namespaced(unbound, NS), "solo", role_patch(json!("leader"))).await;
    assert_refused_by_policy(&result, "a token bound to no pod", "its token is bound to no pod");

    // Not in the policy's scope: an operator with `edit`, and an identity that holds the sidecar
    // Role and cluster-admin, each with a token bound to its own pod.
    kubectl(&["create", "serviceaccount", "-n", NS, "operator"]);
    kubectl(&[
        "create",
        "rolebinding",
        "-n",
        NS,
        "operator-edit",
        "--clusterrole=edit",
        &format!("--serviceaccount={NS}:operator"),
    ]);
    kubectl(&["create", "serviceaccount", "-n", NS, "almighty"]);
    kubectl(&[
        "create",
        "rolebinding",
        "-n",
        NS,
        "almighty-admin",
        "--clusterrole=cluster-admin",
        &format!("--serviceaccount={NS}:almighty"),
    ]);
    kubectl(&[
        "create",
        "rolebinding",
        "-n",
        NS,
        "almighty-sidecar",
        "--role=hab-bootstrap-sidecar",
        &format!("--serviceaccount={NS}:almighty"),
    ]);
    for (account, value) in [("operator", "leader"), ("almighty", "follower")] {
        let own = create_running(&as_admin, &plain_pod(account, account)).await;
        let (_, client) = identity(admin, dir, NS, account, Some(&own)).await;
        let patched = merge(&Api::namespaced(client, NS), "neighbour", role_patch(json!(value))).await;
        assert_eq!(patched.map(|p| label_of(&p)).ok().flatten().as_deref(), Some(value), "{account}");
    }
    merge(&as_admin, "neighbour", role_patch(Value::Null)).await.unwrap();
}

/// A real StatefulSet (Parallel; the controller and kwok make its pods and their IPs): the watch
/// file of pod 0's sidecar lists the others through scale up, scale down and a pod replaced, and
/// every one of thousands of reads during that sees a whole file the sidecar wrote.
async fn watch_file_follows_the_statefulset(admin: &Client, dir: &Path) {
    let pods = Api::<Pod>::namespaced(admin.clone(), NS_RING);
    create_ring(admin, NS_RING, "ring", 3).await;
    let own = wait_ring(&pods, "ring", 3).await.remove(&0).unwrap();
    let (kubeconfig, _) = identity(admin, dir, NS_RING, SA, Some(&own)).await;

    let file = dir.join("peers/peers");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let reader = FileReader::start(file.clone());
    let supervisor = StandInSupervisor::start(Reply::census("leader")).await;
    let sidecar = Sidecar::start(
        &kubeconfig,
        NS_RING,
        "ring-0",
        &supervisor.url(),
        &[
            "--interval",
            "250ms",
            "--peer-watch-file",
            file.to_str().unwrap(),
            "--statefulset",
            "ring",
            "--pod-selector",
            "app=ring",
        ],
        dir.join("sidecar-ring-0.log"),
    );
    let expect_file = |what: &'static str| {
        let pods = pods.clone();
        let file = file.clone();
        async move {
            eventually(WAIT, what, || async {
                let want = expected_peer_file(&pods.list(&ListParams::default()).await.ok()?.items, "ring-0");
                (std::fs::read_to_string(&file).ok()? == want).then_some(want)
            })
            .await
        }
    };
    let content = expect_file("the file to list ring-1 and ring-2").await;
    assert_eq!(content.lines().count(), 2, "{content:?}");
    assert_eq!(http_get(sidecar.admin_port, "/readyz").await.map(|r| r.0), Some(200));
    wait_label(&pods, "ring-0", Some("leader")).await;

    for (replicas, what) in [
        (5, "the file to list ring-1 to ring-4"),
        (1, "the file to be empty: no other pod"),
        (3, "the file to list ring-1 and ring-2 again"),
    ] {
        scale(admin, NS_RING, "ring", replicas).await;
        wait_ring(&pods, "ring", replicas as u32).await;
        let content = expect_file(what).await;
        assert_eq!(content.lines().count(), replicas as usize - 1, "{content:?}");
    }

    let mut old = Vec::new();
    for name in ["ring-1", "ring-2"] {
        old.push(pods.get(name).await.unwrap().metadata.uid);
        let now = DeleteParams { grace_period_seconds: Some(0), ..Default::default() };
        pods.delete(name, &now).await.unwrap();
    }
    eventually(WAIT, "ring-1 and ring-2 replaced", || async {
        let ring = wait_ring(&pods, "ring", 3).await;
        [1, 2].iter().all(|o| !old.contains(&ring[o].metadata.uid)).then_some(())
    })
    .await;
    let content = expect_file("the file to list the new ring-1 and ring-2").await;
    assert_eq!(content.lines().count(), 2, "{content:?}");
    assert_eq!(sidecar.metric("hab_bootstrap_sidecar_peer_watch_file_peers").await, 2.0);

    let reads = reader.stop();
    let written = written_contents(&sidecar.log_text());
    let own_ip = pod_ip(&own).unwrap();
    for (content, count) in &reads.contents {
        if let Err(why) = whole_peer_file(content, own_ip) {
            panic!("read {count} times: {content:?}: {why}");
        }
        assert!(written.contains(content), "read {content:?}, which the sidecar never wrote ({written:?})");
    }
    assert!(reads.contents.len() >= 4, "saw only {:?}", reads.contents.keys());
    eprintln!(
        "    {} reads of the watch file during the changes ({} before it existed), {} distinct contents, all whole",
        reads.total,
        reads.absent,
        reads.contents.len()
    );
    assert!(sidecar.terminate().await.success());
    assert_eq!(stored_label(&pods, "ring-0").await, None, "removed before exiting");
}

async fn create_ring(admin: &Client, ns: &str, name: &str, replicas: i32) {
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": true,
            "selector": {"app": name},
            "ports": [{"name": "gossip", "port": 9638}],
        }
    }))
    .unwrap();
    let sts: StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "serviceName": name,
            "replicas": replicas,
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "serviceAccountName": SA,
                    "terminationGracePeriodSeconds": 0,
                    "containers": [{"name": "supervisor", "image": "core/redis:e2e"}],
                }
            }
        }
    }))
    .unwrap();
    Api::<Service>::namespaced(admin.clone(), ns).create(&PostParams::default(), &service).await.unwrap();
    Api::<StatefulSet>::namespaced(admin.clone(), ns).create(&PostParams::default(), &sts).await.unwrap();
}

async fn scale(admin: &Client, ns: &str, name: &str, replicas: i32) {
    Api::<StatefulSet>::namespaced(admin.clone(), ns)
        .patch_scale(name, &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": replicas}})))
        .await
        .unwrap();
}

/// Waits until exactly ordinals 0..replicas exist, all Running with an IP.
async fn wait_ring(pods: &Api<Pod>, name: &str, replicas: u32) -> BTreeMap<u32, Pod> {
    eventually(WAIT, &format!("{replicas} pods of {name} Running"), || async {
        let list = pods.list(&ListParams::default().labels(&format!("app={name}"))).await.ok()?;
        let ring: BTreeMap<u32, Pod> = list
            .items
            .into_iter()
            .map(|p| (p.metadata.name.as_ref().unwrap().rsplit('-').next().unwrap().parse().unwrap(), p))
            .collect();
        let all = ring.keys().copied().eq(0..replicas) && ring.values().all(is_running);
        all.then_some(ring)
    })
    .await
}

/// What the file must hold, computed from the API independently of the sidecar's code: the IPs of
/// the StatefulSet's other live pods, sorted, one per line.
fn expected_peer_file(pods: &[Pod], own: &str) -> String {
    let ips: BTreeSet<Ipv4Addr> = pods
        .iter()
        .filter(|p| p.metadata.name.as_deref() != Some(own) && p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            !matches!(p.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
        })
        .filter_map(pod_ip)
        .collect();
    ips.iter().map(|ip| format!("{ip}\n")).collect()
}

/// A file the Supervisor can use as is: empty, or whole lines each one IPv4 address (the default
/// gossip port implied), sorted, no duplicate, never this pod's own address.
fn whole_peer_file(content: &str, own: Ipv4Addr) -> Result<(), String> {
    if !content.is_empty() && !content.ends_with('\n') {
        return Err("the last line is cut".into());
    }
    let mut last: Option<Ipv4Addr> = None;
    for line in content.lines() {
        let ip: Ipv4Addr = line.parse().map_err(|_| format!("{line:?} is not an address"))?;
        if ip == own {
            return Err("lists the pod itself".into());
        }
        if last.is_some_and(|last| last >= ip) {
            return Err("not sorted, or a duplicate".into());
        }
        last = Some(ip);
    }
    Ok(())
}

/// The contents the sidecar logged as written ("peer watch file replaced", peers comma-separated).
fn written_contents(log: &str) -> BTreeSet<String> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|event| event["message"] == "peer watch file replaced")
        .map(|event| {
            let peers = event["peers"].as_str().unwrap_or_default();
            peers.split(',').filter(|p| !p.is_empty()).map(|p| format!("{p}\n")).collect()
        })
        .collect()
}

#[derive(Debug, Default)]
struct Reads {
    total: usize,
    absent: usize,
    contents: BTreeMap<String, usize>,
}

/// Reads a file as fast as a loop with a short sleep can, in a thread of its own.
struct FileReader {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Reads>,
}

impl FileReader {
    fn start(path: PathBuf) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let stop = stop.clone();
            move || {
                let mut reads = Reads::default();
                while !stop.load(Ordering::Relaxed) {
                    reads.total += 1;
                    match std::fs::read_to_string(&path) {
                        Ok(content) => *reads.contents.entry(content).or_default() += 1,
                        Err(err) if err.kind() == std::io::ErrorKind::NotFound => reads.absent += 1,
                        Err(err) => panic!("reading {}: {err}", path.display()),
                    }
                    std::thread::sleep(Duration::from_micros(100));
                }
                reads
            }
        });
        Self { stop, thread }
    }

    fn stop(self) -> Reads {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

// ------------------------------------------------------------------------------------------------
// Figures (ignored): scripts/sidecar-figures.sh
// ------------------------------------------------------------------------------------------------

const NS_FIGURES: &str = "sidecar-figures";

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The command name may hold spaces or parentheses: the fields start after the last ')'.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 1..].split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// A `/proc/<pid>/status` field in KiB (VmRSS, VmHWM).
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(&format!("{field}:"))).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// Sum of the API server's `apiserver_request_total` over the series whose labels include all of
/// `want` (cluster-wide: the metric has no user label).
async fn apiserver_requests(admin: &Client, want: &[(&str, &str)]) -> f64 {
    let request = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let text = admin.request_text(request).await.unwrap();
    text.lines()
        .filter_map(|line| line.strip_prefix("apiserver_request_total{"))
        .filter_map(|rest| {
            let (labels, value) = rest.rsplit_once("} ")?;
            let labels: BTreeMap<&str, &str> = labels
                .split("\",")
                .filter_map(|pair| pair.split_once("=\""))
                .map(|(k, v)| (k, v.trim_end_matches('"')))
                .collect();
            want.iter()
                .all(|(k, v)| labels.get(k).copied().unwrap_or("") == *v)
                .then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    // nearest rank
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

struct Sample {
    cpu: f64,
    writes: f64,
    polls: f64,
    file_writes: f64,
}

async fn sample(sidecar: &Sidecar) -> Sample {
    let metrics = sidecar.metrics().await;
    let writes = ["leader", "follower", "removed"]
        .iter()
        .flat_map(|v| ["ok", "error"].map(move |r| (v, r)))
        .map(|(v, r)| {
            metric_value(
                &metrics,
                &format!("hab_bootstrap_sidecar_label_writes_total{{value=\"{v}\",result=\"{r}\"}}"),
            )
        })
        .sum();
    let file_writes = ["ok", "error"]
        .iter()
        .map(|r| {
            metric_value(
                &metrics,
                &format!("hab_bootstrap_sidecar_peer_watch_file_writes_total{{result=\"{r}\"}}"),
            )
        })
        .sum();
    Sample {
        cpu: cpu_seconds(sidecar.pid()),
        writes,
        polls: metric_value(&metrics, "hab_bootstrap_sidecar_census_polls_total"),
        file_writes,
    }
}

/// The closing note's figures, measured on the real API server with the sidecar at its defaults
/// (1 s interval, 5 s grace): resident memory, CPU time per hour, census-change-to-stored-label
/// latency, and API writes in a steady state. Prints them; asserts nothing about them.
/// HAB_SIDECAR_FIGURES_STEADY_SECS (default 600) and HAB_SIDECAR_FIGURES_TRANSITIONS (default 30)
/// set the lengths.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "takes minutes; run by scripts/sidecar-figures.sh"]
async fn figures() {
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};

    if !support::control_plane::enabled() {
        return;
    }
    let steady_secs = env_number("HAB_SIDECAR_FIGURES_STEADY_SECS", 600);
    let transitions = env_number("HAB_SIDECAR_FIGURES_TRANSITIONS", 30) as usize;
    let admin = admin_client().await;
    let dir = tempfile::tempdir().unwrap();
    namespace(&admin, NS_FIGURES).await;
    apply_examples(&[NS_FIGURES]);
    let pods = Api::<Pod>::namespaced(admin.clone(), NS_FIGURES);
    let solo = create_running(&pods, &plain_pod("solo", SA)).await;
    create_ring(&admin, NS_FIGURES, "ring", 3).await;
    let ring0 = wait_ring(&pods, "ring", 3).await.remove(&0).unwrap();
    // The policy in effect before measuring: the latency includes its evaluation.
    let (solo_config, solo_client) = identity(&admin, dir.path(), NS_FIGURES, SA, Some(&solo)).await;
    let as_sidecar = Api::<Pod>::namespaced(solo_client, NS_FIGURES);
    eventually(WAIT, "the policy in effect", || async {
        let result = merge(&as_sidecar, "ring-1", role_patch(json!("leader"))).await;
        if result.is_ok() {
            merge(&pods, "ring-1", role_patch(Value::Null)).await.unwrap();
        }
        result.is_err().then_some(())
    })
    .await;
    let (ring_config, _) = identity(&admin, dir.path(), NS_FIGURES, SA, Some(&ring0)).await;

    let role_supervisor = StandInSupervisor::start(Reply::census("follower")).await;
    let role_sidecar = Sidecar::start(
        &solo_config,
        NS_FIGURES,
        "solo",
        &role_supervisor.url(),
        &[],
        dir.path().join("solo.log"),
    );
    let file = dir.path().join("peers");
    let ring_supervisor = StandInSupervisor::start(Reply::census("leader")).await;
    let ring_sidecar = Sidecar::start(
        &ring_config,
        NS_FIGURES,
        "ring-0",
        &ring_supervisor.url(),
        &["--peer-watch-file", file.to_str().unwrap(), "--statefulset", "ring", "--pod-selector", "app=ring"],
        dir.path().join("ring-0.log"),
    );
    wait_label(&pods, "solo", Some("follower")).await;
    wait_label(&pods, "ring-0", Some("leader")).await;

    // Latency: a census change at the stand-in → the label change seen by a watch on the pod.
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
    let config = watcher::Config::default().fields("metadata.name=solo");
    let watch = tokio::spawn(watcher(pods.clone(), config).applied_objects().for_each(move |pod| {
        if let Ok(pod) = pod {
            let _ = seen_tx.send((Instant::now(), label_of(&pod)));
        }
        async {}
    }));
    let mut latencies = Vec::new();
    for i in 0..transitions {
        // Random offsets, so that changes do not fall in step with the sidecar's ticks.
        tokio::time::sleep(Duration::from_millis(fastrand::u64(1000..2500))).await;
        while seen_rx.try_recv().is_ok() {}
        let next = if i % 2 == 0 { "leader" } else { "follower" };
        let changed = Instant::now();
        role_supervisor.set(Reply::census(next));
        let seen = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let (at, label) = seen_rx.recv().await.unwrap();
                if label.as_deref() == Some(next) {
                    return at;
                }
            }
        })
        .await
        .expect("the label change is seen");
        latencies.push(seen - changed);
    }
    watch.abort();
    latencies.sort();

    // Steady state: nothing changes; count writes and CPU time over the window.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss_start = [&role_sidecar, &ring_sidecar].map(|s| status_kib(s.pid(), "VmRSS"));
    let patch_pods = [("verb", "PATCH"), ("resource", "pods"), ("subresource", "")];
    let api_before = apiserver_requests(&admin, &patch_pods).await;
    let names: Vec<_> = [&solo, &ring0].iter().map(|p| p.metadata.name.clone().unwrap()).collect();
    let mut rv_before = Vec::new();
    for name in &names {
        rv_before.push(pods.get(name).await.unwrap().metadata.resource_version);
    }
    let before = [sample(&role_sidecar).await, sample(&ring_sidecar).await];
    let window = Instant::now();
    let mut rss_max = rss_start;
    while window.elapsed() < Duration::from_secs(steady_secs) {
        tokio::time::sleep(Duration::from_secs(10).min(Duration::from_secs(steady_secs))).await;
        for (max, sidecar) in rss_max.iter_mut().zip([&role_sidecar, &ring_sidecar]) {
            *max = (*max).max(status_kib(sidecar.pid(), "VmRSS"));
        }
    }
    let after = [sample(&role_sidecar).await, sample(&ring_sidecar).await];
    let elapsed = window.elapsed().as_secs_f64();
    let api_after = apiserver_requests(&admin, &patch_pods).await;
    let mut rv_after = Vec::new();
    for name in &names {
        rv_after.push(pods.get(name).await.unwrap().metadata.resource_version);
    }
    let rss_end = [&role_sidecar, &ring_sidecar].map(|s| status_kib(s.pid(), "VmRSS"));
    let hwm = [&role_sidecar, &ring_sidecar].map(|s| status_kib(s.pid(), "VmHWM"));
    let anon = [&role_sidecar, &ring_sidecar].map(|s| status_kib(s.pid(), "RssAnon"));
    let file_backed = [&role_sidecar, &ring_sidecar].map(|s| status_kib(s.pid(), "RssFile"));

    let per_hour = 3600.0 / elapsed;
    let build = match std::env::var_os("HAB_SIDECAR_BIN") {
        Some(bin) => format!("binary {}", bin.to_string_lossy()),
        None if cfg!(debug_assertions) => "debug (unoptimized) build".to_owned(),
        None => "release build".to_owned(),
    };
    let version = kubectl(&["version", "-o", "json"]);
    let server_version = serde_json::from_str::<Value>(&version)
        .ok()
        .and_then(|v| v["serverVersion"]["gitVersion"].as_str().map(str::to_owned));
    println!(
        "\n== hab-bootstrap sidecar figures ({build}; kube-apiserver {})",
        server_version.unwrap_or_default()
    );
    println!(
        "   defaults: --interval 1s, --unknown-grace 5s, --census-timeout 2s; steady window {elapsed:.0} s"
    );
    for (i, name) in ["role only (--peer mode)", "watch-file mode (3-pod StatefulSet)"].iter().enumerate() {
        let cpu = after[i].cpu - before[i].cpu;
        println!("-- {name}");
        println!(
            "   resident memory (VmRSS): {} at the start of the window, {} at its end ({} anonymous, {} \
             file-backed: the binary's pages), {} at most (sampled every 10 s); peak since start (VmHWM) {}",
            mib(rss_start[i]),
            mib(rss_end[i]),
            mib(anon[i]),
            mib(file_backed[i]),
            mib(rss_max[i]),
            mib(hwm[i])
        );
        println!(
            "   CPU time (utime+stime from /proc): {cpu:.2} s in {elapsed:.0} s → {:.1} s per hour \
             ({:.3} % of one core)",
            cpu * per_hour,
            100.0 * cpu / elapsed
        );
        println!(
            "   census polls: {:.0} ({:.2}/s); label writes (hab_bootstrap_sidecar_label_writes_total): {:.0} \
             → {:.0} per hour; peer file writes: {:.0}",
            after[i].polls - before[i].polls,
            (after[i].polls - before[i].polls) / elapsed,
            after[i].writes - before[i].writes,
            (after[i].writes - before[i].writes) * per_hour,
            after[i].file_writes - before[i].file_writes,
        );
    }
    println!(
        "-- API server: PATCH requests on pods (not status) in the window, all clients (the metric has \
         no user label): {:.0} → {:.0} per hour; resourceVersion of the two pods unchanged: {}",
        api_after - api_before,
        (api_after - api_before) * per_hour,
        rv_before == rv_after
    );
    let secs = |d: Duration| format!("{:.3} s", d.as_secs_f64());
    println!(
        "-- census change at the stand-in → stored label change seen by a watch on the pod, {} transitions \
         leader↔follower at random 1-2.5 s offsets: median {}, p90 {}, min {}, max {}",
        latencies.len(),
        secs(percentile(&latencies, 0.5)),
        secs(percentile(&latencies, 0.9)),
        secs(latencies[0]),
        secs(latencies[latencies.len() - 1])
    );

    for sidecar in [role_sidecar, ring_sidecar] {
        assert!(sidecar.terminate().await.success());
    }
    let _ = Api::<Namespace>::all(admin.clone()).delete(NS_FIGURES, &DeleteParams::default()).await;
}
