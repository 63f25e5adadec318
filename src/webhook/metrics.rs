//! Prometheus metrics of the webhook.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub webhook: &'static str,
    /// `injected`, `unchanged` (already injected as we would), `relabelled`, `skipped`, `denied`,
    /// `bad_request`.
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    pub webhook: &'static str,
}

#[derive(Debug)]
pub struct Metrics {
    pub registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub injections: Family<ReasonLabels, Counter>,
    pub skips: Family<ReasonLabels, Counter>,
    pub denials: Family<ReasonLabels, Counter>,
    pub duration: Family<WebhookLabels, Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("hab_bootstrap");
        let requests = Family::<RequestLabels, Counter>::default();
        let injections = Family::<ReasonLabels, Counter>::default();
        let skips = Family::<ReasonLabels, Counter>::default();
        let denials = Family::<ReasonLabels, Counter>::default();
        // From 50 µs: a cache-only answer takes tens of microseconds, a live read milliseconds; up
        // to 30 s, the longest timeout the API server allows, so that answers cut by the review's
        // deadline are seen for what they are.
        let duration = Family::<WebhookLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5, 5.0, 10.0, 15.0, 30.0,
            ])
        });
        registry.register(
            "admission_requests",
            "Admission requests by webhook and outcome",
            requests.clone(),
        );
        registry.register("injections", "Pods injected, by peer plan", injections.clone());
        registry.register("skips", "Pods of StatefulSets left alone, by reason", skips.clone());
        registry.register("denials", "Pods of opted-in StatefulSets refused, by reason", denials.clone());
        registry.register(
            "admission_duration_seconds",
            "Time to answer an admission request",
            duration.clone(),
        );
        Self { registry, requests, injections, skips, denials, duration }
    }
}

impl Metrics {
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}
