//! 1:1 biometric verification through the API, on real data from `../shared/data`: ORL face
//! embeddings (SFace) and FVC2002 fingerprint minutiae records.

mod common;

use std::path::{Path, PathBuf};

use common::{TestCluster, authority, face_template, reason_of};
use quorumid_node::config::RaftSettings;
use quorumid_proto::v1 as pb;

fn shared() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data")
}

/// The ORL embedding of `subject`'s image `image`.
fn orl(subject: u64, image: u64) -> Vec<f32> {
    let text = std::fs::read_to_string(shared().join("faces/orl-sface.jsonl")).unwrap();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if v["subject"] == subject && v["image"] == image {
            return v["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect();
        }
    }
    panic!("no ORL embedding for subject {subject} image {image}");
}

fn fingerprint(name: &str) -> pb::Template {
    pb::Template {
        format: pb::TemplateFormat::Iso1979422005 as i32,
        model_id: "secugen".into(),
        data: std::fs::read(shared().join("fvc2002/DB4_B").join(name)).unwrap(),
    }
}

async fn verify_with(
    cluster: &TestCluster,
    id: &str,
    probe: pb::Template,
) -> Result<pb::VerifyResponse, tonic::Status> {
    cluster.verify_probe(2, id, probe).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn probes_match_the_claimed_identity_only() {
    let cluster = TestCluster::start(3, RaftSettings::default()).await;
    let mut request = common::enroll_request("bio", "ON", "BIO1");
    request.templates = vec![face_template(&orl(1, 1)), fingerprint("101_1.iso")];
    let enrolled = cluster
        .registry(1)
        .await
        .enroll(request)
        .await
        .unwrap()
        .into_inner();
    let id = enrolled.identity_id;

    let matched = |r: pb::VerifyResponse| r.probe.expect("a probe result").matched;
    // Same person, another image / impression: a match.
    assert!(matched(
        verify_with(&cluster, &id, face_template(&orl(1, 2)))
            .await
            .unwrap()
    ));
    assert!(matched(
        verify_with(&cluster, &id, fingerprint("101_2.iso"))
            .await
            .unwrap()
    ));
    // Another person: no match.
    assert!(!matched(
        verify_with(&cluster, &id, face_template(&orl(2, 1)))
            .await
            .unwrap()
    ));
    assert!(!matched(
        verify_with(&cluster, &id, fingerprint("102_1.iso"))
            .await
            .unwrap()
    ));

    // A face from another model is never compared.
    let mut other_model = face_template(&orl(1, 2));
    other_model.model_id = "arcface".into();
    let err = verify_with(&cluster, &id, other_model).await.unwrap_err();
    assert_eq!(reason_of(&err), "NO_TEMPLATE", "{}", err.message());

    // A revoked identity gets no probe result at all: it does not verify.
    cluster
        .registry(1)
        .await
        .revoke(pb::StatusChangeRequest {
            request_id: "rev".into(),
            identity_id: id.clone(),
            reason: pb::ReasonCode::Fraud as i32,
            authority: Some(authority("ON")),
        })
        .await
        .unwrap();
    let answer = verify_with(&cluster, &id, face_template(&orl(1, 2)))
        .await
        .unwrap();
    assert_eq!(answer.status, pb::IdentityStatus::Revoked as i32);
    assert!(answer.probe.is_none());
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_templates_are_refused_at_enrollment() {
    let cluster = TestCluster::start(3, RaftSettings::default()).await;
    let mut registry = cluster.registry(1).await;
    let mut zero_face = common::enroll_request("z", "ON", "Z1");
    zero_face.templates = vec![face_template(&[0.0; 128])];
    let err = registry.enroll(zero_face).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("templates[0]"), "{}", err.message());

    let mut truncated = common::enroll_request("t", "ON", "T1");
    let mut record = fingerprint("101_1.iso");
    record.data.truncate(record.data.len() - 3);
    truncated.templates = vec![record];
    let err = registry.enroll(truncated).await.unwrap_err();
    assert_eq!(
        err.code(),
        tonic::Code::InvalidArgument,
        "{}",
        err.message()
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_identity_with_an_enrolled_face_is_refused_by_any_leader() {
    let mut cluster = TestCluster::start(3, RaftSettings::default()).await;
    let enroll = |request_id: &'static str, document: &'static str, face: Vec<f32>| {
        let mut request = common::enroll_request(request_id, "ON", document);
        request.templates = vec![face_template(&face)];
        request
    };
    let mut registry = cluster.registry(1).await;
    registry
        .enroll(enroll("a", "DOC-A", orl(1, 1)))
        .await
        .expect("first enrollment");
    // The same person with another document: refused, and the rule is named.
    let err = registry
        .enroll(enroll("b", "DOC-B", orl(1, 2)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::AlreadyExists);
    assert_eq!(reason_of(&err), "DUPLICATE_BIOMETRIC", "{}", err.message());
    // Another person: accepted.
    registry
        .enroll(enroll("c", "DOC-C", orl(2, 1)))
        .await
        .expect("another person");

    // Every node keeps the face index: a new leader refuses the same person too, and so
    // does one whose index was rebuilt from its data at restart.
    let first_leader = cluster.wait_for_leader().await;
    cluster.stop(first_leader).await;
    let second_leader = cluster.wait_for_leader().await;
    let err = cluster
        .registry(second_leader)
        .await
        .enroll(enroll("d", "DOC-D", orl(1, 3)))
        .await
        .unwrap_err();
    assert_eq!(reason_of(&err), "DUPLICATE_BIOMETRIC");
    cluster.restart(first_leader).await;
    cluster.wait_for_leader().await;
    let status = cluster.status(second_leader).await;
    cluster.converged(status.applied_index).await;
    for node in cluster.nodes.values() {
        assert_eq!(
            node.ctx.biometrics.index.faces(),
            2,
            "node {} indexes both faces",
            node.id
        );
    }
    cluster.stop(second_leader).await;
    let third_leader = cluster.wait_for_leader().await;
    let err = cluster
        .registry(third_leader)
        .await
        .enroll(enroll("e", "DOC-E", orl(1, 4)))
        .await
        .unwrap_err();
    assert_eq!(reason_of(&err), "DUPLICATE_BIOMETRIC");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_identity_with_an_enrolled_finger_is_refused_even_in_the_same_batch() {
    let mut cluster = TestCluster::start(3, RaftSettings::default()).await;
    let enroll = |request_id: &str, document: &str, fingers: &[&str]| {
        let mut request = common::enroll_request(request_id, "ON", document);
        request.templates = fingers.iter().map(|f| fingerprint(f)).collect();
        request
    };
    let mut registry = cluster.registry(1).await;
    registry
        .enroll(enroll("a", "DOC-A", &["101_1.iso", "104_1.iso"]))
        .await
        .expect("first enrollment");
    // Another impression of an enrolled finger, beside a new finger: refused, and the rule
    // is named. (DB4 101_1 against 101_2 scores 0.099; the de-dup threshold is 0.037.)
    let err = registry
        .enroll(enroll("b", "DOC-B", &["105_1.iso", "101_2.iso"]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::AlreadyExists);
    assert_eq!(reason_of(&err), "DUPLICATE_BIOMETRIC", "{}", err.message());
    assert!(err.message().contains("fingerprint"), "{}", err.message());
    // Another finger: accepted. The same request again: answered with its first result.
    let c = enroll("c", "DOC-C", &["102_1.iso"]);
    let first = registry.enroll(c.clone()).await.expect("another finger");
    let again = registry
        .enroll(c)
        .await
        .expect("a retry is not a duplicate");
    assert_eq!(
        first.into_inner().identity_id,
        again.into_inner().identity_id
    );

    // Two enrollments of one finger at once, through all three nodes: the leader searches
    // them together, each against the other too, and admits one.
    let mut calls = Vec::new();
    // (103_1 against 103_2 scores 0.448.)
    for (n, impression) in ["103_1.iso", "103_2.iso"].iter().enumerate() {
        let mut registry = cluster.registry(n as u64 + 1).await;
        let request = enroll(&format!("d{n}"), &format!("DOC-D{n}"), &[impression]);
        calls.push(tokio::spawn(async move { registry.enroll(request).await }));
    }
    let mut admitted = 0;
    for call in calls {
        match call.await.unwrap() {
            Ok(_) => admitted += 1,
            Err(e) => assert_eq!(reason_of(&e), "DUPLICATE_BIOMETRIC", "{}", e.message()),
        }
    }
    assert_eq!(admitted, 1);

    // Every node indexes every enrolled finger view (2 + 1 + 1), also after a restart,
    // and a new leader refuses the same finger.
    let leader = cluster.wait_for_leader().await;
    cluster.stop(leader).await;
    let next = cluster.wait_for_leader().await;
    let err = cluster
        .registry(next)
        .await
        .enroll(enroll("e", "DOC-E", &["104_7.iso"]))
        .await
        .unwrap_err();
    assert_eq!(reason_of(&err), "DUPLICATE_BIOMETRIC", "{}", err.message());
    cluster.restart(leader).await;
    cluster.wait_for_leader().await;
    let status = cluster.status(next).await;
    cluster.converged(status.applied_index).await;
    for node in cluster.nodes.values() {
        assert_eq!(node.ctx.biometrics.index.fingers(), 4, "node {}", node.id);
    }
    cluster.shutdown().await;
}
