//! Scale 3→0→3 with /hab/sup on claims and new pod addresses (issue 9, failure 4), with the
//! configuration `hab config apply` published while the ring lived kept.

use std::time::{Duration, Instant};

use super::assert_no_unexpected_exits;
use crate::world::{StsSpec, SupVolume, World, addresses};
use crate::{SERIAL, habitat};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a control plane and real Habitat binaries: run scripts/test"]
async fn scale_3_0_3_new_addresses() {
    let Some(habitat) = habitat() else { return };
    let _serial = SERIAL.lock().await;
    let mut w = World::new("scale_3_0_3_new_addresses", "hab-scale303", habitat).await;
    let all = [0, 1, 2];
    w.create(&StsSpec { volume: SupVolume::Pvc, ..StsSpec::new("ring", 3) }).await;
    w.measure("rollout", "ring", &all).await;

    let marker = format!("applied-{}", w.ns);
    w.config_apply("ring-0", 1, &format!("marker = \"{marker}\"\n"));
    wait_config(&w, &all, &marker, "after hab config apply").await;
    let ids = w.member_ids("ring", &all).await;
    let old_ips = addresses(&w.kubelet.running());

    w.scale("ring", 0).await;
    w.wait_no_pods("ring").await;
    // kwok hands released addresses out again first: hold them so that the ring comes back on
    // new ones.
    w.occupy_addresses(&old_ips).await;

    w.scale("ring", 3).await;
    w.measure("scaled 0→3 on new addresses", "ring", &all).await;
    let new_ips = addresses(&w.kubelet.running());
    eprintln!("[scenario] addresses before {old_ips:?}, after {new_ips:?}");
    assert!(old_ips.is_disjoint(&new_ips), "the ring came back on new addresses");
    assert_eq!(w.member_ids("ring", &all).await, ids, "the claims kept every member id");
    wait_config(&w, &all, &marker, "after 3→0→3").await;

    w.restart_in_place("restart in place ring-0", "ring", &all, "ring-0").await;
    assert_no_unexpected_exits(&w);
    w.summary(
        "scaled 0→3 on new addresses",
        "state on claims, all new addresses: one ring with the same member ids, the applied config kept on every member",
    );
}

/// Waits (30 s at most) until every member's /services/roletest/prod shows `marker`.
async fn wait_config(w: &World, ordinals: &[u32], marker: &str, when: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let running = w.snapshot("ring", ordinals).await.unwrap();
        let seen: Vec<(String, Option<String>)> = running
            .values()
            .map(|r| {
                let cfg = World::service_cfg(&r.ip);
                (
                    r.name.clone(),
                    cfg.and_then(|c| c.get("marker").and_then(|m| m.as_str()).map(str::to_owned)),
                )
            })
            .collect();
        if seen.iter().all(|(_, m)| m.as_deref() == Some(marker)) {
            eprintln!("[scenario] {when}: every member's cfg.marker is {marker}");
            return;
        }
        assert!(Instant::now() < deadline, "{when}: cfg.marker per pod {seen:?}, want {marker}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
