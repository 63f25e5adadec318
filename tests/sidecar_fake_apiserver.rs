//! The Kubernetes side of the sidecar against a small fake API server on 127.0.0.1: the exact
//! label patch the writer sends, and the peer watch file following a pod list and watch events.
//! (The real API server and RBAC are exercised by the control-plane tests.)

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::http::Method;
use hab_bootstrap::runtime::admin::Health;
use hab_bootstrap::sidecar::census::Role;
use hab_bootstrap::sidecar::label::{KubeLabelWriter, LabelAction, LabelWriteError, LabelWriter};
use hab_bootstrap::sidecar::metrics::{Metrics, ResultLabels};
use hab_bootstrap::sidecar::peer_file::PeerFile;
use hab_bootstrap::sidecar::peer_set::PeerSelector;
use hab_bootstrap::sidecar::pod_watch::PodWatch;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::json;
use support::fake_api::{FakeApiServer, pod};
use tokio::sync::oneshot;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_label_writer_sends_one_merge_patch_per_action() {
    let api = FakeApiServer::start(vec![]).await;
    let writer = KubeLabelWriter::new(api.client.clone(), "db", "redis-0", "habitat.sh/role");
    writer.apply(LabelAction::Set(Role::Leader)).await.unwrap();
    writer.apply(LabelAction::Remove).await.unwrap();

    let requests = api.requests();
    assert_eq!(requests.len(), 2, "{requests:#?}");
    for request in &requests {
        assert_eq!(request.method, Method::PATCH);
        assert_eq!(
            request.path_and_query,
            "/api/v1/namespaces/db/pods/redis-0?&fieldManager=hab-bootstrap-sidecar"
        );
        assert_eq!(request.content_type.as_deref(), Some("application/merge-patch+json"));
    }
    assert_eq!(requests[0].body, json!({ "metadata": { "labels": { "habitat.sh/role": "leader" } } }));
    assert_eq!(requests[1].body, json!({ "metadata": { "labels": { "habitat.sh/role": null } } }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_refusal_is_an_error_the_loop_can_retry() {
    let api = FakeApiServer::start(vec![]).await;
    let writer = KubeLabelWriter::new(api.client.clone(), "db", "forbidden", "role");
    let err = writer.apply(LabelAction::Set(Role::Follower)).await.unwrap_err();
    assert!(matches!(err, LabelWriteError::Api(_)), "{err:?}");
    assert!(err.to_string().contains("forbidden"), "{err}");
}

async fn file_becomes(path: &std::path::Path, expected: &str) {
    let waited = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            if std::fs::read_to_string(path).ok().as_deref() == Some(expected) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "file never became {expected:?}; it is {:?}", std::fs::read_to_string(path).ok());
}

/// The file is visible before the task updates its metrics and readiness: wait for those too.
async fn eventually(what: &str, condition: impl Fn() -> bool) {
    let waited = tokio::time::timeout(Duration::from_secs(15), async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "never true: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peer_file_follows_the_list_and_then_the_watch() {
    let me = pod("redis-0", "redis", &["10.0.0.1"], 1);
    let one = pod("redis-1", "redis", &["10.0.0.2"], 2);
    let api = FakeApiServer::start(vec![json!(me), json!(one)]).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("peers");
    let metrics = Metrics::new();
    let health = Arc::new(Health::new(Duration::from_secs(60), false));
    let watch = PodWatch {
        pods: kube::Api::namespaced(api.client.clone(), "db"),
        label_selector: "app=redis".into(),
        selector: PeerSelector { statefulset: "redis".into(), own_pod: "redis-0".into(), gossip_port: 9638 },
        file: PeerFile::new(&path),
        metrics: metrics.clone(),
        health: health.clone(),
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(watch.run(async {
        let _ = stopped.await;
    }));

    file_becomes(&path, "10.0.0.2\n").await;
    eventually("ready once the file is written", || health.is_ready()).await;

    let two = pod("redis-2", "redis", &["10.0.0.3"], 11);
    api.send("ADDED", &two);
    file_becomes(&path, "10.0.0.2\n10.0.0.3\n").await;

    let mut one_leaving = pod("redis-1", "redis", &["10.0.0.2"], 12);
    one_leaving.metadata.deletion_timestamp = Some(Time(Default::default()));
    api.send("MODIFIED", &one_leaving);
    file_becomes(&path, "10.0.0.3\n").await;

    api.send("DELETED", &pod("redis-1", "redis", &["10.0.0.2"], 13));
    api.send("ADDED", &pod("other-0", "other", &["10.0.0.9"], 14));
    api.send("DELETED", &pod("redis-2", "redis", &["10.0.0.3"], 15));
    file_becomes(&path, "").await;

    let writes = || metrics.peer_file_writes.get_or_create(&ResultLabels { result: "ok" }).get();
    eventually("one write per change of content", || writes() == 4).await;

    let list = &api.requests()[0];
    assert!(list.path_and_query.contains("labelSelector=app%3Dredis"), "{}", list.path_and_query);

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task).await.expect("the watch stops on shutdown").unwrap();
}
