//! First rollouts: ordered of 3 and of 5, a Parallel cold start of 5, and the `--peer` annotation
//! (accepted, with the watch file all the same). Each ends with a restart in place of pod 0.

use super::assert_no_unexpected_exits;
use crate::world::{StsSpec, SupVolume, World};
use crate::{SERIAL, habitat};

async fn rollout(name: &str, ns: &str, spec: StsSpec, showed: &str) {
    let Some(habitat) = habitat() else { return };
    let _serial = SERIAL.lock().await;
    let mut w = World::new(name, ns, habitat).await;
    let ordinals: Vec<u32> = (0..spec.replicas as u32).collect();
    let volume = spec.volume;
    w.create(&spec).await;
    w.measure("rollout", "ring", &ordinals).await;
    assert_no_unexpected_exits(&w);
    w.restart_in_place("restart in place ring-0", "ring", &ordinals, "ring-0").await;
    w.assert_injection("ring", "ring-0", volume).await;
    w.summary("rollout", showed);
}

/// The first OrderedReady rollout of 3 with the default injection (watch file, ring key, an
/// emptyDir at /hab/sup).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a control plane and real Habitat binaries: run scripts/test"]
async fn first_ordered_rollout_of_3() {
    rollout(
        "first_ordered_rollout_of_3",
        "hab-rollout3",
        StsSpec::new("ring", 3),
        "one ring, one leader label; watch file, ring key and state emptyDir injected; restart in place rejoins",
    )
    .await;
}

/// The first OrderedReady rollout of 5.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a control plane and real Habitat binaries: run scripts/test"]
async fn first_ordered_rollout_of_5() {
    rollout(
        "first_ordered_rollout_of_5",
        "hab-rollout5",
        StsSpec::new("ring", 5),
        "one ring of 5, one leader label; restart in place rejoins",
    )
    .await;
}

/// A Parallel cold start of 5: every pod at once, each sidecar's first peer file lists the pods
/// that have an address so far; no pod may found a ring of its own that stays apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a control plane and real Habitat binaries: run scripts/test"]
async fn parallel_cold_start_of_5() {
    rollout(
        "parallel_cold_start_of_5",
        "hab-parallel5",
        StsSpec { parallel: true, ..StsSpec::new("ring", 5) },
        "all 5 at once form one ring, one leader label; restart in place rejoins",
    )
    .await;
}

/// `habitat/peer-mode: peer` is accepted (with a warning) and gets the watch file too; with
/// `/hab/sup` on a claim, nothing is injected there and the sidecar shares the claim's volume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a control plane and real Habitat binaries: run scripts/test"]
async fn peer_mode_annotation_gets_the_watch_file() {
    rollout(
        "peer_mode_annotation_gets_the_watch_file",
        "hab-peer-annotation",
        StsSpec { peer_mode: Some("peer"), volume: SupVolume::Pvc, ..StsSpec::new("ring", 3) },
        "peer-mode: peer stored with the watch file (no --peer); PVC at /hab/sup shared with the sidecar; restart in place rejoins",
    )
    .await;
}
