//! The webhook's HTTP routes: thin translation between HTTP and [`Admission`].

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use crate::webhook::admission::{Admission, ClusterView, EventSink};
use crate::webhook::deadline;
use crate::webhook::review::BadReview;

/// The API server sends the object (and on updates the old object too); controller-runtime accepts
/// 7 MiB, and so do we, with room for the review's envelope.
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// No answer takes longer: the API server gives up after the webhook's `timeoutSeconds` (30 s at
/// most). Without it, a client that sends its headers and then stalls its body holds its
/// connection and task for ever (the header timeout ends once the headers are in).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub const POD_PATH: &str = "/mutate";
pub const STATEFULSET_PATH: &str = "/mutate-statefulset";

pub fn router<C: ClusterView, E: EventSink>(admission: Arc<Admission<C, E>>) -> Router {
    Router::new()
        .route(POD_PATH, post(mutate_pod::<C, E>))
        .route(STATEFULSET_PATH, post(mutate_statefulset::<C, E>))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(within_request_timeout))
        .with_state(admission)
}

async fn within_request_timeout(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            let message = format!("the request was not complete within {REQUEST_TIMEOUT:?}\n");
            (StatusCode::REQUEST_TIMEOUT, message).into_response()
        }
    }
}

async fn mutate_pod<C: ClusterView, E: EventSink>(
    State(admission): State<Arc<Admission<C, E>>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // Every read of the review shares one deadline, ahead of the API server's own.
    let timeout = deadline::timeout_from_query(uri.query());
    let until = tokio::time::Instant::now() + timeout - deadline::margin(timeout);
    // Boxed: the review's future is large, and a debug build's worker stack is not.
    deadline::scope(until, Box::pin(respond(&headers, admission.review_pod(&body)))).await
}

async fn mutate_statefulset<C: ClusterView, E: EventSink>(
    State(admission): State<Arc<Admission<C, E>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    respond(&headers, admission.review_statefulset(&body)).await
}

/// Runs `review` (lazy until awaited) only for a JSON body, and turns its result into HTTP.
async fn respond(headers: &HeaderMap, review: impl Future<Output = Result<Vec<u8>, BadReview>>) -> Response {
    if let Some(rejection) = unless_json(headers) {
        return rejection;
    }
    match review.await {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(e) => {
            let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
            (status, format!("{}\n", e.message)).into_response()
        }
    }
}

/// A 415 response unless the body is declared JSON.
fn unless_json(headers: &HeaderMap) -> Option<Response> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") {
        return None;
    }
    let message = format!("content type {content_type:?} is not application/json\n");
    Some((StatusCode::UNSUPPORTED_MEDIA_TYPE, message).into_response())
}
