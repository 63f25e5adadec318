//! Escaped pods: opted-in StatefulSets whose pods the webhook was never asked about. Pure: the scan
//! ([`crate::webhook::scan`]) feeds in its caches and turns what is found into metrics, Events and
//! log lines.
//!
//! Two ways to escape. The StatefulSet was annotated while the webhook configuration was absent (not
//! installed yet, or deleted as the emergency exit): its template never got the label the pod
//! webhook selects on, so none of its pods is sent to the webhook. Or the template is labelled but
//! pods were created while the configuration was absent: they carry the label and no status
//! annotation.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::injection::annotations;
use crate::injection::pod_identity::statefulset_controller;
use crate::injection::template_label::{escaped_pods_fix, template_label_fix, template_labelled};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Annotated, but the pod template lacks the label: its pods are never sent to the webhook.
    TemplateUnlabelled,
    /// Pods of the StatefulSet without the status annotation (sorted by ordinal).
    PodsNotInjected(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Escape {
    pub namespace: String,
    pub statefulset: String,
    pub uid: String,
    pub problem: Problem,
}

/// Event notes are cut at 1 kB: name this many pods, then count the rest.
const PODS_NAMED: usize = 10;

impl Escape {
    /// The Event's reason.
    pub fn reason(&self) -> &'static str {
        match self.problem {
            Problem::TemplateUnlabelled => "TemplateLabelMissing",
            Problem::PodsNotInjected(_) => "PodsNotInjected",
        }
    }

    /// What is wrong and how to fix it, for the Event and the log.
    pub fn message(&self) -> String {
        let (ns, name) = (self.namespace.as_str(), self.statefulset.as_str());
        match &self.problem {
            Problem::TemplateUnlabelled => format!(
                "annotated {label}: \"true\" but the pod template has no label {label}: \"true\" (annotated before \
                 the webhook was installed, or while its configuration was absent): its pods are created without \
                 injection. Fix: {}",
                template_label_fix(ns, name),
                label = annotations::BOOTSTRAP
            ),
            Problem::PodsNotInjected(pods) => {
                let named: Vec<&str> = pods.iter().take(PODS_NAMED).map(String::as_str).collect();
                let more = match pods.len().saturating_sub(PODS_NAMED) {
                    0 => String::new(),
                    n => format!(" and {n} more"),
                };
                format!(
                    "{} pod(s) never injected (created while the webhook configuration was absent): {}{more}. Fix: {}",
                    pods.len(),
                    named.join(", "),
                    escaped_pods_fix(ns, &named)
                )
            }
        }
    }

    /// The Event's name: the same for every replica that finds the same problem, so the first
    /// replica's create wins and the others get 409 (AlreadyExists); a different set of pods, or the
    /// same problem after it was fixed and came back on a recreated StatefulSet, gets a new name.
    pub fn event_name(&self) -> String {
        let mut fingerprint = format!("{}\n{}", self.uid, self.reason());
        if let Problem::PodsNotInjected(pods) = &self.problem {
            for pod in pods {
                fingerprint.push('\n');
                fingerprint.push_str(pod);
            }
        }
        let digest = ring::digest::digest(&ring::digest::SHA256, fingerprint.as_bytes());
        let hash: String = digest.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect();
        // A name is at most 253 characters; a StatefulSet's name is far shorter in practice.
        let sts: String = self.statefulset.chars().take(200).collect();
        format!("{sts}.{}.{hash}", self.reason().to_ascii_lowercase())
    }

    fn key(&self) -> (String, &'static str) {
        (self.uid.clone(), self.reason())
    }
}

/// What escaped, sorted by namespace, StatefulSet and reason. `pods` (their metadata) need only be
/// the pods that carry the opt-in label (those are the ones the scan caches); pods of StatefulSets
/// that did not opt in are ignored.
pub fn find<'a>(
    statefulsets: impl IntoIterator<Item = &'a StatefulSet>,
    pods: impl IntoIterator<Item = &'a ObjectMeta>,
) -> Vec<Escape> {
    let opted_in: HashMap<&str, &StatefulSet> = statefulsets
        .into_iter()
        .filter(|s| annotations::opted_in(s.metadata.annotations.as_ref()))
        .filter(|s| s.metadata.deletion_timestamp.is_none())
        .filter_map(|s| Some((s.metadata.uid.as_deref()?, s)))
        .collect();
    let mut not_injected: HashMap<&str, Vec<String>> = HashMap::new();
    for meta in pods {
        let injected = meta.annotations.as_ref().is_some_and(|a| a.contains_key(annotations::STATUS));
        if injected || meta.deletion_timestamp.is_some() {
            continue;
        }
        if let Some(owner) = statefulset_controller(meta)
            && opted_in.contains_key(owner.uid.as_str())
        {
            not_injected.entry(owner.uid.as_str()).or_default().push(meta.name.clone().unwrap_or_default());
        }
    }
    let mut out = Vec::new();
    for (uid, sts) in &opted_in {
        let escape = |problem| Escape {
            namespace: sts.metadata.namespace.clone().unwrap_or_default(),
            statefulset: sts.metadata.name.clone().unwrap_or_default(),
            uid: (*uid).to_owned(),
            problem,
        };
        if !template_labelled(sts) {
            out.push(escape(Problem::TemplateUnlabelled));
        }
        if let Some(mut pods) = not_injected.remove(uid) {
            // By ordinal: redis-2 before redis-10.
            pods.sort_by(|a, b| (a.len(), a).cmp(&(b.len(), b)));
            out.push(escape(Problem::PodsNotInjected(pods)));
        }
    }
    out.sort_by(|a, b| {
        (&a.namespace, &a.statefulset, a.reason()).cmp(&(&b.namespace, &b.statefulset, b.reason()))
    });
    out
}

/// What the previous scan found, so that each problem is reported (Event, warning in the log) once
/// when it appears or changes, not on every scan.
#[derive(Debug, Default)]
pub struct Ledger {
    reported: BTreeMap<(String, &'static str), Escape>,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// New since the previous scan, or changed (other pods).
    pub appeared: Vec<Escape>,
    /// Found by the previous scan and no longer (fixed, or the StatefulSet deleted).
    pub resolved: Vec<Escape>,
}

impl Ledger {
    pub fn update(&mut self, current: &[Escape]) -> Changes {
        let mut changes = Changes::default();
        let mut next = BTreeMap::new();
        for escape in current {
            let previous = self.reported.remove(&escape.key());
            if previous.as_ref() != Some(escape) {
                changes.appeared.push(escape.clone());
            }
            next.insert(escape.key(), escape.clone());
        }
        changes.resolved = std::mem::take(&mut self.reported).into_values().collect();
        self.reported = next;
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};

    fn meta(pods: &[Pod]) -> impl Iterator<Item = &ObjectMeta> {
        pods.iter().map(|p| &p.metadata)
    }

    fn sts(name: &str, annotated: bool, labelled: bool) -> StatefulSet {
        let mut s = StatefulSet::default();
        s.metadata.name = Some(name.into());
        s.metadata.namespace = Some("ns".into());
        s.metadata.uid = Some(format!("uid-{name}"));
        if annotated {
            s.metadata.annotations = Some([(annotations::BOOTSTRAP.to_owned(), "true".to_owned())].into());
        }
        if labelled {
            let template = s.spec.get_or_insert_default().template.metadata.get_or_insert_default();
            template.labels = Some([(annotations::BOOTSTRAP.to_owned(), "true".to_owned())].into());
        }
        s
    }

    fn pod(sts: &str, ordinal: u32, injected: bool) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some(format!("{sts}-{ordinal}"));
        p.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "apps/v1".into(),
            kind: "StatefulSet".into(),
            name: sts.into(),
            uid: format!("uid-{sts}"),
            controller: Some(true),
            ..Default::default()
        }]);
        if injected {
            p.metadata.annotations = Some([(annotations::STATUS.to_owned(), String::new())].into());
        }
        p
    }

    #[test]
    fn a_healthy_install_has_nothing() {
        let sets = [sts("redis", true, true), sts("plain", false, false)];
        let pods = [pod("redis", 0, true), pod("redis", 1, true), pod("plain", 0, false)];
        assert_eq!(find(&sets, meta(&pods)), vec![]);
    }

    #[test]
    fn finds_an_unlabelled_template_and_pods_never_injected() {
        let sets = [sts("esc", true, false), sts("redis", true, true), sts("off", false, true)];
        let mut deleting = pod("redis", 3, false);
        deleting.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        let pods = [
            pod("redis", 10, false),
            pod("redis", 2, false),
            pod("redis", 1, true),
            deleting,
            // Its StatefulSet did not opt in: not ours to report.
            pod("off", 0, false),
        ];
        let found = find(&sets, meta(&pods));
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!((found[0].statefulset.as_str(), &found[0].problem), ("esc", &Problem::TemplateUnlabelled));
        assert_eq!(found[1].problem, Problem::PodsNotInjected(vec!["redis-2".into(), "redis-10".into()]));
        assert!(found[0].message().contains("--fix-template-labels"), "{}", found[0].message());
        let message = found[1].message();
        assert!(message.starts_with("2 pod(s) never injected"), "{message}");
        assert!(message.contains("kubectl -n ns delete pod redis-2 redis-10"), "{message}");
    }

    #[test]
    fn long_pod_lists_are_cut() {
        let sets = [sts("big", true, true)];
        let pods: Vec<Pod> = (0..40).map(|i| pod("big", i, false)).collect();
        let message = find(&sets, meta(&pods))[0].message();
        assert!(message.contains("big-9 and 30 more"), "{message}");
        assert!(message.len() < 1000, "{}", message.len());
    }

    #[test]
    fn event_names_are_shared_by_replicas_and_change_with_the_problem() {
        let sets = [sts("redis", true, true)];
        let one = find(&sets, meta(&[pod("redis", 0, false)])).remove(0);
        let again = find(&sets, meta(&[pod("redis", 0, false)])).remove(0);
        let two = find(&sets, meta(&[pod("redis", 0, false), pod("redis", 1, false)])).remove(0);
        assert_eq!(one.event_name(), again.event_name());
        assert_ne!(one.event_name(), two.event_name());
        assert!(one.event_name().starts_with("redis.podsnotinjected."), "{}", one.event_name());
    }

    #[test]
    fn the_ledger_reports_each_problem_once() {
        let sets = [sts("esc", true, false), sts("redis", true, true)];
        let mut ledger = Ledger::default();
        let first = find(&sets, meta(&[pod("redis", 0, false)]));
        assert_eq!(ledger.update(&first).appeared.len(), 2);
        // The same problems: nothing to report.
        assert_eq!(ledger.update(&first), Changes::default());
        // One more pod escaped: that StatefulSet's finding changed.
        let second = find(&sets, meta(&[pod("redis", 0, false), pod("redis", 1, false)]));
        let changes = ledger.update(&second);
        assert_eq!(changes.appeared.len(), 1);
        assert_eq!(changes.appeared[0].statefulset, "redis");
        assert!(changes.resolved.is_empty());
        // Fixed: reported as resolved once; a recurrence is reported again.
        let changes = ledger.update(&[]);
        assert_eq!(changes.resolved.len(), 2);
        assert_eq!(ledger.update(&[]), Changes::default());
        assert_eq!(ledger.update(&first).appeared.len(), 2);
    }
}
