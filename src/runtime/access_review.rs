//! "May this ServiceAccount do that?" as the API server's authorizer answers it: the one
//! SubjectAccessReview the webhook (a warning at admission) and `check` (the sidecar's RBAC) ask.

use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};

/// A review of `verb` on `group/resource` in `ns` by the ServiceAccount `ns/service_account`, with
/// the groups the API server gives every ServiceAccount token.
pub fn for_service_account(
    ns: &str,
    service_account: &str,
    group: &str,
    resource: &str,
    verb: &str,
) -> SubjectAccessReview {
    SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(format!("system:serviceaccount:{ns}:{service_account}")),
            groups: Some(vec![
                "system:serviceaccounts".to_owned(),
                format!("system:serviceaccounts:{ns}"),
                "system:authenticated".to_owned(),
            ]),
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(ns.to_owned()),
                group: (!group.is_empty()).then(|| group.to_owned()),
                resource: Some(resource.to_owned()),
                verb: Some(verb.to_owned()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    }
}
