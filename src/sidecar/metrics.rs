//! The sidecar's metrics, and what its admin endpoints (`/metrics`, `/livez`, `/readyz`) report.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::runtime::admin::{Health, MetricsText};
use crate::runtime::build_info;
use crate::sidecar::census::Role;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RoleLabels {
    pub role: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    pub value: &'static str,
    pub result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

const ROLE_VALUES: [&str; 3] = ["leader", "follower", "unknown"];

/// Every metric of the sidecar; cheap to clone (the metrics share their values).
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub role: Family<RoleLabels, Gauge>,
    pub census_polls: Counter,
    pub census_poll_errors: Family<KindLabels, Counter>,
    pub label_writes: Family<WriteLabels, Counter>,
    pub peer_file_writes: Family<ResultLabels, Counter>,
    pub peer_file_peers: Gauge,
    pub pod_watch_errors: Counter,
    pub predecessor_departures: Family<ResultLabels, Counter>,
    pub saved_members_forgotten: Counter,
}

impl Metrics {
    pub fn new() -> Self {
        let metrics = Self::default();
        // All three series exist from the start, so a dashboard can tell 0 from missing.
        metrics.set_role(None);
        metrics
    }

    pub fn registry(&self) -> Registry {
        let mut root = Registry::with_prefix("hab_bootstrap");
        build_info::register(&mut root, "sidecar");
        let registry = root.sub_registry_with_prefix("sidecar");
        registry.register(
            "role",
            "1 for the role the census gives this pod now (leader, follower or unknown)",
            self.role.clone(),
        );
        registry.register(
            "census_polls",
            "Census requests made to the local supervisor",
            self.census_polls.clone(),
        );
        registry.register(
            "census_poll_errors",
            "Census requests that gave no census, by kind (connect, request, timeout, status, body, parse)",
            self.census_poll_errors.clone(),
        );
        registry.register(
            "label_writes",
            "Role label patches sent to the API server, by value written and result",
            self.label_writes.clone(),
        );
        registry.register(
            "peer_watch_file_writes",
            "Replacements of the peer watch file, by result",
            self.peer_file_writes.clone(),
        );
        registry.register(
            "peer_watch_file_peers",
            "Peers in the peer watch file",
            self.peer_file_peers.clone(),
        );
        registry.register(
            "pod_watch_errors",
            "Errors from the watch on the StatefulSet's pods",
            self.pod_watch_errors.clone(),
        );
        registry.register(
            "predecessor_departures",
            "Departures of this pod's dead predecessor from the ring (it counted in the quorum), by result",
            self.predecessor_departures.clone(),
        );
        registry.register(
            "saved_members_forgotten",
            "Saved ring members removed from the Supervisor's rumor files at pod start, so it reads the peer file",
            self.saved_members_forgotten.clone(),
        );
        root
    }

    pub fn set_role(&self, role: Option<Role>) {
        let current = role.map_or("unknown", Role::as_str);
        for value in ROLE_VALUES {
            let gauge = self.role.get_or_create(&RoleLabels { role: value });
            gauge.set(i64::from(value == current));
        }
    }

    /// Label patches sent, whatever their result: 0 in a steady state.
    pub fn label_writes_total(&self) -> u64 {
        let mut total = 0;
        for value in ["leader", "follower", "removed"] {
            for result in ["ok", "error"] {
                if let Some(counter) = self.label_writes.get(&WriteLabels { value, result }) {
                    total += counter.get();
                }
            }
        }
        total
    }

    pub fn ghost_departed(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.predecessor_departures.get_or_create(&ResultLabels { result }).inc();
    }

    pub fn census_poll_errors_of(&self, kind: &'static str) -> u64 {
        self.census_poll_errors.get(&KindLabels { kind }).map_or(0, |counter| counter.get())
    }
}

/// The OpenMetrics text of every metric of the sidecar, for the admin server's `/metrics`.
pub fn metrics_text(metrics: &Metrics) -> MetricsText {
    let registry = Arc::new(metrics.registry());
    Arc::new(move || {
        let mut body = String::new();
        prometheus_client::encoding::text::encode(&mut body, &registry).map(|()| body)
    })
}

/// The sidecar's health: live while the role loop beats, ready once the peer file is written
/// (at once without one).
pub fn health(stale_after: Duration, ready: bool) -> Health {
    Health::new(stale_after, ready).with_messages("peer watch file not written yet\n", "role loop stalled\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_every_metric() {
        let metrics = Metrics::new();
        metrics.set_role(Some(Role::Leader));
        metrics.census_polls.inc();
        metrics.census_poll_errors.get_or_create(&KindLabels { kind: "timeout" }).inc();
        metrics.label_writes.get_or_create(&WriteLabels { value: "leader", result: "ok" }).inc();
        metrics.peer_file_writes.get_or_create(&ResultLabels { result: "ok" }).inc();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &metrics.registry()).unwrap();
        for line in [
            "hab_bootstrap_sidecar_role{role=\"leader\"} 1",
            "hab_bootstrap_sidecar_role{role=\"unknown\"} 0",
            "hab_bootstrap_sidecar_census_polls_total 1",
            "hab_bootstrap_sidecar_census_poll_errors_total{kind=\"timeout\"} 1",
            "hab_bootstrap_sidecar_label_writes_total{value=\"leader\",result=\"ok\"} 1",
            "hab_bootstrap_sidecar_peer_watch_file_writes_total{result=\"ok\"} 1",
            "hab_bootstrap_sidecar_peer_watch_file_peers 0",
            "hab_bootstrap_sidecar_pod_watch_errors_total 0",
            &format!(
                "hab_bootstrap_build_info{{version=\"{}\",component=\"sidecar\"}} 1",
                build_info::VERSION
            ),
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} missing in\n{text}");
        }
        assert_eq!(metrics.label_writes_total(), 1);
        assert_eq!(metrics.census_poll_errors_of("timeout"), 1);
    }

    use axum::Router;
    use axum::http::StatusCode;

    use crate::runtime::admin;

    async fn get(router: &Router, path: &str) -> (StatusCode, String) {
        use tower::ServiceExt;
        let request = axum::http::Request::get(path).body(axum::body::Body::empty()).unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn admin_endpoints_answer() {
        let metrics = Metrics::new();
        let health = Arc::new(health(Duration::from_secs(60), false));
        let router = admin::router(health.clone(), metrics_text(&metrics));
        let (status, body) = get(&router, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("hab_bootstrap_sidecar_role{role=\"unknown\"} 1"), "{body}");
        assert_eq!(get(&router, "/livez").await.0, StatusCode::OK);
        assert_eq!(get(&router, "/readyz").await.0, StatusCode::SERVICE_UNAVAILABLE);
        health.set_ready();
        assert_eq!(get(&router, "/readyz").await.0, StatusCode::OK);
    }
}
