//! How nodes become members without an operator (the StatefulSet bootstrap, `join.rs`), and
//! leadership hand-over (`handover.rs`): real nodes on loopback.

mod common;

use std::time::Duration;

use common::{TestCluster, consistency, eventually, reason_of};
use quorumid_node::config::RaftSettings;
use quorumid_proto::v1 as pb;

const LINEARIZABLE: pb::ConsistencyLevel = pb::ConsistencyLevel::Linearizable;
/// Nothing listens there: connecting fails at once.
const NOBODY: &str = "http://127.0.0.1:1";

fn role_of(status: &pb::StatusResponse, id: u64) -> Option<pb::MemberRole> {
    status
        .members
        .iter()
        .find(|m| m.node_id == id)
        .and_then(|m| pb::MemberRole::try_from(m.role).ok())
}

fn initialised(cluster: &TestCluster, id: u64) -> bool {
    let metrics = cluster.nodes[&id].raft.metrics().borrow().clone();
    metrics.membership_config.membership().nodes().count() > 0 || metrics.current_term > 0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_uninitialised_node_with_join_addresses_becomes_a_learner_by_itself() {
    let mut cluster = TestCluster::start(3, RaftSettings::default()).await;
    let leader = cluster.wait_for_leader().await;
    let follower = cluster.followers()[0];
    // The first address answers nothing; the second is a follower, which points at the leader.
    let join = vec![NOBODY.to_string(), cluster.api(follower)];
    let new = cluster
        .start_new_node_with(|c| c.membership.join = join)
        .await;

    let mut joining = cluster.nodes[&new].joining.clone();
    tokio::time::timeout(Duration::from_secs(30), joining.wait_for(|p| p.joined))
        .await
        .expect("the node did not join within 30 s")
        .expect("join progress");
    let status = cluster.status(leader).await;
    assert_eq!(role_of(&status, new), Some(pb::MemberRole::Learner));

    // It replicates like any learner.
    let enrolled = cluster.enroll(leader, "join-1", "JOIN0001").await.unwrap();
    cluster.converged(enrolled.log_index).await;
    let answer = cluster
        .verify(new, &enrolled.identity_id, consistency(LINEARIZABLE, 0, 0))
        .await
        .unwrap();
    assert_eq!(answer.status, pb::IdentityStatus::Active as i32);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_seed_pod_initialises_once_resumes_from_its_data_and_never_starts_a_second_cluster() {
    let mut cluster = TestCluster::empty(RaftSettings::default());
    let seed = cluster
        .start_new_node_with(|c| {
            c.membership.seed = true;
            c.membership.pod_index = Some(0);
        })
        .await;
    assert_eq!(cluster.wait_for_leader().await, seed);
    let enrolled = cluster.enroll(seed, "seed-1", "SEED0001").await.unwrap();

    // Restarted with its data, it resumes: initialising again would fail the start.
    cluster.stop(seed).await;
    cluster.restart(seed).await;
    assert_eq!(cluster.wait_for_leader().await, seed);
    let answer = cluster
        .verify(seed, &enrolled.identity_id, consistency(LINEARIZABLE, 0, 0))
        .await
        .unwrap();
    assert_eq!(answer.status, pb::IdentityStatus::Active as i32);

    // A second seed pod 0 without data (say, its volume was lost) whose join address answers
    // for this cluster joins it as a learner instead of initialising its own.
    let join = vec![cluster.api(seed)];
    let second = cluster
        .start_new_node_with(|c| {
            c.membership.seed = true;
            c.membership.pod_index = Some(0);
            c.membership.join = join;
        })
        .await;
    let mut joining = cluster.nodes[&second].joining.clone();
    tokio::time::timeout(Duration::from_secs(30), joining.wait_for(|p| p.joined))
        .await
        .expect("the second seed did not join within 30 s")
        .expect("join progress");
    let status = cluster.status(second).await;
    assert_eq!(status.leader_id, Some(seed));
    assert_eq!(role_of(&status, second), Some(pb::MemberRole::Learner));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_that_is_not_the_seed_never_initialises() {
    let mut cluster = TestCluster::empty(RaftSettings::default());
    // Pod 1 of the seed province, and pod 0 of another province; each can reach the other
    // (uninitialised, so without a leader) and an address where nothing answers.
    let seed_pod_1 = cluster
        .start_new_node_with(|c| {
            c.membership.seed = true;
            c.membership.pod_index = Some(1);
        })
        .await;
    let join = vec![NOBODY.to_string(), cluster.api(seed_pod_1)];
    let other_pod_0 = cluster
        .start_new_node_with(|c| {
            c.membership.pod_index = Some(0);
            c.membership.join = join;
        })
        .await;

    let mut joining = cluster.nodes[&other_pod_0].joining.clone();
    tokio::time::timeout(
        Duration::from_secs(30),
        joining.wait_for(|p| p.attempts >= 6),
    )
    .await
    .expect("the node stopped trying to join")
    .expect("join progress");
    let progress = joining.borrow().clone();
    assert!(!progress.joined);
    assert!(progress.last_error.is_some());
    for id in [seed_pod_1, other_pod_0] {
        assert!(
            !initialised(&cluster, id),
            "node {id} initialised a cluster"
        );
    }
    // Asked to add a learner, the uninitialised node says it knows no leader.
    let refused = cluster
        .cluster(seed_pod_1)
        .await
        .add_learner(pb::AddLearnerRequest {
            node_id: 99,
            province: "ON".into(),
            api_addr: NOBODY.into(),
            raft_addr: NOBODY.into(),
            wait_caught_up: false,
        })
        .await
        .unwrap_err();
    assert_eq!(reason_of(&refused), "NO_LEADER");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transfer_leader_hands_leadership_to_the_named_voter() {
    let cluster = TestCluster::start(3, RaftSettings::default()).await;
    let leader = cluster.wait_for_leader().await;
    let to = *cluster.followers().iter().max().unwrap();
    let enrolled = cluster
        .enroll(leader, "transfer-1", "TRANS001")
        .await
        .unwrap();

    // Only the leader hands over; others point at it.
    let refused = cluster
        .cluster(to)
        .await
        .transfer_leader(pb::TransferLeaderRequest { to_node_id: to })
        .await
        .unwrap_err();
    assert_eq!(reason_of(&refused), "NO_LEADER");
    let refused = cluster
        .cluster(leader)
        .await
        .transfer_leader(pb::TransferLeaderRequest { to_node_id: 42 })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);

    let before = cluster.status(leader).await.term;
    let answer = cluster
        .cluster(leader)
        .await
        .transfer_leader(pb::TransferLeaderRequest { to_node_id: to })
        .await
        .expect("transfer leader")
        .into_inner();
    assert_eq!(answer.leader_id, to);
    assert!(answer.term > before);
    assert_eq!(cluster.wait_for_leader().await, to);

    // Nothing was lost, and the new leader takes writes.
    let answer = cluster
        .verify(to, &enrolled.identity_id, consistency(LINEARIZABLE, 0, 0))
        .await
        .unwrap();
    assert_eq!(answer.status, pb::IdentityStatus::Active as i32);
    let more = cluster.enroll(to, "transfer-2", "TRANS002").await.unwrap();
    cluster.converged(more.log_index).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stopping_leader_of_five_voters_hands_over_while_it_still_runs() {
    let mut cluster = TestCluster::start(5, RaftSettings::default()).await;
    let leader = cluster.wait_for_leader().await;
    let enrolled = cluster.enroll(leader, "stop-1", "STOP0001").await.unwrap();
    cluster.converged(enrolled.log_index).await;

    // What `serve` does on SIGTERM before it stops.
    let new = cluster.nodes[&leader]
        .hand_over()
        .await
        .expect("hand over")
        .expect("a leader hands over");
    assert_ne!(new, leader);
    // The old leader still runs, and follows the new one.
    assert_eq!(cluster.wait_for_leader().await, new);
    eventually("the old leader follows", Duration::from_secs(10), || {
        let state = cluster.nodes[&leader].raft.metrics().borrow().state;
        async move { state == openraft::ServerState::Follower }
    })
    .await;
    // A node that does not lead has nothing to hand over.
    assert_eq!(cluster.nodes[&leader].hand_over().await.unwrap(), None);

    cluster.stop(leader).await;
    let more = cluster.enroll(new, "stop-2", "STOP0002").await.unwrap();
    cluster.converged(more.log_index).await;
    cluster.shutdown().await;
}
