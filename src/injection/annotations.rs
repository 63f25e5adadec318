//! The StatefulSet annotations users set, and the pod label/annotation we own.
//!
//! The annotation on the StatefulSet is the single source of truth for opting in. The pod-template
//! label is derived from it by our StatefulSet webhook, because the API server can select webhooks
//! on labels but not on annotations (see README, "Fail closed for ours, open for everyone else").

use std::collections::BTreeMap;

use crate::injection::sidecar_overrides::SidecarOverrides;

/// On a StatefulSet: `"true"` opts its pods in. On a pod template / pod (as a label): stamped by us.
pub const BOOTSTRAP: &str = "habitat/bootstrap";
/// On a StatefulSet: name of the supervisor container, when detection by command line is not wanted.
pub const SUPERVISOR_CONTAINER: &str = "habitat/supervisor-container";
/// On a StatefulSet: `"false"` stops the role sidecar from labelling its pod (it still runs: it
/// keeps the Supervisor's peer file and departs the pod's dead predecessor).
pub const ROLE_SIDECAR: &str = "habitat/role-sidecar";
/// On a StatefulSet: `watch-file`, the only peer mode; `peer` (the former `--peer` mode) is read
/// as `watch-file` with a warning.
pub const PEER_MODE: &str = "habitat/peer-mode";
/// On a StatefulSet: the service group (`<service>.<group>`) the role sidecar reports on.
pub const SERVICE_GROUP: &str = "habitat/service-group";
/// On a StatefulSet: the Secret holding the ring's gossip key (`none`: no key). Stamped by our
/// StatefulSet webhook when a StatefulSet is created; set it yourself to use a Secret of your own.
pub const RING_KEY_SECRET: &str = "habitat/ring-key-secret";
/// On a pod: what we injected (JSON), so that a second call converges instead of stacking.
pub const STATUS: &str = "habitat/bootstrap-status";
/// On a pod (a label, `"true"`): written with [`STATUS`], so that the escape scan's watch can ask
/// the API server for the opted-in pods that lack it, and not receive every injected pod's updates.
pub const INJECTED: &str = "habitat/injected";

/// The value of [`RING_KEY_SECRET`] that turns the key off.
pub const NO_RING_KEY: &str = "none";

/// The per-StatefulSet choices read from its annotations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapOptions {
    pub supervisor_container: Option<String>,
    /// Whether the sidecar writes the role label.
    pub role_label: bool,
    /// `habitat/peer-mode: peer` was asked for: it is served by the watch file, with a warning.
    pub legacy_peer_mode: bool,
    pub service_group: Option<String>,
    /// The Secret with the ring key; None: no key (not stamped, or `none`).
    pub ring_key_secret: Option<String>,
    /// The sidecar's settings this StatefulSet picks (resources, image, timings).
    pub sidecar: SidecarOverrides,
}

impl Default for BootstrapOptions {
    fn default() -> Self {
        Self {
            supervisor_container: None,
            role_label: true,
            legacy_peer_mode: false,
            service_group: None,
            ring_key_secret: None,
            sidecar: SidecarOverrides::default(),
        }
    }
}

/// The label selector of the pods of opted-in StatefulSets that we did not inject: what the escape
/// scan watches.
pub fn not_injected_selector() -> String {
    format!("{BOOTSTRAP}=true,!{INJECTED}")
}

/// True when the annotations opt the StatefulSet in.
pub fn opted_in(annotations: Option<&BTreeMap<String, String>>) -> bool {
    annotations.and_then(|a| a.get(BOOTSTRAP)).is_some_and(|v| v == "true")
}

impl BootstrapOptions {
    /// Reads the options; an unreadable value is an error naming the annotation and what it takes,
    /// because guessing would inject something the user did not ask for.
    pub fn from_annotations(annotations: Option<&BTreeMap<String, String>>) -> Result<Self, String> {
        let get = |key: &str| annotations.and_then(|a| a.get(key)).map(|v| v.trim());
        let role_label = match get(ROLE_SIDECAR) {
            None | Some("true") => true,
            Some("false") => false,
            Some(other) => {
                return Err(format!("annotation {ROLE_SIDECAR}={other:?}: use \"true\" or \"false\""));
            }
        };
        let legacy_peer_mode = match get(PEER_MODE) {
            None | Some("watch-file") => false,
            Some("peer") => true,
            Some(other) => {
                return Err(format!(
                    "annotation {PEER_MODE}={other:?}: use \"watch-file\" (or leave it out)"
                ));
            }
        };
        let non_empty = |key: &str| get(key).filter(|v| !v.is_empty()).map(str::to_owned);
        let service_group = non_empty(SERVICE_GROUP);
        if let Some(group) = &service_group
            && !is_service_group(group)
        {
            return Err(format!(
                "annotation {SERVICE_GROUP}={group:?}: expected <service>.<group>, e.g. redis.default"
            ));
        }
        let ring_key_secret = non_empty(RING_KEY_SECRET).filter(|name| name != NO_RING_KEY);
        if let Some(name) = &ring_key_secret
            && !is_dns_subdomain(name)
        {
            return Err(format!(
                "annotation {RING_KEY_SECRET}={name:?}: expected a Secret name (lower-case letters, digits, \
                 '-' and '.') or \"{NO_RING_KEY}\""
            ));
        }
        Ok(Self {
            supervisor_container: non_empty(SUPERVISOR_CONTAINER),
            role_label,
            legacy_peer_mode,
            service_group,
            ring_key_secret,
            sidecar: SidecarOverrides::read(get)?,
        })
    }
}

/// A Kubernetes object name (RFC 1123 subdomain).
fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|part| {
            !part.is_empty()
                && part.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && part.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && part.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
}

fn is_service_group(s: &str) -> bool {
    let mut parts = s.splitn(2, '.');
    let ok = |p: Option<&str>| {
        p.is_some_and(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c)))
    };
    ok(parts.next()) && ok(parts.next())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn opt_in_needs_exactly_true() {
        assert!(opted_in(Some(&annotations(&[(BOOTSTRAP, "true")]))));
        assert!(!opted_in(Some(&annotations(&[(BOOTSTRAP, "True")]))));
        assert!(!opted_in(Some(&annotations(&[(BOOTSTRAP, "false")]))));
        assert!(!opted_in(None));
    }

    #[test]
    fn defaults_when_only_opted_in() {
        let o = BootstrapOptions::from_annotations(Some(&annotations(&[(BOOTSTRAP, "true")]))).unwrap();
        assert_eq!(o, BootstrapOptions::default());
        assert!(o.role_label && !o.legacy_peer_mode && o.ring_key_secret.is_none());
    }

    #[test]
    fn reads_every_option() {
        let a = annotations(&[
            (SUPERVISOR_CONTAINER, "sup"),
            (ROLE_SIDECAR, "false"),
            (PEER_MODE, "watch-file"),
            (SERVICE_GROUP, "redis.prod"),
            (RING_KEY_SECRET, "redis-habitat-ring"),
        ]);
        let o = BootstrapOptions::from_annotations(Some(&a)).unwrap();
        assert_eq!(o.supervisor_container.as_deref(), Some("sup"));
        assert!(!o.role_label);
        assert!(!o.legacy_peer_mode);
        assert_eq!(o.service_group.as_deref(), Some("redis.prod"));
        assert_eq!(o.ring_key_secret.as_deref(), Some("redis-habitat-ring"));
    }

    #[test]
    fn the_former_peer_mode_and_no_ring_key_are_understood() {
        let a = annotations(&[(PEER_MODE, "peer"), (RING_KEY_SECRET, NO_RING_KEY)]);
        let o = BootstrapOptions::from_annotations(Some(&a)).unwrap();
        assert!(o.legacy_peer_mode);
        assert_eq!(o.ring_key_secret, None);
    }

    #[test]
    fn bad_values_name_the_annotation() {
        for (key, value) in [
            (ROLE_SIDECAR, "no"),
            (PEER_MODE, "dns"),
            (SERVICE_GROUP, "redis"),
            (RING_KEY_SECRET, "Not_A_Name"),
        ] {
            let err = BootstrapOptions::from_annotations(Some(&annotations(&[(key, value)]))).unwrap_err();
            assert!(err.contains(key), "{err}");
        }
    }
}
