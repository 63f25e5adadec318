//! The StatefulSet side of the opt-in: keep the pod-template label equal to the annotation.
//!
//! The API server selects webhooks by labels, not annotations. With the label on the template every
//! pod of an opted-in StatefulSet carries it, so the pod webhook can fail closed for exactly those
//! pods and never be consulted for anyone else's.

use k8s_openapi::api::apps::v1::StatefulSet;

use crate::injection::annotations::{self, BootstrapOptions};
use crate::injection::ring_key;
use crate::injection::settings::InjectionSettings;

#[derive(Debug, Clone)]
pub enum TemplateDecision {
    /// The template already agrees with the annotation.
    Unchanged,
    /// The label set (true) or removed (false) and, for a StatefulSet being created, its ring key
    /// named.
    Relabel { mutated: Box<StatefulSet>, labelled: bool },
    /// Opted in with unusable options: refuse the StatefulSet now rather than each of its pods.
    Deny(String),
}

/// Whether the pod template carries the label the pod webhook selects on: without it the
/// StatefulSet's pods are created without injection, whatever its annotation says.
pub fn template_labelled(sts: &StatefulSet) -> bool {
    let labels = sts.spec.as_ref().and_then(|s| s.template.metadata.as_ref()).and_then(|m| m.labels.as_ref());
    labels.and_then(|l| l.get(annotations::BOOTSTRAP)).is_some_and(|v| v == "true")
}

/// What the operator runs to fix a missing template label (`hab-bootstrap check` and the
/// webhook's escape scan say it): the check flag, or the patch it makes.
pub fn template_label_fix(ns: &str, name: &str) -> String {
    format!(
        "hab-bootstrap check -n {ns} --fix-template-labels (or: kubectl -n {ns} patch statefulset {name} --type merge \
         -p '{{\"spec\":{{\"template\":{{\"metadata\":{{\"labels\":{{\"{label}\":\"true\"}}}}}}}}}}'); this changes the pod \
         template, so the StatefulSet rolls its pods",
        label = annotations::BOOTSTRAP
    )
}

/// What the operator runs for pods never injected while the template is labelled: recreate them.
pub fn escaped_pods_fix(ns: &str, pods: &[&str]) -> String {
    format!(
        "kubectl -n {ns} delete pod {} (one at a time: the StatefulSet controller recreates each, injected)",
        pods.join(" ")
    )
}

/// `creating`: the review is the StatefulSet's CREATE. Only then does it get a ring key of its own
/// (annotation [`annotations::RING_KEY_SECRET`]): Supervisors with a key and without one do not
/// hear each other, so a ring that already runs keeps running without one (docs/sidecar.md says how
/// to add one).
/// `settings`: the webhook's, which the StatefulSet's own sidecar settings must agree with (a limit
/// not below the request).
pub fn decide_template(sts: &StatefulSet, creating: bool, settings: &InjectionSettings) -> TemplateDecision {
    let annotations = sts.metadata.annotations.as_ref();
    let want = annotations::opted_in(annotations);
    if want
        && let Err(e) = BootstrapOptions::from_annotations(annotations)
            .and_then(|options| options.sidecar.apply(settings).map(drop))
    {
        return TemplateDecision::Deny(e);
    }
    let has = template_labelled(sts);
    let name_key =
        want && creating && annotations.is_none_or(|a| !a.contains_key(annotations::RING_KEY_SECRET));
    if want == has && !name_key {
        return TemplateDecision::Unchanged;
    }
    let mut mutated = sts.clone();
    if name_key {
        let name = ring_key::secret_name(sts.metadata.name.as_deref().unwrap_or_default());
        mutated
            .metadata
            .annotations
            .get_or_insert_default()
            .insert(annotations::RING_KEY_SECRET.to_owned(), name);
    }
    let labels = mutated
        .spec
        .get_or_insert_default()
        .template
        .metadata
        .get_or_insert_default()
        .labels
        .get_or_insert_default();
    if want {
        labels.insert(annotations::BOOTSTRAP.to_owned(), "true".to_owned());
    } else {
        labels.remove(annotations::BOOTSTRAP);
    }
    TemplateDecision::Relabel { mutated: Box::new(mutated), labelled: want }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::injection::sidecar_overrides::SIDECAR_CPU_LIMIT;
    use std::collections::BTreeMap;

    fn sts(annotation: Option<&str>, label: Option<&str>) -> StatefulSet {
        let mut s = StatefulSet::default();
        s.metadata.annotations =
            annotation.map(|v| BTreeMap::from([(annotations::BOOTSTRAP.to_string(), v.to_string())]));
        let template_meta = &mut s.spec.get_or_insert_default().template.metadata.get_or_insert_default();
        template_meta.labels = Some(BTreeMap::from([("app".to_string(), "redis".to_string())]));
        if let Some(v) = label {
            template_meta.labels.as_mut().unwrap().insert(annotations::BOOTSTRAP.into(), v.into());
        }
        s
    }

    fn label(s: &StatefulSet) -> Option<String> {
        s.spec.as_ref()?.template.metadata.as_ref()?.labels.as_ref()?.get(annotations::BOOTSTRAP).cloned()
    }

    #[test]
    fn label_follows_annotation() {
        match decide_template(&sts(Some("true"), None), false, &InjectionSettings::default()) {
            TemplateDecision::Relabel { mutated, labelled: true } => {
                assert_eq!(label(&mutated).as_deref(), Some("true"))
            }
            other => panic!("{other:?}"),
        }
        match decide_template(&sts(None, Some("true")), false, &InjectionSettings::default()) {
            TemplateDecision::Relabel { mutated, labelled: false } => assert_eq!(label(&mutated), None),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decide_template(&sts(Some("true"), Some("true")), false, &InjectionSettings::default()),
            TemplateDecision::Unchanged
        ));
        assert!(matches!(
            decide_template(&sts(None, None), true, &InjectionSettings::default()),
            TemplateDecision::Unchanged
        ));
        assert!(matches!(
            decide_template(&sts(Some("false"), None), true, &InjectionSettings::default()),
            TemplateDecision::Unchanged
        ));
        assert!(matches!(
            decide_template(&StatefulSet::default(), true, &InjectionSettings::default()),
            TemplateDecision::Unchanged
        ));
    }

    #[test]
    fn bad_options_deny_the_statefulset() {
        let mut s = sts(Some("true"), None);
        s.metadata.annotations.as_mut().unwrap().insert(annotations::PEER_MODE.into(), "dns".into());
        assert!(
            matches!(decide_template(&s, true, &InjectionSettings::default()), TemplateDecision::Deny(m) if m.contains(annotations::PEER_MODE))
        );
        // Checked against the webhook's settings: a limit below the default request is refused now.
        let mut s = sts(Some("true"), None);
        s.metadata.annotations.as_mut().unwrap().insert(SIDECAR_CPU_LIMIT.into(), "1m".into());
        assert!(matches!(
            decide_template(&s, true, &InjectionSettings::default()),
            TemplateDecision::Deny(m) if m.contains("cpu limit 1m") && m.contains("below its request 5m")
        ));
    }

    fn ring_key(s: &StatefulSet) -> Option<String> {
        s.metadata.annotations.as_ref()?.get(annotations::RING_KEY_SECRET).cloned()
    }

    #[test]
    fn a_statefulset_gets_its_ring_key_when_created_only() {
        let mut created = sts(Some("true"), None);
        created.metadata.name = Some("redis".into());
        match decide_template(&created, true, &InjectionSettings::default()) {
            TemplateDecision::Relabel { mutated, labelled: true } => {
                assert_eq!(ring_key(&mutated).as_deref(), Some("redis-habitat-ring"));
                assert_eq!(label(&mutated).as_deref(), Some("true"));
            }
            other => panic!("{other:?}"),
        }
        // Already labelled (applied with the label), being created: still gets its key.
        let mut labelled = sts(Some("true"), Some("true"));
        labelled.metadata.name = Some("redis".into());
        assert!(matches!(
            decide_template(&labelled, true, &InjectionSettings::default()),
            TemplateDecision::Relabel { .. }
        ));
        // An update of a running ring never adds one.
        match decide_template(&created, false, &InjectionSettings::default()) {
            TemplateDecision::Relabel { mutated, .. } => assert_eq!(ring_key(&mutated), None),
            other => panic!("{other:?}"),
        }
        // The user's choice, a Secret of their own or none, is kept.
        for value in ["mine", annotations::NO_RING_KEY] {
            let mut own = sts(Some("true"), Some("true"));
            own.metadata
                .annotations
                .as_mut()
                .unwrap()
                .insert(annotations::RING_KEY_SECRET.into(), value.into());
            assert!(matches!(
                decide_template(&own, true, &InjectionSettings::default()),
                TemplateDecision::Unchanged
            ));
        }
    }
}
