//! The polling loop: census → role → label write, with the I/O at the edges.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{info, warn};

use crate::runtime::admin::Health;
use crate::sidecar::census::{Census, Role, RoleDecision, decide_role};
use crate::sidecar::census_client::CensusClient;
use crate::sidecar::label::{LabelAction, LabelWriteError, LabelWriter};
use crate::sidecar::metrics::{KindLabels, Metrics, WriteLabels};
use crate::sidecar::role_state::{Backoff, RoleTracker};

#[derive(Debug, Clone)]
pub struct RoleLoopConfig {
    pub service_group: Option<String>,
    pub interval: Duration,
    pub unknown_grace: Duration,
    /// Bounds one label patch; a hung API call must not stop the polling.
    pub write_timeout: Duration,
    /// Bounds the label removal on the way out (attempts included).
    pub shutdown_timeout: Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Minimum time between leader/follower label changes (0: none).
    pub min_dwell: Duration,
    /// How long a label write the pod needs may keep failing (the API server unreachable) before
    /// the sidecar reports not ready, so that the pod leaves the endpoints of the Services that
    /// select it by role instead of being steered to by a label that may be wrong.
    pub api_grace: Duration,
}

impl RoleLoopConfig {
    pub fn new(service_group: Option<String>, interval: Duration, unknown_grace: Duration) -> Self {
        Self {
            service_group,
            interval,
            unknown_grace,
            write_timeout: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(10),
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            min_dwell: Duration::ZERO,
            api_grace: Duration::from_secs(20),
        }
    }
}

/// What one poll saw, reduced to what is logged once per change.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Decision(RoleDecision),
    PollFailed(&'static str),
}

pub struct RoleLoop<W> {
    census: CensusClient,
    writer: W,
    config: RoleLoopConfig,
    metrics: Metrics,
    health: Arc<Health>,
    tracker: RoleTracker,
    backoff: Backoff,
    retry_at: Option<Instant>,
    /// Since when a needed label write has not succeeded.
    failing_since: Option<Instant>,
    last_seen: Option<Seen>,
    /// Every census fetched, for the tasks that read it too (the predecessor's departure).
    censuses: watch::Sender<Option<Arc<Census>>>,
}

impl<W: LabelWriter> RoleLoop<W> {
    pub fn new(
        census: CensusClient,
        writer: W,
        config: RoleLoopConfig,
        metrics: Metrics,
        health: Arc<Health>,
    ) -> Self {
        Self {
            tracker: RoleTracker::new(config.unknown_grace).with_min_dwell(config.min_dwell),
            backoff: Backoff::new(config.backoff_base, config.backoff_max),
            census,
            writer,
            config,
            metrics,
            health,
            retry_at: None,
            failing_since: None,
            last_seen: None,
            censuses: watch::Sender::new(None),
        }
    }

    /// The censuses this loop fetches, as they come.
    pub fn censuses(&self) -> watch::Receiver<Option<Arc<Census>>> {
        self.censuses.subscribe()
    }

    /// Polls until `shutdown` resolves, then removes the label (best effort, bounded).
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        let mut ticker = tokio::time::interval(self.config.interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                _ = ticker.tick() => {}
            }
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                () = self.round() => {}
            }
        }
        self.remove_on_shutdown().await;
    }

    async fn round(&mut self) {
        self.health.beat();
        let role = self.poll().await;
        self.metrics.set_role(role);
        let now = Instant::now();
        let Some(action) = self.tracker.observe(role, now.into_std()) else {
            // The label is what it should be (or held by the dwell): nothing is wrong.
            self.label_fault(None);
            return;
        };
        if self.retry_at.is_some_and(|at| now < at) {
            self.label_fault(Some(now));
            return;
        }
        match self.write(action).await {
            Ok(()) => {
                self.backoff.reset();
                self.retry_at = None;
                self.label_fault(None);
            }
            Err(err) => {
                let wait = self.backoff.after_failure(fastrand::f64());
                self.retry_at = Some(now + wait);
                warn!(error = %err, action = action.metric_value(), retry_in = ?wait, "role label write failed");
                self.label_fault(Some(now));
            }
        }
    }

    /// Tracks how long a needed write has been failing (None: it is not); past `api_grace`, the
    /// sidecar is not ready until a write goes through or none is needed.
    fn label_fault(&mut self, failing_at: Option<Instant>) {
        let Some(now) = failing_at else {
            if self.failing_since.take().is_some_and(|since| since.elapsed() >= self.config.api_grace) {
                info!("role label correct again: ready");
            }
            self.health.set_fault(None);
            return;
        };
        let since = *self.failing_since.get_or_insert(now);
        let failing_for = now.saturating_duration_since(since);
        if failing_for >= self.config.api_grace {
            let fault = format!(
                "the role label has needed a write for {failing_for:.0?} that the API server did not take:                  not ready, so that Services stop selecting this pod by a label that may be wrong"
            );
            if self.health.not_ready_reason().is_none() {
                warn!(%fault, "role label stale");
            }
            self.health.set_fault(Some(fault));
        }
    }

    async fn poll(&mut self) -> Option<Role> {
        self.metrics.census_polls.inc();
        match self.census.fetch().await {
            Ok(census) => {
                let decision = decide_role(&census, self.config.service_group.as_deref());
                let role = decision.role();
                if !matches!(&self.last_seen, Some(Seen::Decision(last)) if *last == decision) {
                    info!(role = %decision, "census role changed");
                    self.last_seen = Some(Seen::Decision(decision));
                }
                self.censuses.send_replace(Some(Arc::new(census)));
                role
            }
            Err(err) => {
                let kind = err.kind();
                self.metrics.census_poll_errors.get_or_create(&KindLabels { kind }).inc();
                if self.last_seen != Some(Seen::PollFailed(kind)) {
                    warn!(census_url = %self.census.url(), error = %err, "census unavailable: role unknown");
                    self.last_seen = Some(Seen::PollFailed(kind));
                }
                None
            }
        }
    }

    async fn write(&mut self, action: LabelAction) -> Result<(), LabelWriteError> {
        let timeout = self.config.write_timeout;
        let result = tokio::time::timeout(timeout, self.writer.apply(action))
            .await
            .unwrap_or(Err(LabelWriteError::Timeout(timeout)));
        let outcome = if result.is_ok() { "ok" } else { "error" };
        self.metrics
            .label_writes
            .get_or_create(&WriteLabels { value: action.metric_value(), result: outcome })
            .inc();
        if result.is_ok() {
            self.tracker.written(action);
            info!(action = action.metric_value(), "role label written");
        }
        result
    }

    async fn remove_on_shutdown(&mut self) {
        let Some(action) = self.tracker.on_shutdown() else {
            return;
        };
        let limit = self.config.shutdown_timeout;
        let removed = tokio::time::timeout(limit, async {
            let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(2));
            while let Err(err) = self.write(action).await {
                let wait = backoff.after_failure(fastrand::f64());
                warn!(error = %err, retry_in = ?wait, "removing the role label failed");
                tokio::time::sleep(wait).await;
            }
        })
        .await;
        if removed.is_err() {
            warn!(within = ?limit, "could not remove the role label before exiting");
        }
    }
}
