//! Before install: is this API server one hab-bootstrap works with?

use super::Finding;

const SECTION: &str = "cluster";

/// The oldest Kubernetes minor hab-bootstrap is built and tested for (k8s-openapi `v1_33`).
pub const MIN_MINOR: u32 = 33;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterFacts {
    /// `gitVersion`, `major`, `minor` of `/version`.
    pub git_version: String,
    pub major: String,
    pub minor: String,
    /// `admissionregistration.k8s.io/v1` lists `validatingadmissionpolicies`.
    pub validating_admission_policy: bool,
    /// The sidecar's own-pod policy (the chart's, or examples/sidecar-admission-policy.yaml).
    pub sidecar_policy: Policy,
}

/// A ValidatingAdmissionPolicy as the API server has it: it refuses nothing until a binding with
/// `validationActions: [Deny]` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Missing,
    Unbound,
    Enforced,
}

/// The minor version as a number: `"36"`, `"36+"` (some distributions) → 36.
pub fn minor(facts: &ClusterFacts) -> Option<u32> {
    if facts.major != "1" {
        return None;
    }
    facts.minor.trim_end_matches('+').parse().ok()
}

pub fn check(facts: &ClusterFacts) -> Vec<Finding> {
    let mut out = Vec::new();
    let version = &facts.git_version;
    match minor(facts) {
        Some(m) if m >= MIN_MINOR => {
            out.push(Finding::ok(
                SECTION,
                "cluster.version",
                format!("API server {version} (1.{MIN_MINOR} or newer)"),
            ));
            out.push(Finding::ok(
                SECTION,
                "cluster.native-sidecars",
                "native sidecars available (GA since 1.33)",
            ));
        }
        Some(m) => {
            out.push(Finding::error(
                SECTION,
                "cluster.version",
                format!(
                    "API server {version} is older than 1.{MIN_MINOR}, the oldest hab-bootstrap supports"
                ),
                format!("upgrade the cluster to 1.{MIN_MINOR} or newer"),
            ));
            if m < 29 {
                out.push(Finding::error(
                    SECTION,
                    "cluster.native-sidecars",
                    format!("native sidecars do not exist before 1.29 ({version})"),
                    "install with native sidecars off: helm --set injection.nativeSidecar=false \
                     (env HABITAT_BOOTSTRAP_NATIVE_SIDECAR=false on the webhook)",
                ));
            } else {
                out.push(Finding::warning(
                    SECTION,
                    "cluster.native-sidecars",
                    format!("native sidecars are beta in {version} (feature gate SidecarContainers, on by default)"),
                    "make sure the SidecarContainers feature gate is on, or install with injection.nativeSidecar=false",
                ));
            }
        }
        None => out.push(Finding::warning(
            SECTION,
            "cluster.version",
            format!(
                "API server version {version:?} ({}.{}) is not one this check can read",
                facts.major, facts.minor
            ),
            "nothing to do if the cluster is Kubernetes 1.33 or newer",
        )),
    }
    if facts.validating_admission_policy {
        out.push(Finding::ok(SECTION, "cluster.admission-policy", "ValidatingAdmissionPolicy available"));
        let fix = "kubectl apply -f examples/sidecar-admission-policy.yaml (once per cluster), or install the \
                   chart with admissionPolicies.sidecarOwnPod=true (the default)";
        out.push(match facts.sidecar_policy {
            Policy::Enforced => {
                Finding::ok(SECTION, "cluster.sidecar-policy", "the sidecar's own-pod admission policy is enforced")
            }
            Policy::Missing => Finding::warning(
                SECTION,
                "cluster.sidecar-policy",
                "the sidecar's own-pod admission policy is not installed: a role sidecar's ServiceAccount may \
                 patch any pod of its namespace",
                fix,
            ),
            Policy::Unbound => Finding::warning(
                SECTION,
                "cluster.sidecar-policy",
                "the sidecar's own-pod admission policy is installed but no binding enforces it \
                 (validationActions: [Deny]): a role sidecar's ServiceAccount may patch any pod of its namespace",
                fix,
            ),
        });
    } else {
        out.push(Finding::error(
            SECTION,
            "cluster.admission-policy",
            "ValidatingAdmissionPolicy is not served (admissionregistration.k8s.io/v1): nothing limits a role \
             sidecar to labelling its own pod",
            "enable admissionregistration.k8s.io/v1 ValidatingAdmissionPolicy (GA since 1.30) on the API server",
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Status;

    fn facts(minor: &str) -> ClusterFacts {
        ClusterFacts {
            git_version: format!("v1.{minor}.0"),
            major: "1".into(),
            minor: minor.into(),
            validating_admission_policy: true,
            sidecar_policy: Policy::Enforced,
        }
    }

    fn status(findings: &[Finding], check: &str) -> Status {
        findings.iter().find(|f| f.check == check).unwrap().status
    }

    #[test]
    fn versions() {
        assert!(check(&facts("36")).iter().all(|f| f.status == Status::Ok));
        assert!(check(&facts("34+")).iter().all(|f| f.status == Status::Ok));
        let old = check(&facts("30"));
        assert_eq!(status(&old, "cluster.version"), Status::Error);
        assert_eq!(status(&old, "cluster.native-sidecars"), Status::Warning);
        assert_eq!(status(&check(&facts("27")), "cluster.native-sidecars"), Status::Error);
    }

    #[test]
    fn admission_policy() {
        for policy in [Policy::Missing, Policy::Unbound] {
            let f = check(&ClusterFacts { sidecar_policy: policy, ..facts("36") });
            assert_eq!(status(&f, "cluster.sidecar-policy"), Status::Warning);
        }
        let f = check(&ClusterFacts { validating_admission_policy: false, ..facts("36") });
        assert_eq!(status(&f, "cluster.admission-policy"), Status::Error);
    }
}
