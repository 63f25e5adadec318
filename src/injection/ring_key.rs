//! The ring key that keeps one StatefulSet's ring apart from every other ring.
//!
//! A crashed member's ring keeps pinging its last address; when Kubernetes hands that address to a
//! Supervisor of another StatefulSet, the two rings merge and elect one leader between them (issue
//! 9, failure 3; Habitat issue 5865). Gossip encrypted with a key of its own per StatefulSet cannot
//! be read by any other ring. The key lives in a Secret that the webhook creates; the pod spec only
//! names it (`HAB_RING_KEY` from a `secretKeyRef`), so it is never in the pod spec or the logs.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, SecretKeySelector};

/// The Supervisor reads the key's contents from this variable (`hab sup run --ring-key`).
pub const RING_KEY_ENV: &str = "HAB_RING_KEY";
/// The key in the Secret's data.
pub const SECRET_KEY: &str = "ring-key";
/// Supervisor flags and variables by which a user brings a ring key of their own.
pub const USER_RING_FLAGS: [&str; 3] = ["--ring", "--ring-key", "-r"];
pub const USER_RING_ENV: [&str; 2] = ["HAB_RING", "HAB_RING_KEY"];

/// The Secret's name for a StatefulSet: `<sts>-habitat-ring`, cut to the 253 characters a name may
/// have (StatefulSet names are at most 253 too, but pods' practical limit keeps them far shorter).
pub fn secret_name(statefulset: &str) -> String {
    let mut name = format!("{statefulset}-habitat-ring");
    name.truncate(253);
    name
}

/// The contents of a Habitat symmetric ring key (components/core/src/crypto/keys/ring_key.rs):
/// `SYM-SEC-1`, the key's `<name>-<revision>` (revision: a UTC timestamp `YYYYMMDDhhmmss`), an
/// empty line, and the 32-byte secretbox key in base64.
pub fn key_contents(name: &str, revision: &str, secret: &[u8; 32]) -> String {
    format!("SYM-SEC-1\n{name}-{revision}\n\n{}", STANDARD.encode(secret))
}

/// The Secret's labels: who made it, for which StatefulSet.
pub fn secret_labels(statefulset: &str) -> BTreeMap<String, String> {
    let mut labels =
        BTreeMap::from([("app.kubernetes.io/managed-by".to_owned(), "hab-bootstrap".to_owned())]);
    // A label value holds 63 characters; a longer name is still in the owner reference.
    if statefulset.len() <= 63 {
        labels.insert("habitat/statefulset".to_owned(), statefulset.to_owned());
    }
    labels
}

/// The Secret's `stringData`.
pub fn secret_data(name: &str, revision: &str, secret: &[u8; 32]) -> BTreeMap<String, String> {
    BTreeMap::from([(SECRET_KEY.to_owned(), key_contents(name, revision, secret))])
}

/// The Supervisor's variable, read from the Secret by the kubelet.
pub fn env_var(secret: &str) -> EnvVar {
    EnvVar {
        name: RING_KEY_ENV.to_owned(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.to_owned(),
                key: SECRET_KEY.to_owned(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contents_have_habitats_layout() {
        let contents = key_contents("redis", "20261201212800", &[7; 32]);
        let lines: Vec<&str> = contents.split('\n').collect();
        assert_eq!(lines[0], "SYM-SEC-1");
        assert_eq!(lines[1], "redis-20261201212800");
        assert_eq!(lines[2], "");
        assert_eq!(STANDARD.decode(lines[3]).unwrap(), [7; 32]);
        assert_eq!(lines.len(), 4, "no trailing newline");
    }

    #[test]
    fn the_env_var_names_the_secret_not_the_key() {
        let var = env_var("redis-habitat-ring");
        assert_eq!(var.name, "HAB_RING_KEY");
        assert!(var.value.is_none());
        let selector = var.value_from.unwrap().secret_key_ref.unwrap();
        assert_eq!((selector.name.as_str(), selector.key.as_str()), ("redis-habitat-ring", "ring-key"));
    }

    #[test]
    fn secret_names_stay_within_the_limit() {
        assert_eq!(secret_name("redis"), "redis-habitat-ring");
        assert_eq!(secret_name(&"a".repeat(300)).len(), 253);
    }
}
