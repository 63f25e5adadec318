//! The identity environment given to the supervisor container. The prefix is not `HAB_`: Habitat
//! reads `HAB_<PACKAGE>` variables as package configuration.

use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector};

pub const PREFIX: &str = "HABITAT_BOOTSTRAP_";
pub const STATEFULSET: &str = "HABITAT_BOOTSTRAP_STATEFULSET";
pub const SERVICE: &str = "HABITAT_BOOTSTRAP_SERVICE";
pub const SERVICE_FQDN: &str = "HABITAT_BOOTSTRAP_SERVICE_FQDN";
pub const ORDINAL: &str = "HABITAT_BOOTSTRAP_ORDINAL";
pub const POD_FQDN: &str = "HABITAT_BOOTSTRAP_POD_FQDN";
pub const POD_NAME: &str = "HABITAT_BOOTSTRAP_POD_NAME";
pub const POD_NAMESPACE: &str = "HABITAT_BOOTSTRAP_POD_NAMESPACE";
pub const POD_IP: &str = "HABITAT_BOOTSTRAP_POD_IP";
/// Habitat's own setting (not ours, hence its prefix): how often the Supervisor saves its rumors.
pub const PERSIST_PERIOD: &str = "HAB_PERSIST_LOOP_PERIOD_SECS";

pub fn literal(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar { name: name.to_owned(), value: Some(value.into()), value_from: None }
}

pub fn downward(name: &str, field_path: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector { field_path: field_path.to_owned(), api_version: None }),
            ..Default::default()
        }),
    }
}
