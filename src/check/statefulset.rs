//! Every opted-in StatefulSet: the template label the pod webhook selects on, every pod injected
//! (its status annotation, and by which version), and the role sidecar's RBAC for its mode.
//! Also the "escaped" pods: created while the webhook could not see them, never injected.

use std::collections::BTreeMap;

use super::{Finding, qualified};
use crate::injection::annotations::{self, BootstrapOptions};
use crate::injection::render::status::InjectionStatus;
use crate::injection::template_label::{escaped_pods_fix, template_label_fix};

/// One permission the sidecar's ServiceAccount needs, and whether a SubjectAccessReview allowed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    pub group: &'static str,
    pub resource: &'static str,
    pub verb: &'static str,
    pub why: &'static str,
    /// Without it the sidecar fails (an error); otherwise something is only missing (a warning).
    pub required: bool,
    pub allowed: Result<bool, String>,
}

/// What the sidecar of a StatefulSet with `options` asks the API server for.
pub fn needed_access(options: &BootstrapOptions) -> Vec<Access> {
    let mut out = Vec::new();
    if options.role_label {
        out.push(Access {
            group: "",
            resource: "pods",
            verb: "patch",
            why: "to set the role label on its pod",
            required: true,
            allowed: Ok(false),
        });
    }
    for verb in ["list", "watch"] {
        out.push(Access {
            group: "",
            resource: "pods",
            verb,
            why: "to keep the peer watch file equal to the live pods",
            required: true,
            allowed: Ok(false),
        });
    }
    out.push(Access {
        group: "events.k8s.io",
        resource: "events",
        verb: "create",
        why: "to record Events (a departed predecessor)",
        required: false,
        allowed: Ok(false),
    });
    out
}

#[derive(Debug, Clone)]
pub struct PodFacts {
    pub name: String,
    /// The raw status annotation, when present.
    pub status: Option<String>,
    pub deleting: bool,
}

#[derive(Debug, Clone)]
pub struct StsFacts {
    pub namespace: String,
    pub name: String,
    pub annotations: BTreeMap<String, String>,
    pub template_label: bool,
    pub service_account: String,
    /// The pods the StatefulSet owns now.
    pub pods: Vec<PodFacts>,
    /// `needed_access` with `allowed` filled in by the caller.
    pub access: Vec<Access>,
    /// This program's version, to compare with the injecting one.
    pub version: String,
}

pub fn section(ns: &str, name: &str) -> String {
    format!("statefulset {}", qualified(ns, name))
}

pub fn check(facts: &StsFacts) -> Vec<Finding> {
    let s = section(&facts.namespace, &facts.name);
    let (ns, name) = (facts.namespace.as_str(), facts.name.as_str());
    let mut out = Vec::new();
    let options = match BootstrapOptions::from_annotations(Some(&facts.annotations)) {
        Ok(options) => {
            out.push(Finding::ok(
                &s,
                "statefulset.annotations",
                "opted in (habitat/bootstrap: \"true\"), annotations valid",
            ));
            Some(options)
        }
        Err(e) => {
            out.push(Finding::error(
                &s,
                "statefulset.annotations",
                format!("{e}: every pod is refused"),
                format!("kubectl -n {ns} annotate statefulset {name} --overwrite <annotation>=<a valid value> (README, \"the annotation reference\")"),
            ));
            None
        }
    };
    if facts.template_label {
        out.push(Finding::ok(
            &s,
            "statefulset.template-label",
            format!("pod template labelled {}: \"true\"", annotations::BOOTSTRAP),
        ));
    } else {
        out.push(Finding::error(
            &s,
            "statefulset.template-label",
            format!(
                "the pod template has no label {}: \"true\" (annotated before the webhook was installed, or while its \
                 configuration was absent): its pods are created without injection",
                annotations::BOOTSTRAP
            ),
            template_label_fix(ns, name),
        ));
    }
    out.extend(check_pods(&s, facts));
    if let Some(options) = options {
        out.extend(check_access(&s, facts, &options));
    }
    out
}

fn check_pods(s: &str, facts: &StsFacts) -> Vec<Finding> {
    let mut out = Vec::new();
    let ns = facts.namespace.as_str();
    let mut versions: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    let mut escaped = Vec::new();
    for pod in facts.pods.iter().filter(|p| !p.deleting) {
        match pod.status.as_deref().map(serde_json::from_str::<InjectionStatus>) {
            Some(Ok(status)) => versions.entry(status.version).or_default().push(&pod.name),
            Some(Err(e)) => out.push(Finding::error(
                s,
                "statefulset.pod-injected",
                format!(
                    "pod {}: the status annotation {} is unreadable ({e})",
                    pod.name,
                    annotations::STATUS
                ),
                format!(
                    "kubectl -n {ns} delete pod {} (the StatefulSet controller recreates it, injected)",
                    pod.name
                ),
            )),
            None => escaped.push(pod.name.as_str()),
        }
    }
    if !escaped.is_empty() {
        let fix = if facts.template_label {
            escaped_pods_fix(ns, &escaped)
        } else {
            format!(
                "first the template label (above), which rolls the pods: {}",
                template_label_fix(ns, &facts.name)
            )
        };
        out.push(Finding::error(
            s,
            "statefulset.pod-injected",
            format!("{} pod(s) never injected (escaped): {}", escaped.len(), escaped.join(", ")),
            fix,
        ));
    }
    let injected: usize = versions.values().map(Vec::len).sum();
    if injected > 0 {
        let by: Vec<String> = versions.iter().map(|(v, pods)| format!("{v} ({})", pods.len())).collect();
        out.push(Finding::ok(
            s,
            "statefulset.pod-injected",
            format!("{injected} pod(s) injected, by hab-bootstrap {}", by.join(", ")),
        ));
        let other: Vec<&str> = versions
            .iter()
            .filter(|(v, _)| **v != facts.version)
            .flat_map(|(_, pods)| pods.iter().copied())
            .collect();
        if !other.is_empty() {
            out.push(Finding::info(
                s,
                "statefulset.pod-version",
                format!(
                    "pod(s) {} were injected by another version than this check's {}; they pick up the installed \
                     version when recreated (kubectl -n {ns} rollout restart statefulset {})",
                    other.join(", "),
                    facts.version,
                    facts.name
                ),
            ));
        }
    } else if escaped.is_empty() {
        out.push(Finding::info(s, "statefulset.pod-injected", "no pods yet"));
    }
    out
}

fn check_access(s: &str, facts: &StsFacts, options: &BootstrapOptions) -> Vec<Finding> {
    let mut out = Vec::new();
    let (ns, sa) = (facts.namespace.as_str(), facts.service_account.as_str());
    let mut missing_required = Vec::new();
    for access in &facts.access {
        let what = if access.group.is_empty() {
            format!("{} {}", access.verb, access.resource)
        } else {
            format!("{} {}.{}", access.verb, access.resource, access.group)
        };
        match &access.allowed {
            Ok(true) => {}
            Ok(false) if access.required => missing_required.push(format!("{what} ({})", access.why)),
            Ok(false) => out.push(Finding::warning(
                s,
                "statefulset.sidecar-rbac",
                format!("ServiceAccount {ns}/{sa} may not {what}, which the role sidecar uses {}", access.why),
                format!("kubectl apply -n {ns} -f examples/sidecar-rbac.yaml, or add the rule to the sidecar's Role"),
            )),
            Err(e) => out.push(Finding::warning(
                s,
                "statefulset.sidecar-rbac",
                format!("could not ask whether {ns}/{sa} may {what}: {e}"),
                "run check as a user allowed to create subjectaccessreviews",
            )),
        }
    }
    if missing_required.is_empty() {
        let labels = if options.role_label { "peer file and role label" } else { "peer file, no role label" };
        out.push(Finding::ok(
            s,
            "statefulset.sidecar-rbac",
            format!("ServiceAccount {sa} may do what the sidecar needs ({labels})"),
        ));
    } else {
        out.push(Finding::error(
            s,
            "statefulset.sidecar-rbac",
            format!("ServiceAccount {ns}/{sa} may not {}: the role sidecar cannot work", missing_required.join(", ")),
            format!(
                "kubectl apply -n {ns} -f examples/sidecar-rbac.yaml and run the pods as its ServiceAccount \
                 (spec.template.spec.serviceAccountName: habitat), or bind the Role to {sa}: \
                 kubectl -n {ns} create rolebinding hab-bootstrap-sidecar-{sa} --role hab-bootstrap-sidecar --serviceaccount {ns}:{sa}"
            ),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> StsFacts {
        let options = BootstrapOptions::from_annotations(None).unwrap();
        let access = needed_access(&options).into_iter().map(|a| Access { allowed: Ok(true), ..a }).collect();
        let status = r#"{"version":"0.1.0","supervisor":"sup","peers":[],"env":[]}"#;
        StsFacts {
            namespace: "ns".into(),
            name: "redis".into(),
            annotations: BTreeMap::from([("habitat/bootstrap".into(), "true".into())]),
            template_label: true,
            service_account: "habitat".into(),
            pods: (0..3)
                .map(|i| PodFacts {
                    name: format!("redis-{i}"),
                    status: Some(status.into()),
                    deleting: false,
                })
                .collect(),
            access,
            version: "0.1.0".into(),
        }
    }

    fn problems(f: &[Finding]) -> Vec<&'static str> {
        f.iter().filter(|f| f.status.is_problem()).map(|f| f.check).collect()
    }

    #[test]
    fn a_healthy_statefulset() {
        assert_eq!(problems(&check(&facts())), Vec::<&str>::new());
    }

    #[test]
    fn an_unlabelled_template_and_escaped_pods() {
        let mut f = facts();
        f.template_label = false;
        f.pods[1].status = None;
        let found = check(&f);
        assert_eq!(problems(&found), ["statefulset.template-label", "statefulset.pod-injected"]);
        let escaped = found.iter().find(|f| f.message.contains("escaped")).unwrap();
        assert!(escaped.message.contains("redis-1"), "{escaped:?}");
        assert!(escaped.fix.as_ref().unwrap().contains("--fix-template-labels"));
    }

    #[test]
    fn rbac_and_bad_annotations() {
        let mut f = facts();
        f.access[0].allowed = Ok(false);
        f.access[3].allowed = Ok(false);
        let found = check(&f);
        assert_eq!(problems(&found), ["statefulset.sidecar-rbac", "statefulset.sidecar-rbac"]);
        assert!(found.iter().any(|f| f.message.contains("may not patch pods")));
        let mut f = facts();
        f.annotations.insert("habitat/peer-mode".into(), "carrier-pigeon".into());
        assert_eq!(problems(&check(&f)), ["statefulset.annotations"]);
    }

    #[test]
    fn other_versions_are_noted_not_problems() {
        let mut f = facts();
        f.version = "0.2.0".into();
        let found = check(&f);
        assert_eq!(problems(&found), Vec::<&str>::new());
        assert!(found.iter().any(|f| f.check == "statefulset.pod-version"));
    }
}
