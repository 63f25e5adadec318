//! The Supervisor's `/census` and the role it implies for one service group.
//!
//! The model keeps only what the decision needs and ignores every other field, so a newer
//! Supervisor that adds fields still parses. `local_member_id` and `census_groups` are required:
//! a body without them is not a census (a proxy's error page, another endpoint), and treating it as
//! "no services loaded" would hide the mistake.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct Census {
    pub local_member_id: String,
    pub census_groups: BTreeMap<String, CensusGroup>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CensusGroup {
    #[serde(default)]
    pub election_status: ElectionStatus,
    #[serde(default)]
    pub leader_id: Option<String>,
    #[serde(default)]
    pub population: BTreeMap<String, CensusMember>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum ElectionStatus {
    /// The group has no election: its service runs with the standalone topology.
    #[default]
    None,
    ElectionInProgress,
    ElectionNoQuorum,
    ElectionFinished,
    /// A status this program does not know; never trusted as finished.
    #[serde(other)]
    Unrecognized,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct CensusMember {
    #[serde(default)]
    pub leader: bool,
    #[serde(default)]
    pub follower: bool,
    /// Health as this Supervisor sees it: alive, suspect, confirmed (dead) or departed.
    #[serde(default)]
    pub alive: bool,
    #[serde(default)]
    pub suspect: bool,
    #[serde(default)]
    pub confirmed: bool,
    #[serde(default)]
    pub departed: bool,
    #[serde(default)]
    pub sys: MemberSys,
}

/// Where a member runs; in a pod, `hostname` is the pod's name.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct MemberSys {
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub ip: Option<String>,
}

impl Census {
    pub fn from_json(body: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(body)
    }
}

impl CensusGroup {
    /// A group runs leader elections when the Supervisor reports an election state, or when any
    /// member carries a leader/follower flag (a standalone group has neither).
    fn has_leader_election(&self) -> bool {
        self.election_status != ElectionStatus::None
            || self.population.values().any(|m| m.leader || m.follower)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Leader,
    Follower,
}

impl Role {
    /// The label value written on the pod.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoleDecision {
    Known(Role),
    Unknown(UnknownReason),
}

impl RoleDecision {
    pub fn role(&self) -> Option<Role> {
        match self {
            RoleDecision::Known(role) => Some(*role),
            RoleDecision::Unknown(_) => None,
        }
    }
}

impl fmt::Display for RoleDecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RoleDecision::Known(role) => write!(f, "{role}"),
            RoleDecision::Unknown(reason) => write!(f, "unknown: {reason}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnknownReason {
    #[error("election in progress in {group}")]
    ElectionInProgress { group: String },
    #[error("no quorum in {group}: no more than half of its members are alive")]
    NoQuorum { group: String },
    #[error("election status of {group} is not one this program knows")]
    UnrecognizedElectionStatus { group: String },
    #[error("{group} has no leader election (is the service loaded with --topology leader?)")]
    NoElection { group: String },
    #[error("service group {group} is not in the census (service not loaded yet?)")]
    GroupAbsent { group: String },
    #[error("this supervisor is not a member of {group} (it does not run the service)")]
    NotAMember { group: String },
    #[error("no service is loaded on this supervisor yet")]
    NoServiceGroups,
    #[error("no service group with a leader election in the census (groups: {})", .groups.join(", "))]
    NoLeaderTopologyGroup { groups: Vec<String> },
    #[error("several service groups have leader elections ({}): pass the group to use", .groups.join(", "))]
    SeveralCandidateGroups { groups: Vec<String> },
}

/// The role of this Supervisor in `wanted_group`, or, when none is given, in the only group of the
/// census that runs leader elections.
///
/// `leader_id` is trusted only once the election is finished: during an election it still names
/// the old, possibly dead leader.
pub fn decide_role(census: &Census, wanted_group: Option<&str>) -> RoleDecision {
    let (name, group) = match select_group(census, wanted_group) {
        Ok(found) => found,
        Err(reason) => return RoleDecision::Unknown(reason),
    };
    let group_name = || name.to_owned();
    match group.election_status {
        ElectionStatus::ElectionFinished => {}
        ElectionStatus::ElectionInProgress => {
            return RoleDecision::Unknown(UnknownReason::ElectionInProgress { group: group_name() });
        }
        ElectionStatus::ElectionNoQuorum => {
            return RoleDecision::Unknown(UnknownReason::NoQuorum { group: group_name() });
        }
        ElectionStatus::Unrecognized => {
            return RoleDecision::Unknown(UnknownReason::UnrecognizedElectionStatus { group: group_name() });
        }
        ElectionStatus::None => {
            return RoleDecision::Unknown(UnknownReason::NoElection { group: group_name() });
        }
    }
    let local = census.local_member_id.as_str();
    if group.leader_id.as_deref() == Some(local) {
        RoleDecision::Known(Role::Leader)
    } else if group.population.contains_key(local) {
        RoleDecision::Known(Role::Follower)
    } else {
        RoleDecision::Unknown(UnknownReason::NotAMember { group: group_name() })
    }
}

fn select_group<'c>(
    census: &'c Census,
    wanted_group: Option<&str>,
) -> Result<(&'c str, &'c CensusGroup), UnknownReason> {
    if let Some(wanted) = wanted_group {
        return census
            .census_groups
            .get_key_value(wanted)
            .map(|(name, group)| (name.as_str(), group))
            .ok_or_else(|| UnknownReason::GroupAbsent { group: wanted.to_owned() });
    }
    if census.census_groups.is_empty() {
        return Err(UnknownReason::NoServiceGroups);
    }
    let mut candidates = census.census_groups.iter().filter(|(_, group)| group.has_leader_election());
    match (candidates.next(), candidates.next()) {
        (Some((name, group)), None) => Ok((name.as_str(), group)),
        (None, _) => Err(UnknownReason::NoLeaderTopologyGroup {
            groups: census.census_groups.keys().cloned().collect(),
        }),
        (Some(_), Some(_)) => Err(UnknownReason::SeveralCandidateGroups {
            groups: census
                .census_groups
                .iter()
                .filter(|(_, group)| group.has_leader_election())
                .map(|(name, _)| name.clone())
                .collect(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn census(json: serde_json::Value) -> Census {
        serde_json::from_value(json).expect("valid census")
    }

    #[test]
    fn unknown_fields_and_missing_optional_fields_are_accepted() {
        let c = census(serde_json::json!({
            "local_member_id": "a",
            "future_field": [1, 2],
            "census_groups": { "svc.g": {
                "election_status": "ElectionFinished",
                "population": { "a": { "something_new": true } }
            } }
        }));
        assert_eq!(decide_role(&c, Some("svc.g")), RoleDecision::Known(Role::Follower));
    }

    #[test]
    fn an_unknown_election_status_is_never_finished() {
        let c = census(serde_json::json!({
            "local_member_id": "a",
            "census_groups": { "svc.g": {
                "election_status": "ElectionSomethingNew",
                "leader_id": "a",
                "population": { "a": { "leader": true } }
            } }
        }));
        assert_eq!(
            decide_role(&c, None),
            RoleDecision::Unknown(UnknownReason::UnrecognizedElectionStatus { group: "svc.g".into() })
        );
    }

    #[test]
    fn a_standalone_group_has_no_role() {
        let c = census(serde_json::json!({
            "local_member_id": "a",
            "census_groups": { "web.prod": {
                "election_status": "None",
                "population": { "a": {} }
            } }
        }));
        assert_eq!(
            decide_role(&c, Some("web.prod")),
            RoleDecision::Unknown(UnknownReason::NoElection { group: "web.prod".into() })
        );
        assert_eq!(
            decide_role(&c, None),
            RoleDecision::Unknown(UnknownReason::NoLeaderTopologyGroup { groups: vec!["web.prod".into()] })
        );
    }

    #[test]
    fn reasons_read_as_sentences() {
        let decision = RoleDecision::Unknown(UnknownReason::SeveralCandidateGroups {
            groups: vec!["a.x".into(), "b.y".into()],
        });
        assert_eq!(
            decision.to_string(),
            "unknown: several service groups have leader elections (a.x, b.y): pass the group to use"
        );
        assert_eq!(RoleDecision::Known(Role::Leader).to_string(), "leader");
    }
}
