//! Read consistency levels under a cut-off follower, and revocation freshness.

mod common;

use std::time::{Duration, Instant};

use common::{TestCluster, consistency, eventually, reason_of};
use pb::ConsistencyLevel::{AtLeast, Bounded, Linearizable, Local};
use quorumid_node::config::RaftSettings;
use quorumid_proto::v1 as pb;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cut_off_follower_refuses_fresh_reads_and_states_its_staleness() {
    let cluster = TestCluster::start(3, RaftSettings::default()).await;
    let leader = cluster.wait_for_leader().await;
    let enrolled = cluster.enroll(leader, "e1", "DOC1").await.unwrap();
    let id = enrolled.identity_id;
    cluster.converged(enrolled.log_index).await;
    let follower = cluster.followers()[0];

    // Fresh reads work before the cut.
    let fresh = cluster
        .verify(follower, &id, consistency(Bounded, 300, 0))
        .await
        .unwrap();
    assert_eq!(fresh.status, pb::IdentityStatus::Active as i32);
    assert!(fresh.facts.unwrap().staleness_bound_ms.unwrap() <= 300);

    cluster.isolate(follower);
    let cut_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Past the bound, BOUNDED and LINEARIZABLE fail with STALE instead of answering.
    let bounded = cluster
        .verify(follower, &id, consistency(Bounded, 300, 0))
        .await
        .unwrap_err();
    assert_eq!(bounded.code(), tonic::Code::Unavailable);
    assert_eq!(reason_of(&bounded), "STALE", "{}", bounded.message());
    let linearizable = cluster
        .verify(follower, &id, consistency(Linearizable, 0, 0))
        .await
        .unwrap_err();
    assert_eq!(linearizable.code(), tonic::Code::Unavailable);
    assert_eq!(
        reason_of(&linearizable),
        "STALE",
        "{}",
        linearizable.message()
    );

    // The leader side revokes meanwhile; the revocation is acknowledged.
    let revoked = cluster.revoke(leader, "r1", &id).await.unwrap();
    for node in cluster.nodes.keys().filter(|n| **n != follower) {
        let v = cluster
            .verify(*node, &id, consistency(Linearizable, 0, 0))
            .await
            .unwrap();
        assert_eq!(v.status, pb::IdentityStatus::Revoked as i32, "node {node}");
    }

    // LOCAL still answers, and says how stale it may be: a bound that grows with the cut.
    let first = cluster
        .verify(follower, &id, consistency(Local, 0, 0))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = cluster
        .verify(follower, &id, consistency(Local, 0, 0))
        .await
        .unwrap();
    let s1 = first
        .facts
        .unwrap()
        .staleness_bound_ms
        .expect("proven before the cut");
    let s2 = second.facts.unwrap().staleness_bound_ms.unwrap();
    assert!(s2 >= s1 + 250, "staleness grows: {s1} then {s2}");
    assert!(
        s2 as u128 >= cut_at.elapsed().as_millis() - 150,
        "bound covers the cut: {s2}"
    );
    assert_eq!(
        second.status,
        pb::IdentityStatus::Active as i32,
        "local view predates the revoke"
    );

    // AT_LEAST the revocation's index waits, then fails: never an older answer.
    let behind = cluster
        .verify(follower, &id, consistency(AtLeast, 0, revoked.log_index))
        .await
        .unwrap_err();
    assert_eq!(reason_of(&behind), "BEHIND", "{}", behind.message());

    // Healed, the follower catches up and serves fresh reads again.
    cluster.heal_all();
    let caught_up = cluster
        .verify(follower, &id, consistency(AtLeast, 0, revoked.log_index))
        .await
        .unwrap();
    assert_eq!(caught_up.status, pb::IdentityStatus::Revoked as i32);
    eventually("bounded reads work again", Duration::from_secs(10), || {
        let cluster = &cluster;
        let id = id.clone();
        async move {
            cluster
                .verify(follower, &id, consistency(Bounded, 300, 0))
                .await
                .is_ok()
        }
    })
    .await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_linearizable_read_shows_active_after_an_acknowledged_revoke() {
    let cluster = TestCluster::start(3, RaftSettings::default()).await;
    let nodes: Vec<u64> = cluster.nodes.keys().copied().collect();
    let mut ids = Vec::new();
    for i in 0..9 {
        let e = cluster
            .enroll(nodes[i % 3], &format!("e{i}"), &format!("DOC{i}"))
            .await
            .unwrap();
        ids.push(e.identity_id);
    }
    for (i, id) in ids.iter().enumerate() {
        // Revoke through any node; the instant it is acknowledged, ask every node.
        cluster
            .revoke(nodes[i % 3], &format!("r{i}"), id)
            .await
            .unwrap();
        for node in &nodes {
            let v = cluster
                .verify(*node, id, consistency(Linearizable, 0, 0))
                .await
                .unwrap();
            assert_eq!(
                v.status,
                pb::IdentityStatus::Revoked as i32,
                "node {node} id #{i}"
            );
        }
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn at_least_waits_for_the_index_or_fails_never_older() {
    let cluster = TestCluster::start(3, RaftSettings::default()).await;
    let leader = cluster.wait_for_leader().await;
    let follower = cluster.followers()[0];
    let e = cluster.enroll(leader, "e", "DOC").await.unwrap();

    // An index the cluster has not reached: the node waits, then says it is behind.
    let future = e.log_index + 1_000;
    let started = Instant::now();
    let err = cluster
        .verify(follower, &e.identity_id, consistency(AtLeast, 0, future))
        .await
        .unwrap_err();
    assert_eq!(reason_of(&err), "BEHIND");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "it waited before failing"
    );

    // Read-your-writes across nodes: revoke at the leader, read at the follower.
    let r = cluster.revoke(leader, "r", &e.identity_id).await.unwrap();
    let v = cluster
        .verify(
            follower,
            &e.identity_id,
            consistency(AtLeast, 0, r.log_index),
        )
        .await
        .unwrap();
    assert_eq!(v.status, pb::IdentityStatus::Revoked as i32);
    assert!(v.facts.unwrap().applied_index >= r.log_index);
    cluster.shutdown().await;
}
