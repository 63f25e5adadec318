//! Issue 9's scenarios, by theme. Each test asserts what the design must achieve, prints every
//! measured step (`[measure] ...`) and ends with one line for the table:
//!
//!   SCENARIO <name> | ring <s> | leader <s> | <what it showed> [steps ring/leader s: ...]
//!
//! where ring and leader are the times of the event the scenario is about (from that event to one
//! ring, and to exactly one role=leader label on the census leader's pod).

mod ghosts;
mod merge;
mod restarts;
mod rollout;
mod state;

use crate::world::World;

/// The ordinal of pod `<sts>-<n>`.
pub fn ordinal(pod: &str) -> u32 {
    pod.rsplit('-').next().unwrap().parse().unwrap()
}

/// `ordinals` without `pod`'s.
pub fn without(ordinals: &[u32], pod: &str) -> Vec<u32> {
    ordinals.iter().copied().filter(|o| *o != ordinal(pod)).collect()
}

/// Supervisor exits the test did not cause itself.
pub fn unexpected_exits(w: &World) -> Vec<String> {
    w.kubelet.supervisor_exits().into_iter().filter(|e| !e.contains("by the test")).collect()
}

pub fn assert_no_unexpected_exits(w: &World) {
    let exits = unexpected_exits(w);
    assert!(exits.is_empty(), "Supervisor exits nobody asked for:\n{}", exits.join("\n---\n"));
}
