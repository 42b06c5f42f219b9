//! The public API's contract: idempotent writes, precise errors for bad input (and nothing
//! stored changes), records without templates, pseudonyms, health and reflection.

mod common;

use common::{TestCluster, authority, consistency, enroll_request, reason_of};
use quorumid_node::config::RaftSettings;
use quorumid_proto::v1 as pb;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_request_id_applies_once_and_returns_the_first_result() {
    let cluster = TestCluster::start(3, RaftSettings::default()).await;
    let leader = cluster.wait_for_leader().await;
    let follower = cluster.followers()[0];

    let first = cluster.enroll(leader, "same-id", "P100").await.unwrap();
    let again = cluster.enroll(leader, "same-id", "P100").await.unwrap();
    let elsewhere = cluster.enroll(follower, "same-id", "P100").await.unwrap();
    assert_eq!(first, again);
    assert_eq!(first, elsewhere);

    let revoke = cluster
        .revoke(follower, "rev-1", &first.identity_id)
        .await
        .unwrap();
    let revoke_again = cluster
        .revoke(leader, "rev-1", &first.identity_id)
        .await
        .unwrap();
    assert_eq!(revoke, revoke_again);

    let record = cluster
        .registry(follower)
        .await
        .get_record(pb::GetRecordRequest {
            identity_id: first.identity_id.clone(),
            consistency: Some(consistency(pb::ConsistencyLevel::Linearizable, 0, 0)),
        })
        .await
        .unwrap()
        .into_inner();
    let kinds: Vec<i32> = record.history.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            pb::history_event::Kind::Enrolled as i32,
            pb::history_event::Kind::Revoked as i32
        ],
        "each request applied exactly once"
    );
    assert_eq!(record.history[1].log_index, revoke.log_index);
    assert_eq!(
        record.templates.len(),
        1,
        "the record lists template formats only"
    );

    // The same id for a different request is refused, and changes nothing.
    let reused = cluster.enroll(leader, "same-id", "P999").await.unwrap_err();
    assert_eq!(reused.code(), Code::AlreadyExists);
    assert_eq!(reason_of(&reused), "REQUEST_ID_REUSED");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_document_one_identity_even_written_differently() {
    let cluster = TestCluster::start(3, RaftSettings::default()).await;
    let leader = cluster.wait_for_leader().await;
    cluster.enroll(leader, "a", "AB 123-456").await.unwrap();
    let dup = cluster
        .enroll(cluster.followers()[0], "b", "ab123456")
        .await
        .unwrap_err();
    assert_eq!(dup.code(), Code::AlreadyExists);
    assert_eq!(reason_of(&dup), "DUPLICATE_DOCUMENT");
    assert!(
        !dup.message().contains("AB123456"),
        "no document number in errors"
    );
    cluster.shutdown().await;
}

/// Asserts a call failed with `code` and a message that mentions `needle`.
fn expect<T: std::fmt::Debug>(
    result: Result<tonic::Response<T>, tonic::Status>,
    code: Code,
    needle: &str,
) {
    let status = result.expect_err("bad input must fail");
    assert_eq!(status.code(), code, "{}", status.message());
    assert!(
        status.message().contains(needle),
        "message {:?} should mention {needle:?}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_gets_a_precise_status_and_changes_nothing() {
    let cluster = TestCluster::start(3, RaftSettings::default()).await;
    let leader = cluster.wait_for_leader().await;
    let follower = cluster.followers()[0];
    let enrolled = cluster.enroll(leader, "good", "GOOD1").await.unwrap();
    let id = enrolled.identity_id.clone();
    let before = cluster.converged(enrolled.log_index).await;

    let mut registry = cluster.registry(follower).await;

    // Malformed and mistyped identity ids.
    let mut typo = id.clone().into_bytes();
    typo[3] = if typo[3] == b'A' { b'B' } else { b'A' };
    let typo = String::from_utf8(typo).unwrap();
    for (bad, needle) in [
        ("", "17 characters"),
        ("NOT-AN-ID", "17 characters"),
        (typo.as_str(), "check character"),
    ] {
        expect(
            cluster
                .verifier(follower)
                .await
                .verify(pb::VerifyRequest {
                    identity_id: bad.into(),
                    platform_id: "p".into(),
                    consistency: None,
                    probe: None,
                    holder: None,
                })
                .await,
            Code::InvalidArgument,
            needle,
        );
    }
    // Oversized and too many templates.
    let mut big = enroll_request("big", "ON", "BIG1");
    big.templates[0].data = vec![1; 64 * 1024 + 1];
    expect(
        registry.enroll(big).await,
        Code::InvalidArgument,
        "templates[0].data",
    );
    let mut many = enroll_request("many", "ON", "MANY1");
    many.templates = vec![many.templates[0].clone(); 9];
    expect(
        registry.enroll(many).await,
        Code::InvalidArgument,
        "at most 8 templates",
    );
    // A message past the service's size limit (4 MiB: room for a few face photographs).
    let mut huge = enroll_request("huge", "ON", "HUGE1");
    huge.templates = vec![huge.templates[0].clone(); 8];
    for t in &mut huge.templates {
        t.data = vec![1; 600 * 1024];
    }
    let status = registry.enroll(huge).await.unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{}", status.message());
    // Unknown enum values.
    let mut format = enroll_request("fmt", "ON", "FMT1");
    format.templates[0].format = 77;
    expect(registry.enroll(format).await, Code::InvalidArgument, "77");
    expect(
        cluster
            .verifier(follower)
            .await
            .verify(pb::VerifyRequest {
                identity_id: id.clone(),
                platform_id: "p".into(),
                consistency: Some(pb::ReadConsistency {
                    level: 99,
                    ..Default::default()
                }),
                probe: None,
                holder: None,
            })
            .await,
        Code::InvalidArgument,
        "99",
    );
    let change = |reason: i32, identity: &str| pb::StatusChangeRequest {
        request_id: format!("bad-{reason}"),
        identity_id: identity.into(),
        reason,
        authority: Some(authority("ON")),
    };
    expect(
        registry.revoke(change(1234, &id)).await,
        Code::InvalidArgument,
        "1234",
    );
    expect(
        registry.revoke(change(0, &id)).await,
        Code::InvalidArgument,
        "reason is required",
    );
    // Missing authority, bad province, bad request id.
    let mut no_authority = enroll_request("na", "ON", "NA1");
    no_authority.authority = None;
    expect(
        registry.enroll(no_authority).await,
        Code::InvalidArgument,
        "authority is required",
    );
    expect(
        registry.enroll(enroll_request("p", "ontario", "P1")).await,
        Code::InvalidArgument,
        "home_province",
    );
    expect(
        registry.enroll(enroll_request("bad id!", "ON", "P2")).await,
        Code::InvalidArgument,
        "request_id",
    );
    // Domain rejections, decided by the state machine.
    let ghost = quorumid_node::registry::IdentityId::from_random([42; 10]).to_string();
    let unknown = registry.revoke(change(5, &ghost)).await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    assert_eq!(reason_of(&unknown), "UNKNOWN_IDENTITY");
    let mut other_province = change(5, &id);
    other_province.request_id = "qc".into();
    other_province.authority = Some(authority("QC"));
    let scope = registry.revoke(other_province).await.unwrap_err();
    assert_eq!(scope.code(), Code::PermissionDenied);
    assert_eq!(reason_of(&scope), "OUT_OF_SCOPE");
    let mut reinstate = change(10, &id);
    reinstate.request_id = "reinstate-active".into();
    let transition = registry.reinstate(reinstate).await.unwrap_err();
    assert_eq!(transition.code(), Code::FailedPrecondition);
    assert!(
        transition
            .message()
            .contains("cannot reinstate an identity that is active")
    );

    // A verify of an unknown id is an answer, not an error, and carries no pseudonym.
    let v = cluster
        .verify(
            follower,
            &ghost,
            consistency(pb::ConsistencyLevel::Linearizable, 0, 0),
        )
        .await
        .unwrap();
    assert_eq!(v.status, pb::IdentityStatus::Unknown as i32);
    assert!(v.pseudonym.is_empty());

    // Rejected writes are remembered under their request id, but the registry is as it was:
    // the identity is still active with one history event.
    let record = registry
        .get_record(pb::GetRecordRequest {
            identity_id: id.clone(),
            consistency: Some(consistency(pb::ConsistencyLevel::Linearizable, 0, 0)),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(record.status, pb::IdentityStatus::Active as i32);
    assert_eq!(record.history.len(), 1);
    let after = cluster.status(leader).await;
    cluster.converged(after.applied_index).await;
    assert_ne!(
        before, after.state_digest,
        "refusals decided by apply are recorded for retries"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn input_rejected_at_the_api_never_reaches_the_log() {
    let cluster = TestCluster::start(3, RaftSettings::default()).await;
    let leader = cluster.wait_for_leader().await;
    let e = cluster.enroll(leader, "x", "X1").await.unwrap();
    cluster.converged(e.log_index).await;
    let before = cluster.status(leader).await;
    let mut registry = cluster.registry(leader).await;
    for _ in 0..5 {
        let mut bad = enroll_request("y", "ON", "Y1");
        bad.templates[0].format = 0;
        assert!(registry.enroll(bad).await.is_err());
        assert!(
            registry
                .enroll(enroll_request("", "ON", "Y2"))
                .await
                .is_err()
        );
    }
    let after = cluster.status(leader).await;
    assert_eq!(before.last_log_index, after.last_log_index);
    assert_eq!(before.state_digest, after.state_digest);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pseudonyms_are_per_platform_and_the_same_on_every_node() {
    let cluster = TestCluster::start(3, RaftSettings::default()).await;
    let leader = cluster.wait_for_leader().await;
    let e = cluster.enroll(leader, "e", "PS1").await.unwrap();
    let ask = |node: u64, platform: &'static str| {
        let cluster = &cluster;
        let id = e.identity_id.clone();
        async move {
            cluster
                .verifier(node)
                .await
                .verify(pb::VerifyRequest {
                    identity_id: id,
                    platform_id: platform.into(),
                    consistency: Some(consistency(pb::ConsistencyLevel::Linearizable, 0, 0)),
                    probe: None,
                    holder: None,
                })
                .await
                .unwrap()
                .into_inner()
                .pseudonym
        }
    };
    let bank = ask(1, "bank.example").await;
    assert_eq!(bank.len(), 32);
    assert_eq!(bank, ask(2, "bank.example").await);
    assert_eq!(bank, ask(3, "bank.example").await);
    assert_ne!(bank, ask(1, "shop.example").await);
    assert!(!bank.contains(&e.identity_id));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_follows_the_node_and_reflection_lists_the_services() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    let cluster = TestCluster::start(3, RaftSettings::default()).await;
    let follower = cluster.followers()[0];
    let channel =
        tonic::transport::Channel::from_shared(cluster.configs[&follower].api_addr.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
    let health = HealthClient::new(channel.clone());
    let check = |svc: &str| HealthCheckRequest {
        service: svc.into(),
    };
    common::eventually(
        "follower SERVING",
        std::time::Duration::from_secs(10),
        || {
            let mut health = health.clone();
            async move {
                health
                    .check(check("quorumid.v1.Verifier"))
                    .await
                    .is_ok_and(|r| r.into_inner().status == ServingStatus::Serving as i32)
            }
        },
    )
    .await;
    cluster.isolate(follower);
    common::eventually(
        "cut-off follower NOT_SERVING",
        std::time::Duration::from_secs(10),
        || {
            let mut health = health.clone();
            async move {
                health
                    .check(check(""))
                    .await
                    .is_ok_and(|r| r.into_inner().status == ServingStatus::NotServing as i32)
            }
        },
    )
    .await;
    cluster.heal_all();

    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("expected a service list");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for wanted in [
        "quorumid.v1.Registry",
        "quorumid.v1.Verifier",
        "quorumid.v1.Cluster",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == wanted),
            "{wanted} missing from {names:?}"
        );
    }
    assert!(
        !names.iter().any(|n| n == "quorumid.v1.Raft"),
        "the Raft service is not on the API port"
    );
    cluster.shutdown().await;
}
