//! The peer watch file: which pods become lines, and how the file is replaced.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use hab_bootstrap::sidecar::peer_file::PeerFile;
use hab_bootstrap::sidecar::peer_set::{PeerSelector, peer_file_content, watch_selector, watched_ordinals};
use k8s_openapi::api::core::v1::{Pod, PodIP, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};

fn selector(gossip_port: u16) -> PeerSelector {
    PeerSelector { statefulset: "redis".into(), own_pod: "redis-0".into(), gossip_port }
}

/// A pod of StatefulSet `sts` (controller owner) with these IPs.
fn pod(name: &str, sts: &str, ips: &[&str]) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            owner_references: Some(vec![OwnerReference {
                api_version: "apps/v1".into(),
                kind: "StatefulSet".into(),
                name: sts.into(),
                uid: format!("uid-{sts}"),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..ObjectMeta::default()
        },
        spec: None,
        status: Some(PodStatus {
            phase: Some("Running".into()),
            pod_ip: ips.first().map(|ip| ip.to_string()),
            pod_ips: (!ips.is_empty()).then(|| ips.iter().map(|ip| PodIP { ip: ip.to_string() }).collect()),
            ..PodStatus::default()
        }),
    }
}

fn deleting(mut pod: Pod) -> Pod {
    pod.metadata.deletion_timestamp = Some(Time(Default::default()));
    pod
}

fn in_phase(mut pod: Pod, phase: &str) -> Pod {
    pod.status.as_mut().unwrap().phase = Some(phase.into());
    pod
}

fn not_controller(mut pod: Pod) -> Pod {
    pod.metadata.owner_references.as_mut().unwrap()[0].controller = None;
    pod
}

fn content(pods: &[Pod], gossip_port: u16) -> String {
    peer_file_content(pods, &selector(gossip_port))
}

#[test]
fn only_other_live_pods_of_the_statefulset_with_an_ip_are_peers() {
    let pods = [
        pod("redis-0", "redis", &["10.0.0.1"]),           // itself
        pod("redis-1", "redis", &["10.0.0.9"]),           // peer
        pod("redis-2", "redis", &["10.0.0.10"]),          // peer, sorts after .9
        pod("redis-3", "redis", &[]),                     // no IP yet
        deleting(pod("redis-4", "redis", &["10.0.0.4"])), // going away
        in_phase(pod("redis-5", "redis", &["10.0.0.5"]), "Failed"),
        pod("redis-extra-0", "redis-extra", &["10.0.0.6"]), // same labels, other StatefulSet
        not_controller(pod("redis-7", "redis", &["10.0.0.7"])),
        pod("redis-8", "redis", &["not-an-ip"]),
    ];
    assert_eq!(content(&pods, 9638), "10.0.0.9\n10.0.0.10\n");
}

#[test]
fn a_custom_gossip_port_and_ipv6_carry_their_port() {
    let pods = [
        pod("redis-1", "redis", &["10.0.0.2"]),
        pod("redis-2", "redis", &["fd00::2"]),
        pod("redis-3", "redis", &["fd00::3", "10.0.0.3"]), // dual stack: IPv4 wins
    ];
    assert_eq!(content(&pods, 9000), "10.0.0.2:9000\n10.0.0.3:9000\n[fd00::2]:9000\n");
    // A bare IPv6 line would get no default port from the Supervisor: always bracket it.
    assert_eq!(content(&pods, 9638), "10.0.0.2\n10.0.0.3\n[fd00::2]:9638\n");
}

#[test]
fn no_peers_is_an_empty_file_and_never_a_blank_line() {
    assert_eq!(content(&[], 9638), "");
    assert_eq!(content(&[pod("redis-0", "redis", &["10.0.0.1"])], 9638), "");
    let twice = [pod("redis-1", "redis", &["10.0.0.2"]), pod("redis-1", "redis", &["10.0.0.2"])];
    assert_eq!(content(&twice, 9638), "10.0.0.2\n");
}

#[test]
fn the_file_follows_pods_coming_and_going() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("peers");
    let mut file = PeerFile::new(&path);
    let me = pod("redis-0", "redis", &["10.0.0.1"]);
    let one = pod("redis-1", "redis", &["10.0.0.2"]);
    let two = pod("redis-2", "redis", &["10.0.0.3"]);
    let one_moved = pod("redis-1", "redis", &["10.0.0.7"]);
    let steps: Vec<(Vec<Pod>, &str)> = vec![
        (vec![me.clone()], ""),
        (vec![me.clone(), pod("redis-1", "redis", &[])], ""),
        (vec![me.clone(), one.clone()], "10.0.0.2\n"),
        (vec![me.clone(), one.clone(), two.clone()], "10.0.0.2\n10.0.0.3\n"),
        (vec![me.clone(), deleting(one.clone()), two.clone()], "10.0.0.3\n"),
        (vec![me.clone(), one_moved, two.clone()], "10.0.0.3\n10.0.0.7\n"),
        (vec![me.clone()], ""),
    ];
    let mut writes = 0;
    for (pods, expected) in steps {
        let content = content(&pods, 9638);
        assert_eq!(content, expected);
        if file.update(&content).unwrap() {
            writes += 1;
        }
        assert_eq!(fs::read_to_string(&path).unwrap(), expected);
        assert!(fs::read_to_string(&path).unwrap().lines().all(|line| !line.trim().is_empty()));
    }
    // The second step changed nothing, so it wrote nothing.
    assert_eq!(writes, 6);
}

#[test]
fn unchanged_content_is_not_rewritten_even_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("peers");
    let mut file = PeerFile::new(&path);
    assert!(file.update("10.0.0.2\n").unwrap());
    let inode = fs::metadata(&path).unwrap().ino();
    assert!(!file.update("10.0.0.2\n").unwrap());

    let mut restarted = PeerFile::new(&path);
    assert!(!restarted.update("10.0.0.2\n").unwrap());
    assert_eq!(fs::metadata(&path).unwrap().ino(), inode);

    // A change replaces the file (a new inode), it is not rewritten in place.
    assert!(restarted.update("10.0.0.3\n").unwrap());
    assert_ne!(fs::metadata(&path).unwrap().ino(), inode);
    let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|entry| entry.unwrap().file_name()).collect();
    assert_eq!(names, vec!["peers"], "no temporary file left behind");
}

#[test]
fn blank_lines_are_refused_and_leave_the_file_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("peers");
    let mut file = PeerFile::new(&path);
    file.update("10.0.0.2\n").unwrap();
    for bad in ["\n", "10.0.0.2\n\n10.0.0.3\n", "  \n10.0.0.3\n"] {
        assert!(file.update(bad).is_err(), "{bad:?} written");
        assert_eq!(fs::read_to_string(&path).unwrap(), "10.0.0.2\n");
    }
}

#[test]
fn a_reader_never_sees_a_partial_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("peers");
    let contents: Vec<String> = [3, 40]
        .iter()
        .map(|n| (1..=*n).map(|i| format!("10.0.{}.{}\n", i / 250, i % 250 + 1)).collect())
        .collect();
    let mut file = PeerFile::new(&path);
    file.update(&contents[0]).unwrap();

    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (path, done, contents) = (path.clone(), done.clone(), contents.clone());
        std::thread::spawn(move || {
            let mut reads = 0u32;
            while !done.load(Ordering::Relaxed) || reads < 100 {
                let read = fs::read_to_string(&path).expect("the file never disappears");
                assert!(contents.contains(&read), "partial content read: {read:?}");
                reads += 1;
            }
            reads
        })
    };
    for i in 0..200 {
        file.update(&contents[i % 2]).unwrap();
    }
    done.store(true, Ordering::Relaxed);
    assert!(reader.join().unwrap() >= 100);
}

#[test]
fn a_pod_watches_the_first_three_and_powers_of_two_away() {
    let list = |own| watched_ordinals(own).into_iter().collect::<Vec<_>>();
    assert_eq!(list(0)[..6], [1, 2, 4, 8, 16, 32]);
    assert_eq!(list(5)[..8], [0, 1, 2, 3, 4, 6, 7, 9]);
    assert!(!watched_ordinals(700).contains(&700));
    for own in [0, 1, 3, 500, 999, 70_000, u32::MAX] {
        assert!(watched_ordinals(own).len() <= 35, "{own}: {:?}", watched_ordinals(own));
    }
}

#[test]
fn every_joining_pod_has_a_candidate_and_the_fan_out_is_n_log_n() {
    let n = 1000u32;
    // An ordered rollout starts pod i once i-1 runs; a parallel one has pod 0 early.
    for own in 1..n {
        let watched = watched_ordinals(own);
        assert!(watched.contains(&(own - 1)) && watched.contains(&0), "{own}");
    }
    // How many (watcher, watched) pairs a ring of n has: each is one watch event per change.
    let pairs: usize = (0..n).map(|own| watched_ordinals(own).iter().filter(|&&i| i < n).count()).sum();
    // Every pod watching every other: n·(n−1) = 999,000.
    assert_eq!(pairs, 20_918);
}

#[test]
fn the_watch_selector_narrows_the_statefulset_selector_when_the_ordinal_is_known() {
    assert_eq!(watch_selector("app=redis", None), "app=redis");
    assert_eq!(
        watch_selector("app=redis", Some(3)),
        "app=redis,apps.kubernetes.io/pod-index in (0,1,2,4,5,7,11,19,35,67,131,259,515,1027,2051,4099,8195,16387,32771)"
    );
    assert!(watch_selector("", Some(0)).starts_with("apps.kubernetes.io/pod-index in (1,2,4,"));
}
