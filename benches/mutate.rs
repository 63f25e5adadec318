//! The pure admission path for a realistic pod, without I/O: `cargo bench --bench mutate`.
//!
//! The pod (benches/fixtures/review-opted-in.json) is the captured redis-2 review with two more
//! containers (an exporter and a log shipper, with probes, resources, security contexts), an init
//! container and five volumes: 9.8 KB of pod, 10.6 KB of review (compact JSON). The cluster is
//! in memory (tests/support), so a review is answered without waiting on anything.
//!
//! Figures and how they were taken: BENCHMARKS.md.

#[path = "../tests/support/cluster.rs"]
mod support;

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hab_bootstrap::injection::decision::{self, Decision, Facts};
use hab_bootstrap::injection::settings::InjectionSettings;
use hab_bootstrap::webhook::admission::{Admission, NoEvents};
use hab_bootstrap::webhook::review::Request;
use serde_json::{Value, json};
use support::{MemoryCluster, headless_service, statefulset};

const NS: &str = "default";
const RING_KEY: (&str, &str) = ("habitat/ring-key-secret", "redis-habitat-ring");

/// The opted-in review: a pod of StatefulSet `redis` carrying the template label.
pub fn opted_in_review() -> Value {
    serde_json::from_str(include_str!("fixtures/review-opted-in.json")).unwrap()
}

/// The same pod, but its StatefulSet `plain` is not annotated: what the API server sends us for
/// every StatefulSet pod of the cluster. Answered from the cache alone.
fn unannotated_review() -> Value {
    let mut review = opted_in_review();
    let meta = &mut review["request"]["object"]["metadata"];
    meta["labels"].as_object_mut().unwrap().remove("habitat/bootstrap");
    meta["ownerReferences"][0]["name"] = json!("plain");
    review
}

/// A pod of another kind of workload (a ReplicaSet's): told apart from its metadata alone.
fn replicaset_review() -> Value {
    let mut review = unannotated_review();
    let owner = &mut review["request"]["object"]["metadata"]["ownerReferences"][0];
    owner["kind"] = json!("ReplicaSet");
    owner["name"] = json!("web-7d9f8b6c5d");
    review
}

fn cluster() -> MemoryCluster {
    let mut plain = statefulset("plain", NS, "plain-headless", 3, &[("habitat/bootstrap", "")]);
    plain.metadata.annotations = None;
    MemoryCluster {
        // As our StatefulSet webhook stores it at creation: the ring key named (the in-memory
        // Secret "creation" is on the measured path, as the webhook's cached check is).
        statefulsets: vec![statefulset("redis", NS, "redis-headless", 3, &[RING_KEY]), plain],
        services: vec![headless_service("redis-headless", NS, true)],
        ..Default::default()
    }
}

fn admission() -> Admission<MemoryCluster, NoEvents> {
    Admission {
        cluster: cluster(),
        events: NoEvents,
        settings: InjectionSettings::default(),
        metrics: Default::default(),
    }
}

fn review_pod(c: &mut Criterion) {
    let admission = admission();
    let mut group = c.benchmark_group("review_pod");
    for (name, review, want) in [
        ("opted_in", opted_in_review(), "\"patch\""),
        ("not_ours_unannotated_sts", unannotated_review(), "\"allowed\":true"),
        ("not_ours_replicaset_pod", replicaset_review(), "\"allowed\":true"),
    ] {
        let body = serde_json::to_vec(&review).unwrap();
        // The benchmark measures the answer it means to.
        let answer = futures::executor::block_on(admission.review_pod(&body)).unwrap();
        let text = String::from_utf8_lossy(&answer);
        assert!(text.contains(want), "{name}: {text}");
        assert_eq!(text.contains("\"patch\""), name == "opted_in", "{name}: {text}");
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), &body, |b, body| {
            b.iter(|| futures::executor::block_on(admission.review_pod(black_box(body))).unwrap())
        });
    }
    group.finish();
}

/// The facts the webhook would gather for the opted-in pod from `cluster`.
fn facts_of(cluster: &MemoryCluster) -> Facts {
    Facts {
        statefulset: cluster.statefulsets[0].clone(),
        service: hab_bootstrap::injection::decision::ServiceFact::Found(Box::new(
            cluster.services[0].clone(),
        )),
        sidecar_can_label: None,
    }
}

/// `decision::decide` alone: the typed pod and the facts are ready; no JSON in or out.
fn decide(c: &mut Criterion) {
    // The pod as the webhook reads it (without managed fields).
    let body = serde_json::to_vec(&opted_in_review()).unwrap();
    let pod = Request::parse(&body).unwrap().pod().unwrap();
    let cluster = cluster();
    let facts = facts_of(&cluster);
    let settings = InjectionSettings::default();
    assert!(matches!(decision::decide(&pod, &facts, &settings), Decision::Inject(_)));
    c.bench_function("decide/opted_in", |b| {
        b.iter(|| decision::decide(black_box(&pod), black_box(&facts), &settings))
    });
}

/// The steps of the opted-in path, to see where the time goes.
fn steps(c: &mut Criterion) {
    let body = serde_json::to_vec(&opted_in_review()).unwrap();
    let mut group = c.benchmark_group("steps");
    group.bench_function("parse_review_envelope", |b| b.iter(|| Request::parse(black_box(&body)).unwrap()));
    let request = Request::parse(&body).unwrap();
    group.bench_function("parse_typed_pod", |b| b.iter(|| request.pod().unwrap()));
    let pod = request.pod().unwrap();
    let cluster = cluster();
    let facts = facts_of(&cluster);
    let Decision::Inject(injection) = decision::decide(&pod, &facts, &InjectionSettings::default()) else {
        panic!("not injected")
    };
    group.bench_function("patch_diff_of_to_value", |b| {
        b.iter(|| {
            json_patch::diff(
                &serde_json::to_value(black_box(&pod)).unwrap(),
                &serde_json::to_value(black_box(&injection.pod)).unwrap(),
            )
        })
    });
    group.finish();
}

criterion_group!(benches, review_pod, decide, steps);
criterion_main!(benches);
