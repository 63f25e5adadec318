//! `hab-bootstrap sidecar` as the webhook runs it: the built binary with the injected flags and
//! downward-API environment, a stand-in Supervisor, and a fake API server through KUBECONFIG.

mod support;

use std::time::Duration;

use serde_json::json;
use support::fake_api::{FakeApiServer, pod};
use support::supervisor::{Reply, StandInSupervisor};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(20);

async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let waited = tokio::time::timeout(WAIT, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "never true: {what}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One plain HTTP/1.1 GET; returns the whole response, headers included.
async fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    Some(response)
}

fn label_patches(api: &FakeApiServer) -> Vec<serde_json::Value> {
    api.requests()
        .into_iter()
        .filter(|r| r.method == axum::http::Method::PATCH)
        .map(|r| r.body["metadata"]["labels"]["role"].clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_the_pod_keeps_the_peer_file_and_cleans_up_on_sigterm() {
    let supervisor = StandInSupervisor::start(Reply::census("leader")).await;
    let api = FakeApiServer::start(vec![
        json!(pod("redis-0", "redis", &["10.0.0.1"], 1)),
        json!(pod("redis-1", "redis", &["10.0.0.2"], 2)),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.write_kubeconfig(dir.path());
    let peers = dir.path().join("peers");
    let admin_port = free_port();

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_hab-bootstrap"))
        .args(["sidecar", "--census-url", &supervisor.url()])
        .args(["--service-group", "roletest.prod", "--label-key", "role"])
        .arg("--peer-watch-file")
        .arg(&peers)
        .args(["--statefulset", "redis", "--pod-selector", "app=redis"])
        .args(["--gossip-port", "9638"])
        .env_clear()
        .env("KUBECONFIG", &kubeconfig)
        .env("HABITAT_BOOTSTRAP_POD_NAME", "redis-0")
        .env("HABITAT_BOOTSTRAP_POD_NAMESPACE", "db")
        .env("HABITAT_BOOTSTRAP_INTERVAL", "100ms")
        .env("HABITAT_BOOTSTRAP_METRICS_LISTEN", format!("127.0.0.1:{admin_port}"))
        .kill_on_drop(true)
        .spawn()
        .expect("the binary starts");

    eventually("the leader label is patched", || label_patches(&api) == vec![json!("leader")]).await;
    eventually("the peer file lists the other pod", || {
        std::fs::read_to_string(&peers).ok().as_deref() == Some("10.0.0.2\n")
    })
    .await;

    // Steady state: polls go on, writes do not.
    supervisor.wait_requests(10).await;
    assert_eq!(label_patches(&api), vec![json!("leader")]);
    let metrics = http_get(admin_port, "/metrics").await.expect("admin port answers");
    for line in [
        "hab_bootstrap_sidecar_role{role=\"leader\"} 1",
        "hab_bootstrap_sidecar_label_writes_total{value=\"leader\",result=\"ok\"} 1",
        "hab_bootstrap_sidecar_peer_watch_file_peers 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line:?} missing in\n{metrics}");
    }
    let readyz = http_get(admin_port, "/readyz").await.unwrap();
    assert!(readyz.starts_with("HTTP/1.1 200"), "{readyz}");

    let pid = child.id().expect("still running").to_string();
    let killed = std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(WAIT, child.wait()).await.expect("exits after SIGTERM").unwrap();
    assert!(status.success(), "exit status {status:?}");
    assert_eq!(
        label_patches(&api),
        vec![json!("leader"), serde_json::Value::Null],
        "the label is removed before exiting"
    );
}
