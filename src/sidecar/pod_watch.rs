//! Keeping the peer watch file equal to the other live pods of this StatefulSet.
//!
//! A reflector store only swaps in a relisted set once the list is complete, so the file never
//! reflects a partial list after a watch restart. An empty set is written as an empty file, not
//! left at the last content: the Supervisor treats an empty file like an absent one (no peers, no
//! error), while stale IPs may by then belong to other pods, even to a Supervisor of another ring.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, ResourceExt};
use tracing::{info, warn};

use crate::runtime::admin::Health;
use crate::sidecar::metrics::{Metrics, ResultLabels};
use crate::sidecar::peer_file::PeerFile;
use crate::sidecar::peer_set::{PeerSelector, peer_file_content};

/// A failed file write (a full disk, say) is retried after this even if no pod changes.
const WRITE_RETRY: Duration = Duration::from_secs(1);

pub struct PodWatch {
    pub pods: Api<Pod>,
    pub label_selector: String,
    pub selector: PeerSelector,
    pub file: PeerFile,
    pub metrics: Metrics,
    pub health: Arc<Health>,
}

impl PodWatch {
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Self { pods, label_selector, selector, mut file, metrics, health } = self;
        let (store, writer) = reflector::store::<Pod>();
        let config = watcher::Config::default().labels(&label_selector);
        let events = watcher(pods, config).default_backoff().modify(strip_unused_fields);
        let mut events = std::pin::pin!(reflector(writer, events));
        let mut shutdown = std::pin::pin!(shutdown);
        let mut pending: Option<String> = None;
        loop {
            let retry = async {
                if pending.is_some() {
                    tokio::time::sleep(WRITE_RETRY).await;
                } else {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                biased;
                () = &mut shutdown => return,
                () = retry => {}
                event = events.next() => match event {
                    Some(Ok(watcher::Event::Init | watcher::Event::InitApply(_))) => continue,
                    Some(Ok(_)) => {
                        let state = store.state();
                        pending = Some(peer_file_content(state.iter().map(Arc::as_ref), &selector));
                    }
                    Some(Err(err)) => {
                        metrics.pod_watch_errors.inc();
                        warn!(error = %err, selector = %label_selector, "watching the StatefulSet's pods failed; retrying");
                        continue;
                    }
                    None => return,
                },
            }
            let Some(content) = pending.take() else {
                continue;
            };
            match file.update(&content) {
                Ok(changed) => {
                    if changed {
                        metrics.peer_file_writes.get_or_create(&ResultLabels { result: "ok" }).inc();
                        info!(path = %file.path().display(), peers = %content.trim_end().replace('\n', ","), "peer watch file replaced");
                    }
                    metrics.peer_file_peers.set(content.lines().count() as i64);
                    health.set_ready();
                }
                Err(err) => {
                    metrics.peer_file_writes.get_or_create(&ResultLabels { result: "error" }).inc();
                    warn!(path = %file.path().display(), error = %err, "writing the peer watch file failed");
                    pending = Some(content);
                }
            }
        }
    }
}

/// The peer computation reads owner references, deletion, phase and IPs; the rest only costs memory.
fn strip_unused_fields(pod: &mut Pod) {
    pod.managed_fields_mut().clear();
    pod.annotations_mut().clear();
    pod.spec = None;
    if let Some(status) = pod.status.as_mut() {
        status.conditions = None;
        status.container_statuses = None;
        status.init_container_statuses = None;
        status.ephemeral_container_statuses = None;
    }
}
