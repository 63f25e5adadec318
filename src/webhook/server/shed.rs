//! Load shedding: what one caller (anyone who can reach the port: there is no client
//! authentication) may hold of the server at once, and a quick, clear refusal beyond it.
//!
//! - connections: at most [`Limits::max_connections`] open; more are closed at once after accept;
//! - HTTP/2 streams: at most [`Limits::max_streams_per_connection`] per connection (the client
//!   queues the rest), with small flow-control windows so unread bodies stay small;
//! - requests: at most [`Limits::max_in_flight`] being read or answered: **429** beyond;
//! - buffered bodies: all requests together hold at most [`Limits::body_budget_bytes`] of body:
//!   **503** for the request that would exceed it. Both carry `Retry-After: 1`.
//!
//! A refused request costs no body read and no parse. The API server treats 429/503 as a failed
//! call (its failurePolicy): shedding protects the replica, and the other replica, from an OOM
//! kill that would refuse every opted-in pod for as long as it restarts.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::webhook::server::routes::{MAX_BODY_BYTES, REQUEST_TIMEOUT};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub max_streams_per_connection: u32,
    pub max_in_flight: usize,
    pub body_budget_bytes: usize,
}

impl Default for Limits {
    /// Sized for the chart's 128 Mi memory limit: 16 MiB of bodies at most, of which bodies over
    /// [`SMALL_BODY_BYTES`] may hold all but [`SMALL_BODY_HEADROOM`] (one at the 8 MiB maximum at a
    /// time), and far more concurrency than two API servers need.
    fn default() -> Self {
        Self {
            max_connections: 256,
            max_streams_per_connection: 32,
            max_in_flight: 64,
            body_budget_bytes: 16 * 1024 * 1024,
        }
    }
}

/// A body up to this size is "small": a pod of the usual kind is a few kB.
pub const SMALL_BODY_BYTES: usize = 256 * 1024;
/// What large bodies must leave of the budget, so that a flood of them cannot starve real pods.
pub const SMALL_BODY_HEADROOM: usize = 4 * 1024 * 1024;

/// HTTP/2 flow-control windows: how much body a client may send that the server has not read yet.
pub const H2_STREAM_WINDOW: u32 = 256 * 1024;
pub const H2_CONNECTION_WINDOW: u32 = 512 * 1024;
/// HTTP/2 header block limit (hyper's default is larger than any review needs).
pub const H2_MAX_HEADER_LIST: u32 = 64 * 1024;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShedLabels {
    /// `connections`, `in_flight`, `body_bytes`.
    pub limit: &'static str,
}

#[derive(Debug, Clone, Default)]
pub struct ShedMetrics {
    pub shed: Family<ShedLabels, Counter>,
    pub connections: Gauge,
    pub in_flight: Gauge,
    pub body_bytes: Gauge,
}

impl ShedMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register("shed", "Connections and requests refused by a server limit", self.shed.clone());
        registry.register("open_connections", "Open HTTPS connections", self.connections.clone());
        registry.register("in_flight_requests", "Requests being read or answered", self.in_flight.clone());
        registry.register(
            "buffered_body_bytes",
            "Request body bytes held in memory",
            self.body_bytes.clone(),
        );
    }
}

/// The shared counters of the limits; cheap to clone.
#[derive(Debug, Clone)]
pub struct Shedder {
    pub limits: Limits,
    connections: Arc<Semaphore>,
    in_flight: Arc<Semaphore>,
    body_bytes: Arc<Semaphore>,
    pub metrics: ShedMetrics,
}

impl Shedder {
    pub fn new(limits: Limits) -> Self {
        // A Semaphore holds at most usize::MAX >> 3 permits.
        let budget = limits.body_budget_bytes.min(Semaphore::MAX_PERMITS);
        Self {
            limits,
            connections: Arc::new(Semaphore::new(limits.max_connections)),
            in_flight: Arc::new(Semaphore::new(limits.max_in_flight)),
            body_bytes: Arc::new(Semaphore::new(budget)),
            metrics: ShedMetrics::default(),
        }
    }

    /// A connection slot, or None (the caller closes the connection) when all are taken.
    pub fn connection(&self) -> Option<ConnectionSlot> {
        match Arc::clone(&self.connections).try_acquire_owned() {
            Ok(permit) => {
                self.metrics.connections.inc();
                Some(ConnectionSlot { _permit: permit, gauge: self.metrics.connections.clone() })
            }
            Err(_) => {
                self.metrics.shed.get_or_create(&ShedLabels { limit: "connections" }).inc();
                None
            }
        }
    }

    /// Reserves `n` more body bytes into `held` for a body that will then hold `total`, or says
    /// no. A large body must leave the small bodies' headroom free.
    fn reserve(&self, held: &mut Option<OwnedSemaphorePermit>, n: usize, total: usize) -> bool {
        if n == 0 {
            return true;
        }
        let headroom = SMALL_BODY_HEADROOM.min(self.limits.body_budget_bytes / 4);
        if total > SMALL_BODY_BYTES && self.body_bytes.available_permits() < n.saturating_add(headroom) {
            return false;
        }
        let Ok(n32) = u32::try_from(n) else { return false };
        match Arc::clone(&self.body_bytes).try_acquire_many_owned(n32) {
            Ok(permit) => {
                self.metrics.body_bytes.inc_by(n as i64);
                match held {
                    Some(h) => h.merge(permit),
                    None => *held = Some(permit),
                }
                true
            }
            Err(_) => false,
        }
    }

    fn release(&self, held: Option<OwnedSemaphorePermit>) {
        if let Some(permit) = held {
            self.metrics.body_bytes.dec_by(permit.num_permits() as i64);
        }
    }

    fn refuse(&self, limit: &'static str, status: StatusCode, message: &str) -> Response {
        self.metrics.shed.get_or_create(&ShedLabels { limit }).inc();
        let mut response = (status, format!("{message}\n")).into_response();
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        response
    }
}

/// Held for as long as the connection is open.
pub struct ConnectionSlot {
    _permit: OwnedSemaphorePermit,
    gauge: Gauge,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// The middleware: an in-flight slot, then the body read into memory within the byte budget, then
/// the rest of the app with the body as one buffer. Slot and bytes are released with the response.
pub async fn shed(State(shedder): State<Shedder>, request: Request, next: Next) -> Response {
    let Ok(_slot) = Arc::clone(&shedder.in_flight).try_acquire_owned() else {
        return shedder.refuse("in_flight", StatusCode::TOO_MANY_REQUESTS, "too many requests in flight");
    };
    shedder.metrics.in_flight.inc();
    let _in_flight = GaugeGuard(shedder.metrics.in_flight.clone());
    let (parts, body) = request.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return too_large();
    }
    let mut held = None;
    let expected = declared.unwrap_or(0) as usize;
    if !shedder.reserve(&mut held, expected, expected) {
        return shedder.refuse(
            "body_bytes",
            StatusCode::SERVICE_UNAVAILABLE,
            "request body budget exhausted",
        );
    }
    let read = tokio::time::timeout(REQUEST_TIMEOUT, read_body(&shedder, &mut held, expected, body)).await;
    let result = match read {
        Err(_) => {
            Err((StatusCode::REQUEST_TIMEOUT, "the request body was not complete in time").into_response())
        }
        Ok(result) => result,
    };
    let response = match result {
        Ok(bytes) => next.run(Request::from_parts(parts, Body::from(bytes))).await,
        Err(response) => response,
    };
    shedder.release(held);
    response
}

async fn read_body(
    shedder: &Shedder,
    held: &mut Option<OwnedSemaphorePermit>,
    expected: usize,
    body: Body,
) -> Result<Bytes, Response> {
    let mut body = body;
    let mut buffer = Vec::with_capacity(expected.min(MAX_BODY_BYTES));
    let mut reserved = expected;
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|e| (StatusCode::BAD_REQUEST, format!("reading the body: {e}\n")).into_response())?;
        let Ok(data) = frame.into_data() else { continue };
        if buffer.len() + data.len() > MAX_BODY_BYTES {
            return Err(too_large());
        }
        let needed = (buffer.len() + data.len()).saturating_sub(reserved);
        if !shedder.reserve(held, needed, buffer.len() + data.len()) {
            return Err(shedder.refuse(
                "body_bytes",
                StatusCode::SERVICE_UNAVAILABLE,
                "request body budget exhausted",
            ));
        }
        reserved += needed;
        buffer.extend_from_slice(&data);
    }
    Ok(Bytes::from(buffer))
}

fn too_large() -> Response {
    let message = format!("request body larger than {MAX_BODY_BYTES} bytes\n");
    (StatusCode::PAYLOAD_TOO_LARGE, message).into_response()
}

struct GaugeGuard(Gauge);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// How long an idle HTTP/2 connection's keep-alive ping may go unanswered.
pub const H2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);
