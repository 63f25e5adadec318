//! Prometheus metrics of the webhook.

use std::collections::HashSet;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::runtime::build_info;
use crate::webhook::escaped::{Escape, Problem};

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

/// One series per StatefulSet with a problem, none for a healthy one: the cardinality is the number
/// of problems, not of StatefulSets.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatefulSetLabels {
    pub namespace: String,
    pub statefulset: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertificateLabels {
    /// `serving` (the certificate the webhook serves) or `ca` (the CA in ca.crt that signed it).
    pub certificate: &'static str,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
enum EscapeFamily {
    TemplateLabel,
    Pods,
}

#[derive(Debug)]
pub struct Metrics {
    pub registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub injections: Family<ReasonLabels, Counter>,
    pub skips: Family<ReasonLabels, Counter>,
    pub denials: Family<ReasonLabels, Counter>,
    pub duration: Family<WebhookLabels, Histogram>,
    pub escaped_pods: Family<StatefulSetLabels, Gauge>,
    pub unlabelled_templates: Family<StatefulSetLabels, Gauge>,
    pub certificate_expiry: Family<CertificateLabels, Gauge>,
    /// The escape series set by the previous scan.
    escape_series: Mutex<HashSet<(EscapeFamily, StatefulSetLabels)>>,
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
        let escaped_pods = Family::<StatefulSetLabels, Gauge>::default();
        let unlabelled_templates = Family::<StatefulSetLabels, Gauge>::default();
        let certificate_expiry = Family::<CertificateLabels, Gauge>::default();
        registry.register(
            "escaped_pods",
            "Pods of opted-in StatefulSets that were never injected (no status annotation), by StatefulSet; \
             only StatefulSets with such pods have a series",
            escaped_pods.clone(),
        );
        registry.register(
            "template_label_missing",
            "1 for each opted-in StatefulSet whose pod template lacks the habitat/bootstrap label (its pods \
             are created without injection)",
            unlabelled_templates.clone(),
        );
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "notAfter of the serving certificate and of the CA that signed it, in seconds since the epoch",
            certificate_expiry.clone(),
        );
        build_info::register(&mut registry, "webhook");
        Self {
            registry,
            requests,
            injections,
            skips,
            denials,
            duration,
            escaped_pods,
            unlabelled_templates,
            certificate_expiry,
            escape_series: Mutex::default(),
        }
    }
}

impl Metrics {
    /// Replaces the escape gauges with what the latest scan found: fixed StatefulSets lose their
    /// series, and the others are never absent from a scrape in between.
    pub fn set_escapes(&self, escapes: &[Escape]) {
        let mut current = HashSet::new();
        for escape in escapes {
            let labels = StatefulSetLabels {
                namespace: escape.namespace.clone(),
                statefulset: escape.statefulset.clone(),
            };
            let (family, value) = match &escape.problem {
                Problem::TemplateUnlabelled => (EscapeFamily::TemplateLabel, 1),
                Problem::PodsNotInjected(pods) => {
                    (EscapeFamily::Pods, i64::try_from(pods.len()).unwrap_or(i64::MAX))
                }
            };
            self.escape_family(family).get_or_create(&labels).set(value);
            current.insert((family, labels));
        }
        let mut previous = self.escape_series.lock().unwrap_or_else(|p| p.into_inner());
        for (family, labels) in previous.difference(&current) {
            self.escape_family(*family).remove(labels);
        }
        *previous = current;
    }

    fn escape_family(&self, family: EscapeFamily) -> &Family<StatefulSetLabels, Gauge> {
        match family {
            EscapeFamily::TemplateLabel => &self.unlabelled_templates,
            EscapeFamily::Pods => &self.escaped_pods,
        }
    }

    /// Sets the expiry gauges from the certificates loaded now (absent: no series).
    pub fn set_certificate_expiry(
        &self,
        serving: Option<time::OffsetDateTime>,
        ca: Option<time::OffsetDateTime>,
    ) {
        for (certificate, not_after) in [("serving", serving), ("ca", ca)] {
            let labels = CertificateLabels { certificate };
            match not_after {
                Some(t) => {
                    self.certificate_expiry.get_or_create(&labels).set(t.unix_timestamp());
                }
                None => {
                    self.certificate_expiry.remove(&labels);
                }
            }
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escape(statefulset: &str, problem: Problem) -> Escape {
        Escape { namespace: "ns".into(), statefulset: statefulset.into(), uid: statefulset.into(), problem }
    }

    /// Sorted: series of a family come in hash order.
    fn lines(metrics: &Metrics, prefix: &str) -> Vec<String> {
        let mut lines: Vec<String> =
            metrics.encode().lines().filter(|l| l.starts_with(prefix)).map(str::to_owned).collect();
        lines.sort();
        lines
    }

    #[test]
    fn escapes_have_a_series_while_they_last() {
        let metrics = Metrics::default();
        metrics.set_escapes(&[
            escape("esc", Problem::TemplateUnlabelled),
            escape("redis", Problem::PodsNotInjected(vec!["redis-0".into(), "redis-1".into()])),
        ]);
        assert_eq!(
            lines(&metrics, "hab_bootstrap_template_label_missing{"),
            ["hab_bootstrap_template_label_missing{namespace=\"ns\",statefulset=\"esc\"} 1"]
        );
        assert_eq!(
            lines(&metrics, "hab_bootstrap_escaped_pods{"),
            ["hab_bootstrap_escaped_pods{namespace=\"ns\",statefulset=\"redis\"} 2"]
        );
        // esc fixed: its series goes, redis's stays.
        metrics.set_escapes(&[escape("redis", Problem::PodsNotInjected(vec!["redis-1".into()]))]);
        assert!(lines(&metrics, "hab_bootstrap_template_label_missing{").is_empty());
        assert_eq!(
            lines(&metrics, "hab_bootstrap_escaped_pods{"),
            ["hab_bootstrap_escaped_pods{namespace=\"ns\",statefulset=\"redis\"} 1"]
        );
        metrics.set_escapes(&[]);
        assert!(lines(&metrics, "hab_bootstrap_escaped_pods{").is_empty());
    }

    #[test]
    fn build_info_and_certificate_expiry() {
        let metrics = Metrics::default();
        assert_eq!(
            lines(&metrics, "hab_bootstrap_build_info"),
            [format!(
                "hab_bootstrap_build_info{{version=\"{}\",component=\"webhook\"}} 1",
                build_info::VERSION
            )]
        );
        let at = |s| time::OffsetDateTime::from_unix_timestamp(s).unwrap();
        metrics.set_certificate_expiry(Some(at(1_800_000_000)), Some(at(1_900_000_000)));
        assert_eq!(
            lines(&metrics, "hab_bootstrap_certificate_expiry_timestamp_seconds{"),
            [
                "hab_bootstrap_certificate_expiry_timestamp_seconds{certificate=\"ca\"} 1900000000",
                "hab_bootstrap_certificate_expiry_timestamp_seconds{certificate=\"serving\"} 1800000000",
            ]
        );
        metrics.set_certificate_expiry(Some(at(1_800_000_001)), None);
        assert_eq!(
            lines(&metrics, "hab_bootstrap_certificate_expiry_timestamp_seconds{"),
            ["hab_bootstrap_certificate_expiry_timestamp_seconds{certificate=\"serving\"} 1800000001"]
        );
    }
}
