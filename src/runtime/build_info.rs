//! `hab_bootstrap_build_info{version, component} 1`, the same series name in the webhook and the
//! sidecar, so one query finds every version running (e.g. sidecars injected by an older webhook).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    /// `webhook` or `sidecar`.
    component: &'static str,
}

/// Registers `build_info` in `registry`, whose prefix must be `hab_bootstrap`.
pub fn register(registry: &mut Registry, component: &'static str) {
    let info = Family::<BuildLabels, Gauge>::default();
    info.get_or_create(&BuildLabels { version: VERSION, component }).set(1);
    registry.register("build_info", "1, labelled with the version of this hab-bootstrap", info);
}
