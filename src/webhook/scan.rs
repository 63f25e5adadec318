//! The escape scan: every interval, the StatefulSet and labelled-pod caches are read (no API
//! request), what escaped the webhook is found ([`escaped::find`]), the gauges are set, and each
//! problem is reported once when it appears or changes: a warning in the log and a Warning Event on
//! the StatefulSet.
//!
//! Several replicas scan the same caches and would each report. The Event's name is derived from
//! the problem ([`Escape::event_name`]): the first replica's create succeeds, the others get 409
//! and record nothing. Each replica logs its own warning and exports its own gauges (alerts take the
//! `max` over replicas).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::PostParams;
use kube::{Api, Client};
use tracing::{debug, info, warn};

use crate::webhook::admission::Admission;
use crate::webhook::cluster::KubeCluster;
use crate::webhook::escaped::{self, Escape, Ledger};

/// Scans until the process ends. `instance` names this replica in the Events it records.
pub async fn run<E>(admission: Arc<Admission<KubeCluster, E>>, interval: Duration, instance: String) {
    let (statefulsets, pods) = admission.cluster.escape_view().await;
    let client = admission.cluster.client().clone();
    let mut ledger = Ledger::default();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (sets, labelled) = (statefulsets.state(), pods.state());
        let found = escaped::find(sets.iter().map(|s| &**s), labelled.iter().map(|p| &p.metadata));
        admission.metrics.set_escapes(&found);
        let changes = ledger.update(&found);
        for escape in &changes.appeared {
            warn!(
                namespace = %escape.namespace,
                statefulset = %escape.statefulset,
                reason = escape.reason(),
                message = %escape.message(),
                "escaped the webhook"
            );
            record(&client, &instance, escape).await;
        }
        for escape in &changes.resolved {
            info!(
                namespace = %escape.namespace,
                statefulset = %escape.statefulset,
                reason = escape.reason(),
                "no longer escaped"
            );
        }
    }
}

/// A Warning Event on the StatefulSet, named after the problem so that replicas record it once.
async fn record(client: &Client, instance: &str, escape: &Escape) {
    let api = Api::<Event>::namespaced(client.clone(), &escape.namespace);
    let event = Event {
        metadata: ObjectMeta {
            name: Some(escape.event_name()),
            namespace: Some(escape.namespace.clone()),
            ..Default::default()
        },
        event_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
        type_: Some("Warning".to_owned()),
        reason: Some(escape.reason().to_owned()),
        action: Some("Scan".to_owned()),
        // The API caps notes at 1 kB.
        note: Some(escape.message().chars().take(1000).collect()),
        regarding: Some(ObjectReference {
            api_version: Some("apps/v1".to_owned()),
            kind: Some("StatefulSet".to_owned()),
            name: Some(escape.statefulset.clone()),
            namespace: Some(escape.namespace.clone()),
            uid: Some(escape.uid.clone()),
            ..Default::default()
        }),
        reporting_controller: Some("hab-bootstrap".to_owned()),
        reporting_instance: Some(instance.to_owned()),
        ..Default::default()
    };
    match api.create(&PostParams::default(), &event).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {
            debug!(event = %escape.event_name(), "another replica recorded this Event");
        }
        Err(e) => warn!(error = %e, "could not record an Event"),
    }
}
