//! What every input must satisfy, whatever its bytes: the fuzz targets (fuzz/fuzz_targets) call
//! these, and tests/hostile.rs replays the seed corpus and every regression input through them on
//! stable Rust.
#![allow(dead_code)]

#[path = "../tests/support/cluster.rs"]
pub mod support;

use std::sync::OnceLock;

use base64::Engine;
use hab_bootstrap::commands::inject::render;
use hab_bootstrap::injection::settings::InjectionSettings;
use hab_bootstrap::sidecar::census::{Census, decide_role};
use hab_bootstrap::webhook::admission::{Admission, NoEvents};
use serde_json::Value;
use support::{MemoryCluster, headless_service, statefulset};

/// A cluster where the seed reviews' StatefulSets exist: `redis` opted in (with the ring key our
/// StatefulSet webhook names at creation), `plain` not annotated.
fn admission() -> &'static Admission<MemoryCluster, NoEvents> {
    static ADMISSION: OnceLock<Admission<MemoryCluster, NoEvents>> = OnceLock::new();
    ADMISSION.get_or_init(|| {
        let mut plain = statefulset("plain", "default", "plain-headless", 3, &[]);
        plain.metadata.annotations = None;
        Admission {
            cluster: MemoryCluster {
                statefulsets: vec![
                    statefulset(
                        "redis",
                        "default",
                        "redis-headless",
                        3,
                        &[("habitat/ring-key-secret", "redis-habitat-ring")],
                    ),
                    plain,
                ],
                services: vec![headless_service("redis-headless", "default", true)],
                ..Default::default()
            },
            events: NoEvents,
            settings: InjectionSettings::default(),
            metrics: Default::default(),
        }
    })
}

/// Review decoding and mutation, both webhooks: an HTTP 4xx or a well-formed answer echoing the
/// uid, whose patch (if any) applies to the object it was computed for.
pub fn review(data: &[u8]) {
    let admission = admission();
    let answers = [
        futures::executor::block_on(admission.review_pod(data)),
        futures::executor::block_on(admission.review_statefulset(data)),
    ];
    for answer in answers {
        let body = match answer {
            Err(bad) => {
                assert!((400..500).contains(&bad.status), "status {} for {}", bad.status, bad.message);
                continue;
            }
            Ok(body) => body,
        };
        let answer: Value = serde_json::from_slice(&body).expect("the answer is JSON");
        let response = &answer["response"];
        let uid = response["uid"].as_str().expect("the answer has a uid");
        assert!(!uid.is_empty());
        let allowed = response["allowed"].as_bool().expect("the answer says allowed or not");
        let Some(patch) = response["patch"].as_str() else { continue };
        assert!(allowed, "a denial carries no patch");
        let patch = base64::engine::general_purpose::STANDARD.decode(patch).expect("the patch is base64");
        let patch: json_patch::Patch = serde_json::from_slice(&patch).expect("the patch is a JSON patch");
        // serde_json skips the fields we do not read without checking their UTF-8 (the API server
        // never sends invalid UTF-8): read the review the way a tolerant client would.
        let text = String::from_utf8_lossy(data);
        let review: Value = serde_json::from_str(&text).expect("a review that was answered is JSON");
        let raw = &review["request"]["object"];
        let mut object = raw.clone();
        if let Err(e) = json_patch::patch(&mut object, &patch) {
            // The patch is computed on the typed object, which the API server holds: it always
            // serializes required fields such as a StatefulSet's spec.template, which a raw input
            // may lack (fuzz/regressions/review/statefulset-without-template.json). It must apply
            // to that serialization, and the raw object must differ from it.
            let mut typed = typed_round_trip(raw, response_kind(&review));
            assert_ne!(&typed, raw, "the patch does not apply to the object it was computed for: {e}");
            if let Err(e) = json_patch::patch(&mut typed, &patch) {
                panic!("the patch does not apply to the object as the API server serializes it: {e}");
            }
        }
    }
}

fn response_kind(review: &Value) -> &str {
    review["request"]["kind"]["kind"].as_str().unwrap_or_default()
}

/// The object as its Kubernetes type serializes it (what the API server holds).
fn typed_round_trip(raw: &Value, kind: &str) -> Value {
    use k8s_openapi::api::apps::v1::StatefulSet;
    use k8s_openapi::api::core::v1::Pod;
    match kind {
        "StatefulSet" => serde_json::to_value(serde_json::from_value::<StatefulSet>(raw.clone()).unwrap()),
        _ => serde_json::to_value(serde_json::from_value::<Pod>(raw.clone()).unwrap()),
    }
    .unwrap()
}

/// The `inject` manifest parser and renderer: a rendered pod or an error, never a panic.
pub fn inject_manifest(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // The ordinal comes from the input's length, so every seed is used whole as a manifest.
    let ordinal = [0, 1, 2, 7, u32::MAX][data.len() % 5];
    if let Ok(rendered) = render(text, ordinal, &InjectionSettings::default()) {
        serde_json::to_vec(&rendered.pod).expect("a rendered pod serializes");
    }
}

/// The census parser and the role decision, with and without a wanted group.
pub fn census(data: &[u8]) {
    let Ok(census) = Census::from_json(data) else { return };
    let first = census.census_groups.keys().next().cloned();
    for wanted in [None, first.as_deref(), Some("redis.default"), Some("")] {
        let decision = decide_role(&census, wanted);
        let _ = decision.to_string();
    }
}
