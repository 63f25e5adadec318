//! Two StatefulSets in two namespaces run the same service group (roletest.prod); a crashed pod
//! of ring A is scaled away and its address goes to a new pod of ring B (issue 9, failure 3).
//! Ring A keeps pinging the address; without a ring key per StatefulSet the two rings merge.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::assert_no_unexpected_exits;
use crate::census;
use crate::world::{StsSpec, World};
use crate::{GROUP, SERIAL, habitat};

/// How long the rings are watched after the address changed hands (the findings saw the merge
/// within 30 s).
const WATCH: Duration = Duration::from_secs(45);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a control plane and real Habitat binaries: run scripts/test"]
async fn two_rings_same_group_address_reuse() {
    let Some(habitat) = habitat() else { return };
    let _serial = SERIAL.lock().await;
    let mut a = World::new("two_rings_same_group_address_reuse", "hab-merge-a", habitat).await;
    let mut b = a.beside("hab-merge-b").await;
    a.create(&StsSpec::new("ringa", 3)).await;
    b.create(&StsSpec::new("ringb", 2)).await;
    a.measure("ring A rollout", "ringa", &[0, 1, 2]).await;
    b.measure("ring B rollout", "ringb", &[0, 1]).await;

    // ringa-2 crashes, stays down, and is scaled away: its address is free.
    let reused = a.kubelet.running()["ringa-2"].ip.clone();
    a.kubelet.hold_supervisor("ringa-2");
    a.down.insert("ringa-2".into());
    a.scale("ringa", 2).await;
    a.down.remove("ringa-2");
    a.wait_running("ringa", &[0, 1]).await;
    while a.pods().get_opt("ringa-2").await.unwrap().is_some() {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // ringb-2 gets that address: from kwok if it hands it out, else by the harness's override.
    b.kubelet.override_address("ringb-2", &reused);
    b.scale("ringb", 3).await;
    b.measure("ring B scaled to 3 (ringb-2 on ringa-2's address)", "ringb", &[0, 1, 2]).await;
    let stored = b.pods().get("ringb-2").await.unwrap().status.unwrap().pod_ip.unwrap_or_default();
    let how = if stored == reused { "kwok handed it out" } else { "harness override; kwok stored another" };
    eprintln!("[scenario] ringb-2 runs on {reused} ({how}: {stored})");
    assert_eq!(b.kubelet.running()["ringb-2"].ip, reused);

    // Watch both rings: each census lists only its own StatefulSet's members.
    let start = Instant::now();
    while start.elapsed() < WATCH {
        for (w, sts, ordinals) in [(&a, "ringa", &[0u32, 1][..]), (&b, "ringb", &[0, 1, 2][..])] {
            for r in w.snapshot(sts, ordinals).await.unwrap().values() {
                let Some(view) = census::view(&r.ip, GROUP) else { continue };
                let strangers: BTreeMap<&String, &String> = view
                    .members
                    .iter()
                    .filter(|(_, (_, host))| !host.starts_with(&format!("{sts}-")))
                    .map(|(id, (_, host))| (id, host))
                    .collect();
                assert!(
                    strangers.is_empty(),
                    "the rings merged after {:.1?}: {} ({}) lists {strangers:?}",
                    start.elapsed(),
                    r.name,
                    r.ip
                );
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    a.mark();
    b.mark();
    a.measure("ring A after the watch", "ringa", &[0, 1]).await;
    b.measure("ring B after the watch", "ringb", &[0, 1, 2]).await;
    assert_no_unexpected_exits(&a);
    assert_no_unexpected_exits(&b);
    b.summary(
        "ring B scaled to 3 (ringb-2 on ringa-2's address)",
        &format!(
            "ringb-2 on crashed ringa-2's address ({how}); {}s later each census lists only its own StatefulSet's members, one leader label each",
            WATCH.as_secs()
        ),
    );
}
