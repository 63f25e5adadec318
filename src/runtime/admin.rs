//! The admin port, plain HTTP, of the webhook and the sidecar alike: `/livez`, `/readyz` and
//! `/metrics`.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

/// What `/livez` and `/readyz` report.
///
/// Ready once [`Health::set_ready`] (the webhook: its caches synced; the sidecar: its peer file
/// written, or at once without one), and not ready again from [`Health::set_terminating`], so that
/// endpoints stop sending work before the process stops taking it. Live as long as the process
/// answers or, with a heartbeat, while [`Health::beat`] is called at least every `stale_after`.
pub struct Health {
    heartbeat: Option<(Mutex<Instant>, Duration)>,
    ready: AtomicBool,
    terminating: AtomicBool,
    not_ready: &'static str,
    stalled: &'static str,
    /// More conditions of readiness: each says why not, or None.
    checks: Vec<ReadinessCheck>,
    /// A fault the watched loop reports (the sidecar: a role label it knows is wrong and cannot
    /// correct), which makes the process not ready until cleared.
    fault: Mutex<Option<String>>,
}

/// A condition of readiness, asked on every `/readyz`: None when met, or the reason it is not.
pub type ReadinessCheck = Box<dyn Fn() -> Option<String> + Send + Sync>;

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health")
            .field("ready", &self.ready)
            .field("terminating", &self.terminating)
            .field("checks", &self.checks.len())
            .finish_non_exhaustive()
    }
}

impl Default for Health {
    /// No heartbeat, not ready yet.
    fn default() -> Self {
        Self {
            heartbeat: None,
            ready: AtomicBool::new(false),
            terminating: AtomicBool::new(false),
            not_ready: "not ready\n",
            stalled: "stalled\n",
            checks: Vec::new(),
            fault: Mutex::new(None),
        }
    }
}

impl Health {
    /// With a heartbeat; `ready` starts false only when something must happen first.
    pub fn new(stale_after: Duration, ready: bool) -> Self {
        Self {
            heartbeat: Some((Mutex::new(Instant::now()), stale_after)),
            ready: AtomicBool::new(ready),
            ..Self::default()
        }
    }

    /// The bodies of a `/readyz` and a `/livez` 503, saying what is awaited and what stalled.
    pub fn with_messages(self, not_ready: &'static str, stalled: &'static str) -> Self {
        Self { not_ready, stalled, ..self }
    }

    /// Adds a condition of readiness (the webhook: its HTTPS listener accepting, its certificate
    /// valid now).
    pub fn with_check(mut self, check: impl Fn() -> Option<String> + Send + Sync + 'static) -> Self {
        self.checks.push(Box::new(check));
        self
    }

    /// Why `/readyz` answers 503, or None when ready.
    pub fn not_ready_reason(&self) -> Option<String> {
        if self.terminating.load(Ordering::SeqCst) {
            return Some("terminating\n".to_owned());
        }
        if !self.ready.load(Ordering::SeqCst) {
            return Some(self.not_ready.to_owned());
        }
        if let Some(fault) = self.fault.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            return Some(format!("{fault}\n"));
        }
        self.checks.iter().find_map(|check| check()).map(|reason| format!("{reason}\n"))
    }

    /// Reports a fault (not ready until cleared with None).
    pub fn set_fault(&self, fault: Option<String>) {
        *self.fault.lock().unwrap_or_else(|e| e.into_inner()) = fault;
    }

    /// The watched loop calls this every round.
    pub fn beat(&self) {
        if let Some((last_beat, _)) = &self.heartbeat {
            *last_beat.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        }
    }

    pub fn is_live(&self) -> bool {
        self.heartbeat.as_ref().is_none_or(|(last_beat, stale_after)| {
            last_beat.lock().unwrap_or_else(|e| e.into_inner()).elapsed() < *stale_after
        })
    }

    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }

    pub fn set_terminating(&self) {
        self.terminating.store(true, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.not_ready_reason().is_none()
    }
}

/// The OpenMetrics text of `/metrics`; Err answers 500.
pub type MetricsText = Arc<dyn Fn() -> Result<String, std::fmt::Error> + Send + Sync>;

#[derive(Clone)]
struct AdminState {
    health: Arc<Health>,
    metrics: MetricsText,
}

pub fn router(health: Arc<Health>, metrics: MetricsText) -> Router {
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(AdminState { health, metrics })
}

/// Serves the admin endpoints until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await
}

async fn livez(State(state): State<AdminState>) -> impl IntoResponse {
    if state.health.is_live() {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, state.health.stalled)
    }
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    match state.health.not_ready_reason() {
        None => (StatusCode::OK, "ok\n".to_owned()),
        Some(reason) => (StatusCode::SERVICE_UNAVAILABLE, reason),
    }
}

async fn metrics_text(State(state): State<AdminState>) -> impl IntoResponse {
    match (state.metrics)() {
        Ok(body) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
            body,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness_follows_the_heartbeat() {
        let health = Health::new(Duration::from_millis(50), false);
        assert!(health.is_live());
        assert!(!health.is_ready());
        std::thread::sleep(Duration::from_millis(80));
        assert!(!health.is_live());
        health.beat();
        assert!(health.is_live());
        health.set_ready();
        assert!(health.is_ready());
    }

    #[test]
    fn every_check_must_pass_and_terminating_wins() {
        let failing = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&failing);
        let health = Health::default()
            .with_check(move || flag.load(Ordering::SeqCst).then(|| "listener down".to_owned()));
        assert_eq!(health.not_ready_reason().as_deref(), Some("not ready\n"));
        health.set_ready();
        assert_eq!(health.not_ready_reason(), None);
        failing.store(true, Ordering::SeqCst);
        assert_eq!(health.not_ready_reason().as_deref(), Some("listener down\n"));
        failing.store(false, Ordering::SeqCst);
        health.set_terminating();
        assert_eq!(health.not_ready_reason().as_deref(), Some("terminating\n"));
    }
}
