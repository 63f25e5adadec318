//! The Kubernetes objects the scenarios create.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Service;
use serde_json::{Value, json};

/// A Habitat StatefulSet: one supervisor container running a leader-topology service, `/hab/sup`
/// on a volume claim (no storage is provisioned here: kwok does not run containers, and nothing
/// mounts). Each (key, value) is an annotation.
pub fn statefulset(name: &str, service: &str, replicas: i32, annotations: &[(&str, &str)]) -> StatefulSet {
    serde_json::from_value(statefulset_json(name, service, replicas, annotations)).unwrap()
}

pub fn statefulset_json(name: &str, service: &str, replicas: i32, annotations: &[(&str, &str)]) -> Value {
    let annotations: serde_json::Map<String, Value> =
        annotations.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
    json!({
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {
            "serviceName": service,
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{
                        "name": "redis",
                        "image": "core/redis:e2e",
                        "args": ["sup", "run", "core/redis", "--topology", "leader"],
                        "volumeMounts": [{"name": "hab-sup", "mountPath": "/hab/sup"}],
                    }],
                    "volumes": [{"name": "hab-sup", "emptyDir": {}}],
                }
            }
        }
    })
}

/// The headless Service of a StatefulSet, publishing not-ready addresses.
pub fn headless_service(name: &str, selector_app: &str) -> Service {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": true,
            "selector": {"app": selector_app},
            "ports": [{"name": "gossip", "port": 9638}],
        }
    }))
    .unwrap()
}
