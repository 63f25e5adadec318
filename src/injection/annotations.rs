//! The StatefulSet annotations users set, and the pod label/annotation we own.
//!
//! The annotation on the StatefulSet is the single source of truth for opting in. The pod-template
//! label is derived from it by our StatefulSet webhook, because the API server can select webhooks
//! on labels but not on annotations (see README, "Fail closed for ours, open for everyone else").

use std::collections::BTreeMap;

/// On a StatefulSet: `"true"` opts its pods in. On a pod template / pod (as a label): stamped by us.
pub const BOOTSTRAP: &str = "habitat/bootstrap";
/// On a StatefulSet: name of the supervisor container, when detection by command line is not wanted.
pub const SUPERVISOR_CONTAINER: &str = "habitat/supervisor-container";
/// On a StatefulSet: `"false"` opts out of the role sidecar.
pub const ROLE_SIDECAR: &str = "habitat/role-sidecar";
/// On a StatefulSet: `peer` (default) or `watch-file`.
pub const PEER_MODE: &str = "habitat/peer-mode";
/// On a StatefulSet: the service group (`<service>.<group>`) the role sidecar reports on.
pub const SERVICE_GROUP: &str = "habitat/service-group";
/// On a pod: what we injected (JSON), so that a second call converges instead of stacking.
pub const STATUS: &str = "habitat/bootstrap-status";

/// How the supervisor learns its peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PeerMode {
    /// `--peer <name>` arguments computed at admission (resolved once, at supervisor start).
    #[default]
    Args,
    /// `--peer-watch-file`, kept current by the role sidecar.
    WatchFile,
}

/// The per-StatefulSet choices read from its annotations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BootstrapOptions {
    pub supervisor_container: Option<String>,
    pub role_sidecar: bool,
    pub peer_mode: PeerMode,
    pub service_group: Option<String>,
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
        let role_sidecar = match get(ROLE_SIDECAR) {
            None | Some("true") => true,
            Some("false") => false,
            Some(other) => {
                return Err(format!("annotation {ROLE_SIDECAR}={other:?}: use \"true\" or \"false\""));
            }
        };
        let peer_mode = match get(PEER_MODE) {
            None | Some("peer") => PeerMode::Args,
            Some("watch-file") => PeerMode::WatchFile,
            Some(other) => {
                return Err(format!("annotation {PEER_MODE}={other:?}: use \"peer\" or \"watch-file\""));
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
        Ok(Self {
            supervisor_container: non_empty(SUPERVISOR_CONTAINER),
            role_sidecar,
            peer_mode,
            service_group,
        })
    }
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
        assert_eq!(o, BootstrapOptions { role_sidecar: true, ..Default::default() });
    }

    #[test]
    fn reads_every_option() {
        let a = annotations(&[
            (SUPERVISOR_CONTAINER, "sup"),
            (ROLE_SIDECAR, "false"),
            (PEER_MODE, "watch-file"),
            (SERVICE_GROUP, "redis.prod"),
        ]);
        let o = BootstrapOptions::from_annotations(Some(&a)).unwrap();
        assert_eq!(o.supervisor_container.as_deref(), Some("sup"));
        assert!(!o.role_sidecar);
        assert_eq!(o.peer_mode, PeerMode::WatchFile);
        assert_eq!(o.service_group.as_deref(), Some("redis.prod"));
    }

    #[test]
    fn bad_values_name_the_annotation() {
        for (key, value) in [(ROLE_SIDECAR, "no"), (PEER_MODE, "dns"), (SERVICE_GROUP, "redis")] {
            let err = BootstrapOptions::from_annotations(Some(&annotations(&[(key, value)]))).unwrap_err();
            assert!(err.contains(key), "{err}");
        }
    }
}
