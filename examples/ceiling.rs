//! The ceiling server of the load benchmark (scripts/bench.sh, BENCHMARKS.md): the webhook's own
//! TLS and HTTP stack (`serve_tls`: rustls, hyper auto HTTP/1.1 + HTTP/2, TCP_NODELAY; an axum
//! router with the same body limit) whose handler only parses the review into a
//! `serde_json::Value` and answers "allowed". No webhook can answer faster over this stack, so our
//! figures are given as ratios to this one's, measured in the same run.
//!
//!   cargo run --release --example ceiling -- 127.0.0.1:9443 tls.crt tls.key

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hab_bootstrap::webhook::server::routes::{MAX_BODY_BYTES, POD_PATH};
use hab_bootstrap::webhook::server::serve_tls;
use hab_bootstrap::webhook::server::tls::CertReloader;
use serde_json::Value;

async fn allow(body: Bytes) -> Response {
    let review: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    let uid = review["request"]["uid"].as_str().unwrap_or_default();
    let answer = format!(
        r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{{"uid":{},"allowed":true}}}}"#,
        serde_json::to_string(uid).expect("strings serialize")
    );
    ([(header::CONTENT_TYPE, "application/json")], answer).into_response()
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, cert, key] = args.as_slice() else {
        anyhow::bail!("usage: ceiling <listen address> <tls.crt> <tls.key>");
    };
    hab_bootstrap::install_crypto_provider();
    let certs = CertReloader::load(cert, key)?;
    let app = Router::new().route(POD_PATH, post(allow)).layer(DefaultBodyLimit::max(MAX_BODY_BYTES));
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
