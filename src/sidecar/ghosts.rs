//! Ghosts: members that are dead for good but still count in their service group's quorum.
//!
//! A pod that comes back without its Supervisor state joins under a new member id. The old id
//! stays in the ring as confirmed dead for 72 hours and Habitat counts it in every quorum of its
//! groups (`alive > (members not departed) / 2`): a ring of 3 with one such ghost has 3 of 4 and
//! no longer survives the loss of one more member (issue 9, failure 2). A StatefulSet runs at most
//! one pod of a name at a time and a pod's hostname is its name, so a dead member with this pod's
//! hostname and another id is this pod's own predecessor: nobody can bring it back, and departing
//! it is safe. Pure: the census in, the ids out.

use std::collections::BTreeSet;

use crate::sidecar::census::{Census, CensusGroup, CensusMember};

/// Confirmed dead and not departed: counted in the quorum, never coming back by itself.
fn is_dead(member: &CensusMember) -> bool {
    member.confirmed && !member.alive && !member.departed
}

/// The member ids of every service group that ran on a pod named `own_hostname` before this
/// Supervisor (another id, the same hostname) and are confirmed dead.
pub fn predecessors<'c>(census: &'c Census, own_hostname: &str) -> BTreeSet<&'c str> {
    census
        .census_groups
        .values()
        .flat_map(|group| &group.population)
        .filter(|(id, member)| {
            id.as_str() != census.local_member_id
                && is_dead(member)
                && member.sys.hostname.as_deref() == Some(own_hostname)
        })
        .map(|(id, _)| id.as_str())
        .collect()
}

/// A group's quorum as Habitat computes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quorum {
    pub alive: usize,
    /// Members that count: every one not departed, the dead included.
    pub counted: usize,
    /// Of those, confirmed dead (ghosts until departed).
    pub dead: usize,
}

impl Quorum {
    pub fn of(group: &CensusGroup) -> Self {
        let members = group.population.values().filter(|m| !m.departed);
        let (mut alive, mut counted, mut dead) = (0, 0, 0);
        for member in members {
            counted += 1;
            alive += usize::from(member.alive);
            dead += usize::from(is_dead(member));
        }
        Self { alive, counted, dead }
    }

    pub fn has_quorum(self) -> bool {
        self.alive * 2 > self.counted
    }

    /// How many more alive members may fail before the group loses its quorum (0 when it has none).
    pub fn failures_tolerated(self) -> usize {
        if !self.has_quorum() {
            return 0;
        }
        // Largest k with (alive - k) * 2 > counted.
        (self.alive * 2 - self.counted - 1) / 2
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn member(host: &str, health: &str) -> serde_json::Value {
        json!({
            "alive": health == "alive", "suspect": health == "suspect",
            "confirmed": health == "confirmed", "departed": health == "departed",
            "sys": {"hostname": host, "ip": "10.0.0.1"}
        })
    }

    fn census(population: serde_json::Value) -> Census {
        serde_json::from_value(json!({
            "local_member_id": "new0",
            "census_groups": {"redis.default": {
                "election_status": "ElectionFinished", "leader_id": "b", "population": population
            }}
        }))
        .unwrap()
    }

    #[test]
    fn the_dead_member_with_this_pods_name_is_its_predecessor() {
        let c = census(json!({
            "new0": member("redis-0", "alive"),
            "old0": member("redis-0", "confirmed"),
            "b": member("redis-1", "alive"),
            "c": member("redis-2", "confirmed"),
        }));
        assert_eq!(predecessors(&c, "redis-0"), BTreeSet::from(["old0"]));
        assert!(predecessors(&c, "redis-9").is_empty());
    }

    #[test]
    fn suspect_departed_and_alive_members_are_left_alone() {
        let c = census(json!({
            "new0": member("redis-0", "alive"),
            "s": member("redis-0", "suspect"),
            "d": member("redis-0", "departed"),
            "a": member("redis-0", "alive"),
        }));
        assert!(predecessors(&c, "redis-0").is_empty());
    }

    #[test]
    fn a_ghost_leaves_a_ring_of_three_no_failure_to_spare() {
        let c = census(json!({
            "new0": member("redis-0", "alive"),
            "old0": member("redis-0", "confirmed"),
            "b": member("redis-1", "alive"),
            "c": member("redis-2", "alive"),
            "gone": member("redis-3", "departed"),
        }));
        let quorum = Quorum::of(&c.census_groups["redis.default"]);
        assert_eq!(quorum, Quorum { alive: 3, counted: 4, dead: 1 });
        assert!(quorum.has_quorum());
        assert_eq!(quorum.failures_tolerated(), 0, "2 of 4 is no quorum");
        let healthy = Quorum { alive: 3, counted: 3, dead: 0 };
        assert_eq!(healthy.failures_tolerated(), 1);
        assert_eq!(Quorum { alive: 5, counted: 5, dead: 0 }.failures_tolerated(), 2);
        assert_eq!(Quorum { alive: 2, counted: 4, dead: 2 }.failures_tolerated(), 0);
        assert!(!Quorum { alive: 2, counted: 4, dead: 2 }.has_quorum());
    }
}
