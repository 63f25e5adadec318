//! The StatefulSet side of the opt-in: keep the pod-template label equal to the annotation.
//!
//! The API server selects webhooks by labels, not annotations. With the label on the template every
//! pod of an opted-in StatefulSet carries it, so the pod webhook can fail closed for exactly those
//! pods and never be consulted for anyone else's.

use k8s_openapi::api::apps::v1::StatefulSet;

use crate::injection::annotations::{self, BootstrapOptions};

#[derive(Debug, Clone)]
pub enum TemplateDecision {
    /// The template already agrees with the annotation.
    Unchanged,
    /// Set (true) or remove (false) the label.
    Relabel { mutated: Box<StatefulSet>, labelled: bool },
    /// Opted in with unusable options: refuse the StatefulSet now rather than each of its pods.
    Deny(String),
}

pub fn decide_template(sts: &StatefulSet) -> TemplateDecision {
    let annotations = sts.metadata.annotations.as_ref();
    let want = annotations::opted_in(annotations);
    if want && let Err(e) = BootstrapOptions::from_annotations(annotations) {
        return TemplateDecision::Deny(e);
    }
    let labels = sts.spec.as_ref().and_then(|s| s.template.metadata.as_ref()).and_then(|m| m.labels.as_ref());
    let has = labels.and_then(|l| l.get(annotations::BOOTSTRAP)).is_some_and(|v| v == "true");
    if want == has {
        return TemplateDecision::Unchanged;
    }
    let mut mutated = sts.clone();
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
        match decide_template(&sts(Some("true"), None)) {
            TemplateDecision::Relabel { mutated, labelled: true } => {
                assert_eq!(label(&mutated).as_deref(), Some("true"))
            }
            other => panic!("{other:?}"),
        }
        match decide_template(&sts(None, Some("true"))) {
            TemplateDecision::Relabel { mutated, labelled: false } => assert_eq!(label(&mutated), None),
            other => panic!("{other:?}"),
        }
        assert!(matches!(decide_template(&sts(Some("true"), Some("true"))), TemplateDecision::Unchanged));
        assert!(matches!(decide_template(&sts(None, None)), TemplateDecision::Unchanged));
        assert!(matches!(decide_template(&sts(Some("false"), None)), TemplateDecision::Unchanged));
        assert!(matches!(decide_template(&StatefulSet::default()), TemplateDecision::Unchanged));
    }

    #[test]
    fn bad_options_deny_the_statefulset() {
        let mut s = sts(Some("true"), None);
        s.metadata.annotations.as_mut().unwrap().insert(annotations::PEER_MODE.into(), "dns".into());
        assert!(
            matches!(decide_template(&s), TemplateDecision::Deny(m) if m.contains(annotations::PEER_MODE))
        );
    }
}
