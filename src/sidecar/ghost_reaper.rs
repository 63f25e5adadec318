//! Departs this pod's predecessor from the ring (see `ghosts`), through the local Supervisor's
//! control gateway, and says so in an Event; when it cannot, the Event tells the operator the
//! exact command to run. Reads the census the role loop already fetched: no extra polling.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tokio::sync::watch;
use tracing::{info, warn};

use super::ctl_gateway::CtlGateway;
use super::ghosts::predecessors;
use super::metrics::Metrics;
use crate::sidecar::census::Census;

/// A failed departure is tried again after this long (the Supervisor may still be starting).
const RETRY_AFTER: Duration = Duration::from_secs(30);
const CTL_TIMEOUT: Duration = Duration::from_secs(5);

pub struct GhostReaper {
    /// This pod's name: its Supervisor's hostname.
    pub pod_name: String,
    pub pod_namespace: String,
    /// The control gateway, e.g. 127.0.0.1:9632.
    pub ctl_addr: String,
    /// The Supervisor's `/hab/sup/default` as mounted here, for its `CTL_SECRET`; None when the
    /// pod does not share it (the Event then says what to run by hand).
    pub sup_state_dir: Option<PathBuf>,
    pub recorder: Option<Recorder>,
    pub metrics: Metrics,
}

impl GhostReaper {
    pub fn recorder(client: kube::Client, pod_name: &str) -> Recorder {
        let reporter =
            Reporter { controller: "hab-bootstrap-sidecar".to_owned(), instance: Some(pod_name.to_owned()) };
        Recorder::new(client, reporter)
    }

    pub async fn run(
        self,
        mut censuses: watch::Receiver<Option<Arc<Census>>>,
        stop: impl Future<Output = ()>,
    ) {
        let mut stop = std::pin::pin!(stop);
        // Member id → when it may be tried again; departed ids are never tried twice.
        let mut attempts: BTreeMap<String, Option<Instant>> = BTreeMap::new();
        loop {
            tokio::select! {
                biased;
                () = &mut stop => return,
                changed = censuses.changed() => if changed.is_err() { return },
            }
            let Some(census) = censuses.borrow_and_update().clone() else { continue };
            let ghosts: Vec<String> =
                predecessors(&census, &self.pod_name).into_iter().map(str::to_owned).collect();
            for id in ghosts {
                let due = match attempts.get(&id) {
                    None => true,
                    Some(None) => false,
                    Some(Some(at)) => Instant::now() >= *at,
                };
                if due {
                    let departed = self.depart(&id).await;
                    attempts.insert(id, (!departed).then(|| Instant::now() + RETRY_AFTER));
                }
            }
        }
    }

    async fn depart(&self, member_id: &str) -> bool {
        let by_hand = format!(
            "HAB_CTL_SECRET=$(cat /hab/sup/default/CTL_SECRET) hab sup depart {member_id} --remote-sup \
             <this pod's IP>:{port}, in the Supervisor container of pod {pod}",
            port = self.ctl_addr.rsplit(':').next().unwrap_or("9632"),
            pod = self.pod_name,
        );
        let result = match self.secret() {
            Ok(secret) => CtlGateway::new(&self.ctl_addr, secret, CTL_TIMEOUT)
                .depart(member_id)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {
                info!(member = member_id, "departed this pod's predecessor from the ring");
                self.metrics.ghost_departed(true);
                self.event(
                    EventType::Normal,
                    "PredecessorDeparted",
                    format!(
                        "Supervisor member {member_id} ran this pod before and is confirmed dead; it was \
                         departed so that it no longer counts in the ring's quorum"
                    ),
                )
                .await;
                true
            }
            Err(err) => {
                warn!(member = member_id, error = %err, "could not depart this pod's predecessor");
                self.metrics.ghost_departed(false);
                self.event(
                    EventType::Warning,
                    "PredecessorNotDeparted",
                    format!(
                        "Supervisor member {member_id} ran this pod before, is confirmed dead and still \
                         counts in the quorum (one failure fewer to spare); departing it failed: {err}. \
                         Fix: {by_hand}"
                    ),
                )
                .await;
                false
            }
        }
    }

    fn secret(&self) -> Result<String, String> {
        let dir = self
            .sup_state_dir
            .as_ref()
            .ok_or("the Supervisor's state directory is not shared with the sidecar")?;
        let path = dir.join("CTL_SECRET");
        std::fs::read_to_string(&path)
            .map(|s| s.trim().to_owned())
            .map_err(|e| format!("reading {}: {e}", path.display()))
    }

    async fn event(&self, type_: EventType, reason: &str, note: String) {
        let Some(recorder) = &self.recorder else { return };
        let reference = ObjectReference {
            api_version: Some("v1".to_owned()),
            kind: Some("Pod".to_owned()),
            name: Some(self.pod_name.clone()),
            namespace: Some(self.pod_namespace.clone()),
            ..Default::default()
        };
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note.chars().take(1000).collect()),
            action: "Depart".to_owned(),
            secondary: None,
        };
        if let Err(e) = recorder.publish(&event, &reference).await {
            warn!(error = %e, "could not publish an Event");
        }
    }
}
