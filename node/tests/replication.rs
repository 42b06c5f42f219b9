//! Replication across real nodes on loopback: failover, catch-up after restart, snapshots
//! for new learners, and membership changes under load.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{TestCluster, consistency, eventually};
use quorumid_node::config::RaftSettings;
use quorumid_proto::v1 as pb;

const LINEARIZABLE: pb::ConsistencyLevel = pb::ConsistencyLevel::Linearizable;

/// Enrolls `count` identities through the given nodes in turn; returns id -> log index.
async fn enroll_many(
    cluster: &TestCluster,
    through: &[u64],
    prefix: &str,
    count: usize,
) -> BTreeMap<String, u64> {
    let mut enrolled = BTreeMap::new();
    for i in 0..count {
        let at = through[i % through.len()];
        let answer = cluster
            .enroll(at, &format!("{prefix}-{i}"), &format!("{prefix}DOC{i}"))
            .await
            .unwrap_or_else(|e| panic!("enroll {prefix}-{i} via node {at}: {e}"));
        enrolled.insert(answer.identity_id, answer.log_index);
    }
    enrolled
}

async fn assert_active_everywhere(cluster: &TestCluster, ids: &BTreeMap<String, u64>) {
    for node in cluster.nodes.keys() {
        for id in ids.keys() {
            let answer = cluster
                .verify(*node, id, consistency(LINEARIZABLE, 0, 0))
                .await
                .unwrap_or_else(|e| panic!("verify at node {node}: {e}"));
            assert_eq!(
                answer.status,
                pb::IdentityStatus::Active as i32,
                "identity enrolled and acknowledged, but node {node} does not have it"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_survive_leader_loss_and_a_restarted_node_catches_up() {
    let mut cluster = TestCluster::start(3, RaftSettings::default()).await;
    let all: Vec<u64> = cluster.nodes.keys().copied().collect();

    // Writes through every node (followers forward to the leader).
    let mut acknowledged = enroll_many(&cluster, &all, "first", 12).await;
    let last = *acknowledged.values().max().unwrap();
    let digest_before = cluster.converged(last).await;
    assert!(!digest_before.is_empty());

    // The leader goes away; the other two elect a new one and keep taking writes.
    let old_leader = cluster.wait_for_leader().await;
    cluster.stop(old_leader).await;
    let new_leader = cluster.wait_for_leader().await;
    assert_ne!(new_leader, old_leader);
    let survivors: Vec<u64> = cluster.nodes.keys().copied().collect();
    acknowledged.extend(enroll_many(&cluster, &survivors, "second", 8).await);
    assert_active_everywhere(&cluster, &acknowledged).await;

    // The old leader restarts from its data directory and catches up.
    cluster.restart(old_leader).await;
    let last = *acknowledged.values().max().unwrap();
    cluster.converged(last).await;
    for id in acknowledged.keys() {
        let answer = cluster
            .verify(
                old_leader,
                id,
                consistency(pb::ConsistencyLevel::AtLeast, 0, last),
            )
            .await
            .expect("restarted node answers once it has applied the index");
        assert_eq!(answer.status, pb::IdentityStatus::Active as i32);
        assert!(answer.facts.unwrap().applied_index >= last);
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_learner_added_after_purge_converges_through_a_snapshot() {
    let settings = RaftSettings {
        snapshot_after_entries: 20,
        keep_entries_after_snapshot: 0,
        ..RaftSettings::default()
    };
    let mut cluster = TestCluster::start(3, settings).await;
    let leader = cluster.wait_for_leader().await;
    let enrolled = enroll_many(&cluster, &[leader], "early", 45).await;
    let last = *enrolled.values().max().unwrap();
    eventually(
        "the leader purged its log behind a snapshot",
        Duration::from_secs(20),
        || {
            let cluster = &cluster;
            async move { cluster.status(leader).await.purged_index > 0 }
        },
    )
    .await;

    let learner = cluster.start_new_node().await;
    let started = std::time::Instant::now();
    cluster.add_learner(leader, learner).await;
    let digest = cluster.converged(last).await;
    eprintln!(
        "learner converged in {:?} (digest {digest})",
        started.elapsed()
    );

    let status = cluster.status(learner).await;
    assert_eq!(status.role, pb::NodeRole::Learner as i32);
    assert!(
        status.snapshot_index > 0,
        "the learner could only have caught up from a snapshot, the log was purged"
    );
    let early = enrolled.keys().next().unwrap();
    let answer = cluster
        .verify(
            learner,
            early,
            consistency(pb::ConsistencyLevel::Local, 0, 0),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, pb::IdentityStatus::Active as i32);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn promote_a_learner_and_remove_a_voter_under_load() {
    let mut cluster = TestCluster::start(3, RaftSettings::default()).await;
    let leader = cluster.wait_for_leader().await;

    // A bounded write load through the leader for the whole membership change.
    let stop = Arc::new(AtomicBool::new(false));
    let mut client = cluster.registry(leader).await;
    let load_stop = stop.clone();
    let load = tokio::spawn(async move {
        let mut acknowledged = Vec::new();
        for i in 0..2_000 {
            if load_stop.load(Ordering::Relaxed) {
                break;
            }
            let request = common::enroll_request(&format!("load-{i}"), "ON", &format!("LOAD{i}"));
            let answer = tokio::time::timeout(Duration::from_secs(5), client.enroll(request)).await;
            if let Ok(Ok(answer)) = answer {
                acknowledged.push(answer.into_inner().identity_id);
            }
        }
        acknowledged
    });

    let learner = cluster.start_new_node().await;
    cluster.add_learner(leader, learner).await;
    let mut admin = cluster.cluster(leader).await;
    use pb::change_membership_request::Change;
    admin
        .change_membership(pb::ChangeMembershipRequest {
            change: Some(Change::Promote(pb::NodeIds { ids: vec![learner] })),
        })
        .await
        .expect("promote");
    let removed = *cluster
        .followers()
        .iter()
        .find(|id| **id != learner)
        .expect("a follower voter");
    let changed = admin
        .change_membership(pb::ChangeMembershipRequest {
            change: Some(Change::Remove(pb::NodeIds { ids: vec![removed] })),
        })
        .await
        .expect("remove voter")
        .into_inner();
    let members: BTreeMap<u64, i32> = changed
        .members
        .iter()
        .map(|m| (m.node_id, m.role))
        .collect();
    assert_eq!(members.get(&learner), Some(&(pb::MemberRole::Voter as i32)));
    assert!(!members.contains_key(&removed));

    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let acknowledged = load.await.unwrap();
    assert!(
        acknowledged.len() > 10,
        "the load made progress: {}",
        acknowledged.len()
    );
    cluster.stop(removed).await;

    let status = cluster.status(leader).await;
    cluster.converged(status.applied_index).await;
    for node in cluster.nodes.keys() {
        for id in &acknowledged {
            let answer = cluster
                .verify(
                    *node,
                    id,
                    consistency(pb::ConsistencyLevel::AtLeast, 0, status.applied_index),
                )
                .await
                .unwrap();
            assert_eq!(
                answer.status,
                pb::IdentityStatus::Active as i32,
                "node {node} lost {id}"
            );
        }
    }
    cluster.shutdown().await;
}
