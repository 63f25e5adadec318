//! The ceiling server of the load benchmark (scripts/bench.sh, BENCHMARKS.md): the webhook's own
//! TLS and HTTP stack (`serve_tls`: rustls, hyper auto HTTP/1.1 + HTTP/2, TCP_NODELAY; an axum
//! router with the same body limit) whose handler only parses the review into a
//! `serde_json::Value` and answers "allowed". No webhook can answer faster over this stack, so our
//! figures are given as ratios to this one's, measured in the same run.
//!
//! Two more paths answer "allowed" with a patch, for the floor benchmark
//! (tests/e2e_big_rings/floor.rs) to tell what the API server pays for applying any patch from
//! what it pays for ours: `ONE_OP_PATH` adds one label; `REPLAY_PATH` returns the JSON patch in
//! the file given as a fourth argument (read once it exists: the benchmark writes it mid-run), with
//! `@SERVICE_ACCOUNT_VOLUME@` replaced by the name of the pod's own token volume (a random one per
//! pod, which our sidecar mounts).
//!
//!   cargo run --release --example ceiling -- 127.0.0.1:9443 tls.crt tls.key [replay-patch.json]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use hab_bootstrap::webhook::server::routes::{MAX_BODY_BYTES, POD_PATH};
use hab_bootstrap::webhook::server::serve_tls;
use hab_bootstrap::webhook::server::tls::CertReloader;
use serde_json::Value;

/// The paths of the patching answers (the floor benchmark registers them).
const ONE_OP_PATH: &str = "/mutate-pod-one-op";
const REPLAY_PATH: &str = "/mutate-pod-replay";

const ONE_OP_PATCH: &str = r#"[{"op":"add","path":"/metadata/labels/hab-bench~1patched","value":"true"}]"#;

/// Parses the review and answers "allowed", with the JSON patch `patch` makes of the review when
/// there is one.
fn answer(body: &[u8], patch: impl FnOnce(&Value) -> Option<String>) -> Response {
    let review: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    let patch = patch(&review);
    let uid = serde_json::to_string(review["request"]["uid"].as_str().unwrap_or_default())
        .expect("strings serialize");
    let patch = patch.map_or_else(String::new, |p| {
        format!(
            r#","patchType":"JSONPatch","patch":"{}""#,
            base64::engine::general_purpose::STANDARD.encode(p)
        )
    });
    let answer = format!(
        r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{{"uid":{uid},"allowed":true{patch}}}}}"#
    );
    ([(header::CONTENT_TYPE, "application/json")], answer).into_response()
}

/// The replayed patch: read from its file the first time it is there.
struct Replay {
    file: Option<String>,
    patch: OnceLock<String>,
}

impl Replay {
    fn patch(&self) -> Option<&str> {
        if let Some(p) = self.patch.get() {
            return Some(p);
        }
        let text = std::fs::read_to_string(self.file.as_ref()?).ok()?;
        Some(self.patch.get_or_init(|| text))
    }

    /// The patch for the pod of `review`.
    fn patch_for(&self, review: &Value) -> Option<String> {
        let volumes = review["request"]["object"]["spec"]["volumes"].as_array();
        let token = volumes
            .into_iter()
            .flatten()
            .filter_map(|v| v["name"].as_str())
            .find(|name| name.starts_with("kube-api-access-"));
        // Without one, the patch goes as it is and the API server says why it does not apply.
        Some(self.patch()?.replace("@SERVICE_ACCOUNT_VOLUME@", token.unwrap_or("@SERVICE_ACCOUNT_VOLUME@")))
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (listen, cert, key, replay_file) = match args.as_slice() {
        [listen, cert, key] => (listen, cert, key, None),
        [listen, cert, key, replay] => (listen, cert, key, Some(replay.clone())),
        _ => anyhow::bail!("usage: ceiling <listen address> <tls.crt> <tls.key> [replay-patch.json]"),
    };
    hab_bootstrap::install_crypto_provider();
    let certs = CertReloader::load(cert, key)?;
    let replay = Arc::new(Replay { file: replay_file, patch: OnceLock::new() });
    let app = Router::new()
        .route(POD_PATH, post(|body: Bytes| async move { answer(&body, |_| None) }))
        .route(
            ONE_OP_PATH,
            post(|body: Bytes| async move { answer(&body, |_| Some(ONE_OP_PATCH.to_owned())) }),
        )
        .route(
            REPLAY_PATH,
            post(|body: Bytes| async move {
                if replay.patch().is_none() {
                    return (StatusCode::SERVICE_UNAVAILABLE, "no patch to replay yet\n").into_response();
                }
                answer(&body, |review| replay.patch_for(review))
            }),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES));
    // The webhook's runtime: tokio's multi-threaded default.
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        eprintln!("ceiling listening on {}", listener.local_addr()?);
        let stop = async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("installing a SIGTERM handler");
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        };
        serve_tls(listener, certs.server_config(None), app, stop, Duration::from_secs(5)).await;
        anyhow::Ok(())
    })
}
