//! The AdmissionReview wire format, read tolerantly and written exactly.
//!
//! Our own small types rather than kube's: the pod object stays raw until we know the pod may be
//! ours (most pods are classified from their metadata alone), and the patch is written as the
//! base64 string the API server's `[]byte` field expects.

use base64::Engine;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

pub const API_VERSION_V1: &str = "admission.k8s.io/v1";

/// An input we cannot answer with an AdmissionReview: the HTTP status and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct BadReview {
    pub status: u16,
    pub message: String,
}

impl BadReview {
    fn bad_request(message: impl Into<String>) -> Self {
        Self { status: 400, message: message.into() }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReviewIn<'a> {
    api_version: Option<String>,
    kind: Option<String>,
    #[serde(borrow)]
    request: Option<RequestIn<'a>>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct GroupVersionKind {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub kind: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestIn<'a> {
    uid: Option<String>,
    kind: Option<GroupVersionKind>,
    operation: Option<String>,
    #[serde(default)]
    dry_run: Option<bool>,
    namespace: Option<String>,
    name: Option<String>,
    #[serde(borrow)]
    object: Option<&'a RawValue>,
}

/// A decoded admission request; `object` is still raw JSON.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub api_version: String,
    pub uid: String,
    pub kind: GroupVersionKind,
    pub operation: String,
    pub dry_run: bool,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub object: Option<&'a RawValue>,
}

impl<'a> Request<'a> {
    /// Decodes a review. Errors here are HTTP errors: without a uid there is nothing to answer.
    pub fn parse(body: &'a [u8]) -> Result<Self, BadReview> {
        let review: ReviewIn<'a> = serde_json::from_slice(body)
            .map_err(|e| BadReview::bad_request(format!("body is not an AdmissionReview: {e}")))?;
        if let Some(kind) = review.kind.as_deref()
            && kind != "AdmissionReview"
        {
            return Err(BadReview::bad_request(format!("kind {kind:?} is not AdmissionReview")));
        }
        let api_version = review.api_version.unwrap_or_else(|| API_VERSION_V1.to_owned());
        if !api_version.starts_with("admission.k8s.io/") {
            return Err(BadReview::bad_request(format!(
                "apiVersion {api_version:?} is not admission.k8s.io"
            )));
        }
        let request =
            review.request.ok_or_else(|| BadReview::bad_request("AdmissionReview has no request"))?;
        let uid = request
            .uid
            .filter(|u| !u.is_empty())
            .ok_or_else(|| BadReview::bad_request("AdmissionReview request has no uid"))?;
        Ok(Self {
            api_version,
            uid,
            kind: request.kind.unwrap_or_default(),
            operation: request.operation.unwrap_or_default(),
            dry_run: request.dry_run.unwrap_or(false),
            namespace: request.namespace,
            name: request.name,
            object: request.object,
        })
    }

    /// Decodes the object (or only the parts of it a type declares, such as `metadata`).
    pub fn object<T: serde::de::DeserializeOwned>(&self) -> Result<T, String> {
        let raw = self.object.ok_or("the request carries no object")?;
        serde_json::from_str(raw.get()).map_err(|e| format!("the object cannot be read: {e}"))
    }

    /// The pod of a pod review, without its metadata's managed fields: nothing reads or patches
    /// them (a patch never touches what both its sides lack), and decoding, cloning, comparing and
    /// dropping them was a tenth of answering a realistic opted-in review (BENCHMARKS.md).
    pub fn pod(&self) -> Result<Pod, String> {
        let PodIn { api_version, kind, metadata, spec, status } = self.object()?;
        for (field, value, want) in [("apiVersion", api_version, "v1"), ("kind", kind, "Pod")] {
            if value.as_ref().is_some_and(|v| v != want) {
                return Err(format!("the object cannot be read: {field} {value:?} is not {want:?}"));
            }
        }
        let metadata = metadata.map(MetadataIn::into_object_meta).unwrap_or_default();
        Ok(Pod { metadata, spec, status })
    }

    pub fn respond(&self) -> Response {
        Response {
            api_version: self.api_version.clone(),
            uid: self.uid.clone(),
            allowed: true,
            message: None,
            patch: None,
            warnings: Vec::new(),
        }
    }
}

/// Metadata only: enough to classify a pod without decoding its spec. Only the fields that
/// classify a pod are read (name, namespace, labels, owner references); the rest of the metadata,
/// managed fields above all, is skipped unread.
#[derive(Debug, Deserialize)]
pub struct MetadataOnly {
    #[serde(default, deserialize_with = "classifying_metadata")]
    pub metadata: ObjectMeta,
}

fn classifying_metadata<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Classifying {
        name: Option<String>,
        namespace: Option<String>,
        labels: Option<BTreeMap<String, String>>,
        owner_references: Option<Vec<OwnerReference>>,
    }
    let Classifying { name, namespace, labels, owner_references } = Classifying::deserialize(d)?;
    Ok(ObjectMeta { name, namespace, labels, owner_references, ..Default::default() })
}

/// A pod as [`Request::pod`] reads it; `apiVersion` and `kind` are checked as `Pod`'s own
/// deserializer does.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodIn {
    api_version: Option<String>,
    kind: Option<String>,
    metadata: Option<MetadataIn>,
    spec: Option<PodSpec>,
    status: Option<PodStatus>,
}

/// `ObjectMeta` but for `managedFields` (unknown keys are skipped unread). Built back field by
/// field, so a field k8s-openapi adds one day fails to compile here rather than being lost.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MetadataIn {
    annotations: Option<BTreeMap<String, String>>,
    creation_timestamp: Option<Time>,
    deletion_grace_period_seconds: Option<i64>,
    deletion_timestamp: Option<Time>,
    finalizers: Option<Vec<String>>,
    generate_name: Option<String>,
    generation: Option<i64>,
    labels: Option<BTreeMap<String, String>>,
    name: Option<String>,
    namespace: Option<String>,
    owner_references: Option<Vec<OwnerReference>>,
    resource_version: Option<String>,
    self_link: Option<String>,
    uid: Option<String>,
}

impl MetadataIn {
    fn into_object_meta(self) -> ObjectMeta {
        let Self {
            annotations,
            creation_timestamp,
            deletion_grace_period_seconds,
            deletion_timestamp,
            finalizers,
            generate_name,
            generation,
            labels,
            name,
            namespace,
            owner_references,
            resource_version,
            self_link,
            uid,
        } = self;
        ObjectMeta {
            annotations,
            creation_timestamp,
            deletion_grace_period_seconds,
            deletion_timestamp,
            finalizers,
            generate_name,
            generation,
            labels,
            managed_fields: None,
            name,
            namespace,
            owner_references,
            resource_version,
            self_link,
            uid,
        }
    }
}

/// An answer to one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    api_version: String,
    pub uid: String,
    pub allowed: bool,
    pub message: Option<String>,
    pub patch: Option<json_patch::Patch>,
    pub warnings: Vec<String>,
}

impl Response {
    pub fn deny(mut self, message: impl Into<String>) -> Self {
        self.allowed = false;
        self.message = Some(message.into());
        self.patch = None;
        self
    }

    pub fn with_patch(mut self, patch: json_patch::Patch) -> Self {
        self.patch = (!patch.0.is_empty()).then_some(patch);
        self
    }

    pub fn with_warnings(mut self, warnings: Vec<String>) -> Self {
        self.warnings = warnings;
        self
    }

    pub fn to_json(&self) -> Vec<u8> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Out<'a> {
            api_version: &'a str,
            kind: &'static str,
            response: Body<'a>,
        }
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Body<'a> {
            uid: &'a str,
            allowed: bool,
            #[serde(skip_serializing_if = "Option::is_none")]
            status: Option<Status<'a>>,
            #[serde(skip_serializing_if = "Option::is_none")]
            patch: Option<String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            patch_type: Option<&'static str>,
            #[serde(skip_serializing_if = "<[_]>::is_empty")]
            warnings: &'a [String],
        }
        #[derive(Serialize)]
        struct Status<'a> {
            code: u16,
            message: &'a str,
            reason: &'static str,
        }
        let patch = self.patch.as_ref().map(|p| {
            base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(p).expect("patch serializes"))
        });
        let out = Out {
            api_version: &self.api_version,
            kind: "AdmissionReview",
            response: Body {
                uid: &self.uid,
                allowed: self.allowed,
                status: self.message.as_deref().filter(|_| !self.allowed).map(|message| Status {
                    code: 403,
                    message,
                    reason: "Forbidden",
                }),
                patch_type: patch.as_ref().map(|_| "JSONPatch"),
                patch,
                warnings: &self.warnings,
            },
        };
        serde_json::to_vec(&out).expect("response serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pod_is_read_whole_but_for_its_managed_fields() {
        for fixture in
            ["tests/fixtures/admission/pod-create-redis-2.json", "benches/fixtures/review-opted-in.json"]
        {
            let body = std::fs::read(format!("{}/{fixture}", env!("CARGO_MANIFEST_DIR"))).unwrap();
            let request = Request::parse(&body).unwrap();
            let mut whole: Pod = request.object().unwrap();
            assert!(whole.metadata.managed_fields.take().is_some(), "{fixture} has managed fields");
            assert_eq!(request.pod().unwrap(), whole, "{fixture}");
        }
        let review = |object: &str| {
            format!(
                r#"{{"request":{{"uid":"u","kind":{{"kind":"Pod"}},"operation":"CREATE","object":{object}}}}}"#
            )
        };
        for (object, error) in [
            (
                r#"{"apiVersion":"apps/v1","metadata":{"name":"p"}}"#,
                r#"apiVersion Some("apps/v1") is not "v1""#,
            ),
            (r#"{"kind":"Deployment"}"#, r#"kind Some("Deployment") is not "Pod""#),
            (r#"{"metadata":{"name":5}}"#, "the object cannot be read"),
            (r#"{"spec":[]}"#, "the object cannot be read"),
        ] {
            let body = review(object);
            let got = Request::parse(body.as_bytes()).unwrap().pod().unwrap_err();
            assert!(got.contains(error), "{object}: {got}");
        }
        let body = review(r#"{"apiVersion":"v1","kind":"Pod","metadata":null}"#);
        assert_eq!(Request::parse(body.as_bytes()).unwrap().pod().unwrap(), Pod::default());
    }

    #[test]
    fn parses_the_fields_we_use() {
        let body = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u1",
            "kind":{"group":"","version":"v1","kind":"Pod"},"operation":"CREATE","dryRun":true,
            "namespace":"ns","name":"p","object":{"metadata":{"name":"p"}},"userInfo":{"username":"x"}}}"#;
        let r = Request::parse(body).unwrap();
        assert_eq!(
            (r.uid.as_str(), r.kind.kind.as_str(), r.operation.as_str(), r.dry_run),
            ("u1", "Pod", "CREATE", true)
        );
        let meta: MetadataOnly = r.object().unwrap();
        assert_eq!(meta.metadata.name.as_deref(), Some("p"));
    }

    #[test]
    fn unanswerable_inputs_are_http_400() {
        for (body, want) in [
            (&b"{"[..], "not an AdmissionReview"),
            (b"[]", "not an AdmissionReview"),
            (b"{}", "no request"),
            (br#"{"kind":"Pod"}"#, "is not AdmissionReview"),
            (br#"{"apiVersion":"v1","request":{"uid":"x"}}"#, "not admission.k8s.io"),
            (br#"{"request":{"uid":""}}"#, "no uid"),
            (br#"{"request":{"kind":{"kind":"Pod"}}}"#, "no uid"),
            (br#"{"request":{"uid":5}}"#, "not an AdmissionReview"),
        ] {
            let err = Request::parse(body).unwrap_err();
            assert_eq!(err.status, 400);
            assert!(err.message.contains(want), "{}: {}", String::from_utf8_lossy(body), err.message);
        }
    }

    #[test]
    fn writes_base64_patch_and_status_only_on_denial() {
        let r = Request::parse(br#"{"request":{"uid":"u1"}}"#).unwrap();
        let patch: json_patch::Patch =
            serde_json::from_str(r#"[{"op":"add","path":"/a","value":1}]"#).unwrap();
        let out: serde_json::Value =
            serde_json::from_slice(&r.respond().with_patch(patch).to_json()).unwrap();
        assert_eq!(out["apiVersion"], API_VERSION_V1);
        assert_eq!(out["response"]["uid"], "u1");
        assert_eq!(out["response"]["patchType"], "JSONPatch");
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(out["response"]["patch"].as_str().unwrap())
            .unwrap();
        assert_eq!(serde_json::from_slice::<serde_json::Value>(&decoded).unwrap()[0]["path"], "/a");
        assert!(out["response"].get("status").is_none());

        let denied: serde_json::Value =
            serde_json::from_slice(&r.respond().deny("because").to_json()).unwrap();
        assert_eq!(denied["response"]["allowed"], false);
        assert_eq!(denied["response"]["status"]["message"], "because");
        assert!(denied["response"].get("patch").is_none());
    }
}
