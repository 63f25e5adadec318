//! Day-two events and a container restart in place after each (issue 9, failure 1): the leader's
//! Supervisor crashing, pod 0 recreated with and without its state, a rolling update, scale
//! 5→3→5, pod 0 recreated then a scale-down (the former `--peer` crash loop), a node reboot.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::{assert_no_unexpected_exits, without};
use crate::world::{StsSpec, SupVolume, World, supervisor};
use crate::{SERIAL, WAIT, habitat};

/// The leader's Supervisor is SIGKILLed and stays down: the two others elect a new leader and
/// exactly one pod (the new leader's) carries role=leader; then the old leader's Supervisor
/// restarts in place and rejoins as a follower.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a control plane and real Habitat binaries: run scripts/test"]
async fn leader_crash() {
    let Some(habitat) = habitat() else { return };
    let _serial = SERIAL.lock().await;
    let mut w = World::new("leader_crash", "hab-leader-crash", habitat).await;
    let all = [0, 1, 2];
    w.create(&StsSpec::new("ring", 3)).await;
    w.measure("rollout", "ring", &all).await;
    let leader = w.leader_label("ring", &all).await.unwrap();
    eprintln!("[scenario] the leader is {leader}: its Supervisor is killed and held down");

    w.mark();
    w.kubelet.hold_supervisor(&leader);
    w.down.insert(leader.clone());
    let survivors = without(&all, &leader);
    w.measure("leader crashed", "ring", &survivors).await;
    let new_leader = w.leader_label("ring", &survivors).await.unwrap();
    assert_ne!(new_leader, leader);

    w.mark();
    w.down.remove(&leader);
    w.kubelet.release_supervisor(&leader);
    w.measure("old leader back in place", "ring", &all).await;
    w.restart_in_place("restart in place ring-0", "ring", &all, "ring-0").await;
    assert_no_unexpected_exits(&w);
    w.summary(
        "leader crashed",
        &format!("leader {leader} SIGKILLed and held: {new_leader} elected, one label; the old leader rejoins in place"),
    );
}

/// Pod 0 deleted and recreated by the controller: `with_state` keeps /hab/sup on a claim (same
/// member id), without it the injected emptyDir is new (a new member id; the old one departed
/// gracefully). Then pod 0's Supervisor restarts in place and keeps its (new) member id.
async fn pod0_recreated(name: &str, ns: &str, volume: SupVolume) {
    let Some(habitat) = habitat() else { return };
    let _serial = SERIAL.lock().await;
    let mut w = World::new(name, ns, habitat).await;
    let all = [0, 1, 2];
    w.create(&StsSpec { volume, ..StsSpec::new("ring", 3) }).await;
    w.measure("rollout", "ring", &all).await;
    let before = w.member_ids("ring", &all).await;
    let old = w.kubelet.running()["ring-0"].uid.clone();

    w.delete_pod("ring-0").await;
    wait_recreated(&w, "ring", &all, &[("ring-0", old)].into()).await;
    w.measure("pod 0 recreated", "ring", &all).await;
    let after = w.member_ids("ring", &all).await;
    match volume {
        SupVolume::Pvc => assert_eq!(after["ring-0"], before["ring-0"], "the claim kept pod 0's member id"),
        SupVolume::None => assert_ne!(after["ring-0"], before["ring-0"], "pod 0 came back without state"),
    }

    w.restart_in_place("restart in place ring-0", "ring", &all, "ring-0").await;
    let restarted = w.member_ids("ring", &all).await;
    assert_eq!(restarted["ring-0"], after["ring-0"], "a restart in place keeps the member id");
    assert_no_unexpected_exits(&w);
    w.assert_injection("ring", "ring-0", volume).await;
    let how =
        if volume == SupVolume::Pvc { "same member id (claim)" } else { "new member id (fresh emptyDir)" };
    w.summary(
        "pod 0 recreated",
        &format!("pod 0 rejoins with {how}; a restart in place keeps its id and rejoins"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a control plane and real Habitat binaries: run scripts/test"]
async fn pod0_recreated_with_state() {
    pod0_recreated("pod0_recreated_with_state", "hab-pod0-pvc", SupVolume::Pvc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a control plane and real Habitat binaries: run scripts/test"]
async fn pod0_recreated_without_state() {
    pod0_recreated("pod0_recreated_without_state", "hab-pod0-nostate", SupVolume::None).await;
}

/// Waits until every pod in `old` (name → UID) runs again under a new UID, and `ordinals` run.
async fn wait_recreated(w: &World, sts: &str, ordinals: &[u32], old: &BTreeMap<&str, String>) {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(running) = w.snapshot(sts, ordinals).await
            && old.iter().all(|(n, uid)| running.get(*n).is_some_and(|r| &r.uid != uid))
        {
            return;
        }
        assert!(Instant::now() < deadline, "{old:?} not all recreated after {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A rolling update of the whole StatefulSet (highest ordinal first), a restart in place, then a
/// scale 3→2 and a restart in place of both remaining pods (issue 9: after a rolling update and a
/// scale-down, both remaining pods crash-looped in `--peer` mode).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a control plane and real Habitat binaries: run scripts/test"]
async fn rolling_update() {
    let Some(habitat) = habitat() else { return };
    let _serial = SERIAL.lock().await;
    let mut w = World::new("rolling_update", "hab-rolling", habitat).await;
    let all = [0, 1, 2];
    w.create(&StsSpec::new("ring", 3)).await;
    w.measure("rollout", "ring", &all).await;
    let old: BTreeMap<&str, String> =
        w.kubelet.running().into_iter().map(|(n, r)| (leak(n), r.uid)).collect();

    w.rolling_update("ring", "2").await;
    wait_recreated(&w, "ring", &all, &old).await;
    w.measure("rolling update", "ring", &all).await;
    w.restart_in_place("restart in place ring-0", "ring", &all, "ring-0").await;

    w.scale("ring", 2).await;
    w.measure("scaled to 2", "ring", &[0, 1]).await;
    w.restart_in_place("restart in place ring-0 after 3→2", "ring", &[0, 1], "ring-0").await;
    w.restart_in_place("restart in place ring-1 after 3→2", "ring", &[0, 1], "ring-1").await;
    assert_no_unexpected_exits(&w);
    w.summary(
        "rolling update",
        "one ring after the rolling update; after it and a scale 3→2 both remaining pods restart in place and rejoin",
    );
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// Scale 5→3→5, with every remaining pod restarted in place after the scale-down, and pod 0 after
/// the scale-up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a control plane and real Habitat binaries: run scripts/test"]
async fn scale_5_3_5() {
    let Some(habitat) = habitat() else { return };
    let _serial = SERIAL.lock().await;
    let mut w = World::new("scale_5_3_5", "hab-scale535", habitat).await;
    let five = [0, 1, 2, 3, 4];
    let three = [0, 1, 2];
    w.create(&StsSpec::new("ring", 5)).await;
    w.measure("rollout", "ring", &five).await;
    w.scale("ring", 3).await;
    w.measure("scaled to 3", "ring", &three).await;
    for pod in ["ring-0", "ring-1", "ring-2"] {
        w.restart_in_place(&format!("restart in place {pod} after 5→3"), "ring", &three, pod).await;
    }
    w.scale("ring", 5).await;
    w.measure("scaled to 5", "ring", &five).await;
    w.restart_in_place("restart in place ring-0 after 3→5", "ring", &five, "ring-0").await;
    w.restart_in_place("restart in place ring-4 after 3→5", "ring", &five, "ring-4").await;
    assert_no_unexpected_exits(&w);
    w.summary("scaled to 3", "5→3: one ring of 3, each restarts in place and rejoins; 3→5: one ring of 5");
}

/// The sequence that crash-looped in `--peer` mode (issue 9, failure 1), under the default mode:
/// pod 0 recreated while 1 and 2 live, scale 3→2, pod 0's Supervisor restarts in place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a control plane and real Habitat binaries: run scripts/test"]
async fn restart_in_place_after_scale_down() {
    let Some(habitat) = habitat() else { return };
    let _serial = SERIAL.lock().await;
    let mut w = World::new("restart_in_place_after_scale_down", "hab-scaledown-restart", habitat).await;
    let all = [0, 1, 2];
    w.create(&StsSpec::new("ring", 3)).await;
    w.measure("rollout", "ring", &all).await;
    let old = w.kubelet.running()["ring-0"].uid.clone();
    w.delete_pod("ring-0").await;
    wait_recreated(&w, "ring", &all, &[("ring-0", old)].into()).await;
    w.measure("pod 0 recreated", "ring", &all).await;
    let pod0 = w.pods().get("ring-0").await.unwrap();
    let args = supervisor(&pod0).args.clone().unwrap_or_default();
    assert!(!args.iter().any(|a| a == "--peer"), "pod 0 is stored with --peer: {args:?}");

    w.scale("ring", 2).await;
    w.measure("scaled to 2", "ring", &[0, 1]).await;
    w.restart_in_place("restart in place ring-0", "ring", &[0, 1], "ring-0").await;
    assert_no_unexpected_exits(&w);
    w.summary(
        "restart in place ring-0",
        "pod 0 (recreated, then 3→2) restarts in place and rejoins: no crash loop",
    );
}

/// A node reboot: every Supervisor and sidecar killed at once and started again in place (the
/// sidecars first; no census answers, so each sidecar strips the saved member list and the ring
/// re-forms through the peer files).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a control plane and real Habitat binaries: run scripts/test"]
async fn node_reboot() {
    let Some(habitat) = habitat() else { return };
    let _serial = SERIAL.lock().await;
    let mut w = World::new("node_reboot", "hab-reboot", habitat).await;
    let all = [0, 1, 2];
    w.create(&StsSpec::new("ring", 3)).await;
    w.measure("rollout", "ring", &all).await;
    let before = w.member_ids("ring", &all).await;
    let leader = w.leader_label("ring", &all).await.unwrap();
    w.mark();
    w.kubelet.reboot();
    w.measure("node reboot", "ring", &all).await;
    let after = w.member_ids("ring", &all).await;
    assert_eq!(after, before, "the state emptyDirs kept every member id across the reboot");
    for (pod, r) in w.kubelet.running() {
        assert_eq!(r.sup_starts, 2, "{pod}: {:?}", r.sup_exits);
    }
    let new_leader = w.leader_label("ring", &all).await.unwrap();
    w.restart_in_place("restart in place ring-0", "ring", &all, "ring-0").await;
    w.summary(
        "node reboot",
        &format!(
            "all killed and restarted in place: one ring, same member ids, leader {leader} → {new_leader}"
        ),
    );
}
