//! The router in process (tower `oneshot`): status codes and bodies for every kind of bad input.

mod support;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use hab_bootstrap::webhook::server::routes::{MAX_BODY_BYTES, router};
use http_body_util::BodyExt;
use serde_json::json;
use support::*;
use tower::ServiceExt;

fn app() -> axum::Router {
    let cluster = MemoryCluster {
        statefulsets: vec![statefulset("redis", "default", "redis-headless", 3, &[])],
        services: vec![headless_service("redis-headless", "default", true)],
        ..Default::default()
    };
    router(Arc::new(admission(cluster)))
}

async fn call(method: &str, path: &str, content_type: Option<&str>, body: Vec<u8>) -> (StatusCode, String) {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let resp = app().oneshot(req.body(Body::from(body)).unwrap()).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

#[tokio::test]
async fn a_review_is_answered_with_json() {
    let body = serde_json::to_vec(&redis_review()).unwrap();
    let (status, text) = call("POST", "/mutate", Some("application/json"), body).await;
    assert_eq!(status, StatusCode::OK);
    let answer = decode(text.as_bytes());
    assert!(answer.allowed && answer.patch.is_some());
    let (status, _) = call(
        "POST",
        "/mutate",
        Some("application/json; charset=utf-8"),
        serde_json::to_vec(&redis_review()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn bad_requests_get_precise_http_errors() {
    let huge = {
        let mut review = redis_review();
        review["request"]["object"]["metadata"]["annotations"]["padding"] = json!("x".repeat(MAX_BODY_BYTES));
        serde_json::to_vec(&review).unwrap()
    };
    let full = serde_json::to_vec(&redis_review()).unwrap();
    let truncated = full[..full.len() / 2].to_vec();
    type Case = (&'static str, &'static str, Option<&'static str>, Vec<u8>, StatusCode, &'static str);
    let cases: Vec<Case> = vec![
        (
            "POST",
            "/mutate",
            Some("text/plain"),
            full.clone(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "not application/json",
        ),
        ("POST", "/mutate", None, full.clone(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "not application/json"),
        ("POST", "/mutate", Some("application/json"), huge, StatusCode::PAYLOAD_TOO_LARGE, ""),
        (
            "POST",
            "/mutate",
            Some("application/json"),
            truncated,
            StatusCode::BAD_REQUEST,
            "not an AdmissionReview",
        ),
        (
            "POST",
            "/mutate",
            Some("application/json"),
            b"".to_vec(),
            StatusCode::BAD_REQUEST,
            "not an AdmissionReview",
        ),
        (
            "POST",
            "/mutate",
            Some("application/json"),
            b"\xff\xfe".to_vec(),
            StatusCode::BAD_REQUEST,
            "not an AdmissionReview",
        ),
        (
            "POST",
            "/mutate",
            Some("application/json"),
            br#"{"kind":"AdmissionReview"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "no request",
        ),
        (
            "POST",
            "/mutate-statefulset",
            Some("application/json"),
            b"{}".to_vec(),
            StatusCode::BAD_REQUEST,
            "no request",
        ),
        ("GET", "/mutate", None, vec![], StatusCode::METHOD_NOT_ALLOWED, ""),
        ("POST", "/nope", Some("application/json"), full, StatusCode::NOT_FOUND, ""),
    ];
    for (method, path, ct, body, want_status, want_text) in cases {
        let (status, text) = call(method, path, ct, body).await;
        assert_eq!(status, want_status, "{method} {path} {ct:?}: {text}");
        assert!(text.contains(want_text), "{method} {path}: {text}");
    }
}

#[tokio::test]
async fn a_body_just_under_the_limit_is_read() {
    let mut review = redis_review();
    let base = serde_json::to_vec(&review).unwrap().len();
    review["request"]["object"]["metadata"]["annotations"]["padding"] =
        json!("x".repeat(7 * 1024 * 1024 - base));
    let (status, text) =
        call("POST", "/mutate", Some("application/json"), serde_json::to_vec(&review).unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(decode(text.as_bytes()).allowed);
}

#[tokio::test]
async fn a_deeply_nested_pod_is_denied_not_crashed_on() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let body = format!(
        r#"{{"request":{{"uid":"u","kind":{{"kind":"Pod"}},"operation":"CREATE","object":{{"metadata":{deep}}}}}}}"#
    );
    let (status, text) = call("POST", "/mutate", Some("application/json"), body.into_bytes()).await;
    assert_eq!(status, StatusCode::OK);
    let answer = decode(text.as_bytes());
    assert!(!answer.allowed);
    assert!(answer.message.unwrap().contains("cannot read the pod"));
}
