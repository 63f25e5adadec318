//! How an admission review ends, typed: the outcome counted per request, and the denials with the
//! message the user reads (`Display`) and the reason they are counted under ([`Denial::reason`]).
//! Both webhooks, pods and StatefulSets, answer through these.

use std::fmt;

use crate::injection::decision::NotOurs;

/// The `outcome` label of `hab_bootstrap_admission_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Injected,
    /// Already injected as we would (a reinvocation, a replayed request), or not ours to change.
    Unchanged,
    /// A StatefulSet whose template label was made equal to its opt-in annotation.
    Relabelled,
    Skipped,
    Denied,
    /// The body was not an AdmissionReview we could answer (HTTP 4xx).
    BadRequest,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Injected => "injected",
            Outcome::Unchanged => "unchanged",
            Outcome::Relabelled => "relabelled",
            Outcome::Skipped => "skipped",
            Outcome::Denied => "denied",
            Outcome::BadRequest => "bad_request",
        }
    }
}

/// Why a pod or a StatefulSet is left alone: the `reason` label of `hab_bootstrap_skips_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    NotOurs(NotOurs),
    /// The owning StatefulSet did not opt in.
    NotAnnotated,
    /// The pod carries our opt-in label but its StatefulSet is not annotated.
    LabelWithoutAnnotation,
}

impl Skip {
    pub fn reason(self) -> &'static str {
        match self {
            Skip::NotOurs(not_ours) => not_ours.reason(),
            Skip::NotAnnotated => "not_annotated",
            Skip::LabelWithoutAnnotation => "label_without_annotation",
        }
    }
}

/// A refusal: `allowed: false` with a message the user can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// The pod in the review cannot be decoded.
    UnreadablePod(String),
    /// The pod is labelled ours, but its StatefulSet is not found.
    OwnerNotFound { ns: String, statefulset: String },
    /// The StatefulSet could not be read from the API server.
    OwnerUnreadable { ns: String, statefulset: String, error: String },
    /// The StatefulSet's pods could not be listed to choose peers.
    PodsUnlisted { ns: String, statefulset: String, error: String },
    /// The decision refused the pod (its message says what to fix).
    Invalid(String),
    /// The StatefulSet in the review cannot be decoded.
    UnreadableStatefulSet(String),
    /// The StatefulSet's template label cannot be made equal to its annotation.
    Template(String),
}

impl Denial {
    /// The `reason` label of `hab_bootstrap_denials_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Denial::UnreadablePod(_) => "unreadable_pod",
            Denial::OwnerNotFound { .. } => "owner_not_found",
            Denial::OwnerUnreadable { .. } | Denial::PodsUnlisted { .. } => "api_unavailable",
            Denial::Invalid(_) => "invalid",
            Denial::UnreadableStatefulSet(_) => "unreadable_statefulset",
            Denial::Template(_) => "invalid_template",
        }
    }
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Denial::UnreadablePod(e) => write!(f, "cannot read the pod: {e}"),
            Denial::OwnerNotFound { ns, statefulset } => write!(
                f,
                "StatefulSet {ns}/{statefulset} that owns this pod was not found, so its peers cannot be \
                 computed; the StatefulSet controller retries"
            ),
            Denial::OwnerUnreadable { ns, statefulset, error } => write!(
                f,
                "cannot read StatefulSet {ns}/{statefulset} ({error}); refusing rather than starting a \
                 supervisor without peers; the StatefulSet controller retries"
            ),
            Denial::PodsUnlisted { ns, statefulset, error } => write!(
                f,
                "cannot list the pods of StatefulSet {ns}/{statefulset} to choose peers ({error}); the \
                 StatefulSet controller retries"
            ),
            Denial::Invalid(message) | Denial::Template(message) => f.write_str(message),
            Denial::UnreadableStatefulSet(e) => write!(f, "cannot read the StatefulSet: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_the_ones_users_see() {
        let owner = |error: &str| Denial::OwnerUnreadable {
            ns: "db".into(),
            statefulset: "redis".into(),
            error: error.into(),
        };
        assert_eq!(
            owner("timeout").to_string(),
            "cannot read StatefulSet db/redis (timeout); refusing rather than starting a supervisor \
             without peers; the StatefulSet controller retries"
        );
        assert_eq!(owner("x").reason(), "api_unavailable");
        assert_eq!(Denial::Invalid("fix it".into()).to_string(), "fix it");
        assert_eq!(Outcome::BadRequest.label(), "bad_request");
        assert_eq!(Skip::NotOurs(NotOurs::NoStatefulSetOwner).reason(), "no_statefulset_owner");
    }
}
