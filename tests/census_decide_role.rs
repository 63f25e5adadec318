//! `decide_role` over the real Supervisor captures, the group fallback, and malformed bodies.

use hab_bootstrap::sidecar::census::{Census, Role, RoleDecision, UnknownReason, decide_role};
use proptest::prelude::*;
use serde_json::{Value, json};

const GROUP: &str = "roletest.prod";

fn fixture(name: &str) -> &'static str {
    match name {
        "leader" => include_str!("fixtures/supervisor/census-leader.json"),
        "follower" => include_str!("fixtures/supervisor/census-follower.json"),
        "election-in-progress" => {
            include_str!("fixtures/supervisor/census-election-in-progress.json")
        }
        "no-quorum" => include_str!("fixtures/supervisor/census-no-quorum.json"),
        "no-services" => include_str!("fixtures/supervisor/census-no-services.json"),
        "not-a-member" => include_str!("fixtures/supervisor/census-not-a-member.json"),
        other => panic!("no fixture {other}"),
    }
}

fn parse(json: &str) -> Census {
    Census::from_json(json.as_bytes()).expect("fixture parses")
}

fn unknown(reason: UnknownReason) -> RoleDecision {
    RoleDecision::Unknown(reason)
}

fn group(name: &str) -> String {
    name.to_owned()
}

#[test]
fn every_fixture_with_and_without_the_group() {
    let cases: [(&str, RoleDecision, RoleDecision); 6] = [
        ("leader", RoleDecision::Known(Role::Leader), RoleDecision::Known(Role::Leader)),
        ("follower", RoleDecision::Known(Role::Follower), RoleDecision::Known(Role::Follower)),
        (
            "election-in-progress",
            unknown(UnknownReason::ElectionInProgress { group: group(GROUP) }),
            unknown(UnknownReason::ElectionInProgress { group: group(GROUP) }),
        ),
        (
            "no-quorum",
            unknown(UnknownReason::NoQuorum { group: group(GROUP) }),
            unknown(UnknownReason::NoQuorum { group: group(GROUP) }),
        ),
        (
            "no-services",
            unknown(UnknownReason::GroupAbsent { group: group(GROUP) }),
            unknown(UnknownReason::NoServiceGroups),
        ),
        (
            "not-a-member",
            unknown(UnknownReason::NotAMember { group: group(GROUP) }),
            unknown(UnknownReason::NotAMember { group: group(GROUP) }),
        ),
    ];
    for (name, with_group, without_group) in cases {
        let census = parse(fixture(name));
        assert_eq!(decide_role(&census, Some(GROUP)), with_group, "{name}, group given");
        assert_eq!(decide_role(&census, None), without_group, "{name}, fallback");
    }
}

#[test]
fn during_an_election_leader_id_and_flags_are_not_trusted() {
    let json: Value = serde_json::from_str(fixture("election-in-progress")).unwrap();
    let captured = &json["census_groups"][GROUP];
    // The capture really carries a stale leader: the dead member, flagged leader.
    let stale = captured["leader_id"].as_str().unwrap();
    assert_eq!(captured["population"][stale]["leader"], json!(true));

    // Even a leader_id naming this very supervisor does not make it leader mid-election.
    let mut me_as_stale_leader = json.clone();
    let local = json["local_member_id"].clone();
    me_as_stale_leader["census_groups"][GROUP]["leader_id"] = local;
    let census: Census = serde_json::from_value(me_as_stale_leader).unwrap();
    assert_eq!(
        decide_role(&census, Some(GROUP)),
        unknown(UnknownReason::ElectionInProgress { group: group(GROUP) })
    );
}

/// The leader capture with more groups added next to `roletest.prod`.
fn leader_with_groups(extra: Value) -> Census {
    let mut json: Value = serde_json::from_str(fixture("leader")).unwrap();
    let groups = json["census_groups"].as_object_mut().unwrap();
    for (name, group) in extra.as_object().unwrap() {
        groups.insert(name.clone(), group.clone());
    }
    serde_json::from_value(json).unwrap()
}

fn standalone_group() -> Value {
    json!({
        "election_status": "None",
        "leader_id": null,
        "population": { "0fddc088bc33460cba35d7afecabd6f4": { "leader": false, "follower": false } }
    })
}

#[test]
fn fallback_skips_standalone_groups() {
    let census = leader_with_groups(json!({ "web.prod": standalone_group() }));
    assert_eq!(decide_role(&census, None), RoleDecision::Known(Role::Leader));
    assert_eq!(
        decide_role(&census, Some("web.prod")),
        unknown(UnknownReason::NoElection { group: "web.prod".into() })
    );
}

#[test]
fn fallback_refuses_to_guess_between_leader_groups() {
    let mut other: Value = serde_json::from_str(fixture("follower")).unwrap();
    let other_group = other["census_groups"][GROUP].take();
    let census = leader_with_groups(json!({ "cache.prod": other_group }));
    assert_eq!(
        decide_role(&census, None),
        unknown(UnknownReason::SeveralCandidateGroups { groups: vec!["cache.prod".into(), GROUP.into()] })
    );
    // Naming the group settles it.
    assert_eq!(decide_role(&census, Some(GROUP)), RoleDecision::Known(Role::Leader));
}

#[test]
fn fallback_with_only_standalone_groups_names_them() {
    let census: Census = serde_json::from_value(json!({
        "local_member_id": "0fddc088bc33460cba35d7afecabd6f4",
        "census_groups": { "web.prod": standalone_group(), "api.prod": standalone_group() }
    }))
    .unwrap();
    let decision = decide_role(&census, None);
    assert_eq!(
        decision,
        unknown(UnknownReason::NoLeaderTopologyGroup { groups: vec!["api.prod".into(), "web.prod".into()] })
    );
    assert_eq!(
        decision.to_string(),
        "unknown: no service group with a leader election in the census (groups: api.prod, web.prod)"
    );
}

#[test]
fn fallback_counts_a_group_with_leader_flags_even_without_a_status() {
    let mut group = standalone_group();
    group["population"]["0fddc088bc33460cba35d7afecabd6f4"]["leader"] = json!(true);
    let census = leader_with_groups(json!({ "web.prod": group }));
    assert!(matches!(
        decide_role(&census, None),
        RoleDecision::Unknown(UnknownReason::SeveralCandidateGroups { .. })
    ));
}

#[test]
fn malformed_bodies_are_errors_not_roles() {
    let truncated = &fixture("leader")[..fixture("leader").len() / 2];
    let wrong_status_type = fixture("leader").replace("\"ElectionFinished\"", "5");
    let bodies: [&str; 8] = [
        "",
        "<html>502 Bad Gateway</html>",
        "[]",
        "{}",
        r#"{"census_groups": {}}"#,
        r#"{"local_member_id": "a"}"#,
        truncated,
        &wrong_status_type,
    ];
    for body in bodies {
        assert!(Census::from_json(body.as_bytes()).is_err(), "accepted as a census: {body:.60}");
    }
}

#[test]
fn an_empty_census_group_list_is_a_census() {
    let census = parse(fixture("no-services"));
    assert!(census.census_groups.is_empty());
}

fn arb_census() -> impl Strategy<Value = Census> {
    let ids = prop::sample::select(vec!["a", "b", "c"]);
    let status = prop::sample::select(vec![
        "None",
        "ElectionInProgress",
        "ElectionNoQuorum",
        "ElectionFinished",
        "SomethingNew",
    ]);
    let member = (any::<bool>(), any::<bool>())
        .prop_map(|(leader, follower)| json!({ "leader": leader, "follower": follower }));
    let group = (
        status,
        prop::option::of(ids.clone()),
        prop::collection::btree_map(ids.clone(), member, 0..3),
    )
        .prop_map(|(status, leader_id, population)| {
            json!({ "election_status": status, "leader_id": leader_id, "population": population })
        });
    let groups = prop::collection::btree_map(prop::sample::select(vec!["x.prod", "y.prod"]), group, 0..3);
    (ids, groups).prop_map(|(local, groups)| {
        serde_json::from_value(json!({ "local_member_id": local, "census_groups": groups })).unwrap()
    })
}

proptest! {
    #[test]
    fn a_role_is_only_given_by_a_finished_election(
        census in arb_census(),
        wanted in prop::option::of(prop::sample::select(vec!["x.prod", "y.prod", "z.prod"])),
    ) {
        let decision = decide_role(&census, wanted);
        if let RoleDecision::Known(role) = decision {
            let name = wanted.map(str::to_owned).unwrap_or_else(|| {
                // the fallback picked the only group with an election
                census.census_groups.keys().find(|name| {
                    decide_role(&census, Some(name)) == RoleDecision::Known(role)
                }).unwrap().clone()
            });
            let group = &census.census_groups[&name];
            prop_assert_eq!(
                group.election_status,
                hab_bootstrap::sidecar::census::ElectionStatus::ElectionFinished
            );
            let is_leader = group.leader_id.as_deref() == Some(census.local_member_id.as_str());
            match role {
                Role::Leader => prop_assert!(is_leader),
                Role::Follower => {
                    prop_assert!(!is_leader);
                    prop_assert!(group.population.contains_key(&census.local_member_id));
                }
            }
        }
    }
}
