//! A small fake Kubernetes API server on 127.0.0.1: records every request, answers pod PATCHes,
//! serves a pod list, then streams the watch events the test sends.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::core::v1::{Pod, PodIP, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde_json::{Value, json};
use tokio::sync::mpsc;

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub path_and_query: String,
    pub content_type: Option<String>,
    pub body: Value,
}

#[derive(Clone)]
struct Fake {
    requests: Arc<Mutex<Vec<Recorded>>>,
    list: Arc<Mutex<Vec<Value>>>,
    watch: Arc<Mutex<Option<mpsc::UnboundedReceiver<Value>>>>,
}

pub struct FakeApiServer {
    fake: Fake,
    events: mpsc::UnboundedSender<Value>,
    addr: SocketAddr,
    pub client: kube::Client,
    server: tokio::task::JoinHandle<()>,
}

impl FakeApiServer {
    pub async fn start(list: Vec<Value>) -> Self {
        let (events, watch) = mpsc::unbounded_channel();
        let fake = Fake {
            requests: Arc::default(),
            list: Arc::new(Mutex::new(list)),
            watch: Arc::new(Mutex::new(Some(watch))),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = Router::new().fallback(handle).with_state(fake.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
        let client = kube::Client::try_from(config).unwrap();
        Self { fake, events, addr, client, server }
    }

    /// A kubeconfig pointing at this server, for a process using `Client::try_default()`.
    pub fn write_kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        let config = format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: fake\n\
             clusters:\n- name: fake\n  cluster:\n    server: http://{}\n\
             users:\n- name: fake\n  user: {{}}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: db\n",
            self.addr
        );
        std::fs::write(&path, config).unwrap();
        path
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.fake.requests.lock().unwrap().clone()
    }

    pub fn send(&self, kind: &str, pod: &Pod) {
        self.events.send(json!({ "type": kind, "object": pod })).unwrap();
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn handle(State(fake): State<Fake>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    let path_and_query = parts.uri.path_and_query().unwrap().to_string();
    fake.requests.lock().unwrap().push(Recorded {
        method: parts.method.clone(),
        path_and_query: path_and_query.clone(),
        content_type: parts.headers.get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap().to_owned()),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    });
    let path = parts.uri.path();
    if parts.method == Method::PATCH {
        if path.ends_with("/pods/forbidden") {
            let status = json!({
                "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 403,
                "reason": "Forbidden", "message": "pods \"forbidden\" is forbidden"
            });
            return (StatusCode::FORBIDDEN, axum::Json(status)).into_response();
        }
        let name = path.rsplit('/').next().unwrap();
        return axum::Json(json!(pod(name, "redis", &[], 1))).into_response();
    }
    if parts.method == Method::GET && path == "/api/v1/namespaces/db/pods" {
        if parts.uri.query().unwrap_or("").contains("watch=true") {
            let Some(events) = fake.watch.lock().unwrap().take() else {
                // a re-watch after the scripted stream: nothing more to say
                return Body::from_stream(futures::stream::pending::<Result<Bytes, Infallible>>())
                    .into_response();
            };
            let lines = futures::stream::unfold(events, |mut events| async move {
                let event = events.recv().await?;
                let line = Bytes::from(format!("{event}\n"));
                Some((Ok::<_, Infallible>(line), events))
            });
            return Body::from_stream(lines).into_response();
        }
        let items = fake.list.lock().unwrap().clone();
        return axum::Json(json!({
            "apiVersion": "v1", "kind": "PodList",
            "metadata": { "resourceVersion": "10" }, "items": items
        }))
        .into_response();
    }
    StatusCode::NOT_FOUND.into_response()
}

/// A pod of StatefulSet `sts` in namespace `db`, labelled `app=redis`.
pub fn pod(name: &str, sts: &str, ips: &[&str], resource_version: u32) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("db".into()),
            resource_version: Some(resource_version.to_string()),
            labels: Some([("app".to_owned(), "redis".to_owned())].into()),
            owner_references: Some(vec![OwnerReference {
                api_version: "apps/v1".into(),
                kind: "StatefulSet".into(),
                name: sts.into(),
                uid: format!("uid-{sts}"),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..ObjectMeta::default()
        },
        spec: None,
        status: Some(PodStatus {
            phase: Some("Running".into()),
            pod_ip: ips.first().map(|ip| ip.to_string()),
            pod_ips: (!ips.is_empty()).then(|| ips.iter().map(|ip| PodIP { ip: ip.to_string() }).collect()),
            ..PodStatus::default()
        }),
    }
}
