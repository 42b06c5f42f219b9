//! The write path's storage shape: group commit (concurrent writes share log entries, each
//! with its own answer) and history events stored as records of their own.

mod common;

use std::collections::BTreeSet;

use common::{TestCluster, authority, consistency};
use quorumid_node::config::RaftSettings;
use quorumid_proto::v1 as pb;

/// Status changes (enrollments with a face are proposed one at a time, after their de-dup
/// search, so they are not batched).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_share_log_entries_and_each_applies_once() {
    let cluster = TestCluster::start(3, RaftSettings::default()).await;
    let leader = cluster.wait_for_leader().await;
    let mut identities = Vec::new();
    for i in 0..64 {
        let enrolled = cluster
            .enroll(leader, &format!("group-{i}"), &format!("G{i}"))
            .await
            .unwrap();
        identities.push(enrolled.identity_id);
    }

    let calls = identities.iter().enumerate().map(|(i, identity)| {
        let cluster = &cluster;
        async move {
            cluster
                .revoke(leader, &format!("group-revoke-{i}"), identity)
                .await
        }
    });
    let answers: Vec<pb::StatusChangeResponse> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(|answer| answer.expect("every revocation succeeds"))
        .collect();

    let entries: BTreeSet<u64> = answers.iter().map(|a| a.log_index).collect();
    assert!(
        entries.len() < 64,
        "64 concurrent writes took 64 log entries: nothing was batched"
    );

    // Every revocation is on every node, applied once, at the index it was answered with.
    cluster.converged(*entries.last().unwrap()).await;
    for node in [1, 2, 3] {
        let mut registry = cluster.registry(node).await;
        for (identity, answer) in identities.iter().zip(&answers) {
            let record = registry
                .get_record(pb::GetRecordRequest {
                    identity_id: identity.clone(),
                    consistency: Some(consistency(pb::ConsistencyLevel::Local, 0, 0)),
                })
                .await
                .expect("the record is on every node")
                .into_inner();
            assert_eq!(record.status, pb::IdentityStatus::Revoked as i32);
            assert_eq!(record.history.len(), 2);
            assert_eq!(record.history[1].log_index, answer.log_index);
        }
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_long_history_reads_back_whole_and_in_order() {
    let cluster = TestCluster::start(3, RaftSettings::default()).await;
    let leader = cluster.wait_for_leader().await;
    let identity = cluster
        .enroll(leader, "long-history", "L1")
        .await
        .unwrap()
        .identity_id;

    // 300 status changes: more than 256, so event numbers need more than one byte.
    let mut indexes = Vec::new();
    for n in 0..300 {
        let change = pb::StatusChangeRequest {
            request_id: format!("long-{n}"),
            identity_id: identity.clone(),
            reason: if n % 2 == 0 {
                pb::ReasonCode::UnderInvestigation
            } else {
                pb::ReasonCode::IssueResolved
            } as i32,
            authority: Some(authority("ON")),
        };
        let mut registry = cluster.registry(leader).await;
        let answer = if n % 2 == 0 {
            registry.suspend(change).await
        } else {
            registry.reinstate(change).await
        };
        indexes.push(answer.unwrap().into_inner().log_index);
    }

    let record = cluster
        .registry(leader)
        .await
        .get_record(pb::GetRecordRequest {
            identity_id: identity.clone(),
            consistency: Some(consistency(pb::ConsistencyLevel::Linearizable, 0, 0)),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(record.history.len(), 301);
    assert_eq!(
        record.history[0].kind,
        pb::history_event::Kind::Enrolled as i32
    );
    for (n, event) in record.history[1..].iter().enumerate() {
        let kind = if n % 2 == 0 {
            pb::history_event::Kind::Suspended
        } else {
            pb::history_event::Kind::Reinstated
        };
        assert_eq!(event.kind, kind as i32, "event {}", n + 1);
        assert_eq!(event.log_index, indexes[n], "event {}", n + 1);
    }
    assert_eq!(record.status, pb::IdentityStatus::Active as i32);
    cluster.shutdown().await;
}
