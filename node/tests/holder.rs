//! The holder's credential on a mutual-TLS cluster: a device key (Ed25519) bound at
//! enrollment answers platforms' challenges; the holder locks a modality and reads their own
//! history with it; a registrar binds a new key after a loss, and the old one stops working;
//! the holder rotates their key themselves.

mod common;

use common::{TestCluster, consistency, enroll_request, face_template, reason_of};
use ed25519_dalek::{Signer, SigningKey};
use quorumid_node::config::RaftSettings;
use quorumid_node::security::holder;
use quorumid_proto::v1 as pb;
use quorumid_proto::v1::holder_client::HolderClient;
use quorumid_proto::v1::registry_client::RegistryClient;
use quorumid_proto::v1::verifier_client::VerifierClient;
use tonic::Code;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn proof(device: &SigningKey, purpose: &str, fields: &[&[u8]], at: u64) -> pb::HolderProof {
    let message = holder::message(purpose, fields, at);
    pb::HolderProof {
        at_unix_ms: at,
        signature: device.sign(&message).to_bytes().to_vec(),
    }
}

/// A platform's challenge for `platform`, signed by `device` at `at`.
fn challenge(device: &SigningKey, platform: &str, nonce: &[u8], at: u64) -> pb::HolderChallenge {
    pb::HolderChallenge {
        nonce: nonce.to_vec(),
        proof: Some(proof(device, "verify", &[platform.as_bytes(), nonce], at)),
    }
}

fn verify_request(id: &str, holder: Option<pb::HolderChallenge>) -> pb::VerifyRequest {
    pb::VerifyRequest {
        identity_id: id.into(),
        platform_id: String::new(),
        consistency: Some(consistency(pb::ConsistencyLevel::Linearizable, 0, 0)),
        probe: None,
        holder,
    }
}

fn failure(answer: &pb::VerifyResponse) -> pb::holder_result::Failure {
    let result = answer.holder.expect("a holder result");
    let failure = pb::holder_result::Failure::try_from(result.failure).unwrap();
    assert_eq!(
        result.verified,
        failure == pb::holder_result::Failure::Unspecified
    );
    failure
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_holder_key_answers_challenges_locks_modalities_and_is_replaced_when_lost() {
    use pb::holder_result::Failure;
    let c = TestCluster::start_with_tls(3, RaftSettings::default()).await;
    let device = SigningKey::from_bytes(&[42; 32]);
    let mut registrar = RegistryClient::new(c.channel_as(1, "registrar/ON/clerk").await.unwrap());
    let face = face_template(&common::synthetic_embedding("holder"));
    let enrolled = registrar
        .enroll(pb::EnrollRequest {
            authority: None,
            templates: vec![face.clone()],
            holder_key: device.verifying_key().to_bytes().to_vec(),
            ..enroll_request("h1", "ON", "H-1")
        })
        .await
        .expect("enroll with a holder key")
        .into_inner();
    let id = enrolled.identity_id.clone();
    let mut bank = VerifierClient::new(c.channel_as(2, "platform/bank").await.unwrap());
    let nonce = b"bank-nonce-000001";

    // The device answers the bank's challenge.
    let answer = bank
        .verify(verify_request(
            &id,
            Some(challenge(&device, "bank", nonce, now_ms())),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(failure(&answer), Failure::Unspecified);
    // Signed by another key; signed for another platform (a proof replayed by the bank at
    // the shop fails there); signed 10 minutes ago.
    let thief = SigningKey::from_bytes(&[7; 32]);
    let forged = bank
        .verify(verify_request(
            &id,
            Some(challenge(&thief, "bank", nonce, now_ms())),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(failure(&forged), Failure::BadSignature);
    let mut shop = VerifierClient::new(c.channel_as(3, "platform/shop").await.unwrap());
    let replayed = shop
        .verify(verify_request(
            &id,
            Some(challenge(&device, "bank", nonce, now_ms())),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(failure(&replayed), Failure::BadSignature);
    let stale = bank
        .verify(verify_request(
            &id,
            Some(challenge(&device, "bank", nonce, now_ms() - 600_000)),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(failure(&stale), Failure::OutsideWindow);
    // A short nonce is bad input.
    let short = bank
        .verify(verify_request(
            &id,
            Some(challenge(&device, "bank", b"x", now_ms())),
        ))
        .await
        .unwrap_err();
    assert_eq!(short.code(), Code::InvalidArgument, "{short:?}");

    // The holder locks face checks, relayed by the bank's app; a face probe is then refused.
    let mut relay = HolderClient::new(c.channel_as(2, "platform/bank").await.unwrap());
    let lock = |device: &SigningKey, request_id: &str, locked: bool| pb::SetModalityLockRequest {
        request_id: request_id.into(),
        identity_id: id.clone(),
        modality: pb::Modality::Face as i32,
        locked,
        proof: Some(proof(
            device,
            "lock",
            &[
                id.as_bytes(),
                b"FACE",
                if locked { b"1" } else { b"0" },
                request_id.as_bytes(),
            ],
            now_ms(),
        )),
    };
    let locked = relay
        .set_modality_lock(lock(&device, "lock-1", true))
        .await
        .expect("the holder locks the face")
        .into_inner();
    assert_eq!(locked.locked, vec![pb::Modality::Face as i32]);
    let refused = relay
        .set_modality_lock(lock(&thief, "lock-2", false))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert_eq!(reason_of(&refused), "HOLDER_PROOF_REJECTED");
    let probe = bank
        .verify(pb::VerifyRequest {
            probe: Some(face.clone()),
            ..verify_request(&id, None)
        })
        .await
        .unwrap_err();
    assert_eq!(probe.code(), Code::FailedPrecondition);
    assert_eq!(reason_of(&probe), "MODALITY_LOCKED");

    // The holder's own history: administrative actions only, never the verifications above.
    let history = |device: &SigningKey| pb::HolderHistoryRequest {
        identity_id: id.clone(),
        proof: Some(proof(device, "history", &[id.as_bytes()], now_ms())),
        consistency: Some(consistency(pb::ConsistencyLevel::Linearizable, 0, 0)),
    };
    let own = relay
        .get_history(history(&device))
        .await
        .expect("the holder reads their history")
        .into_inner();
    use pb::history_event::Kind;
    let kinds: Vec<i32> = own.history.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [Kind::Enrolled, Kind::HolderKeyBound, Kind::ModalityLocked].map(|k| k as i32)
    );
    assert_eq!(own.history[2].modality, pb::Modality::Face as i32);
    assert_eq!(own.history[0].authority.as_ref().unwrap().id, "clerk");
    let denied = relay.get_history(history(&thief)).await.unwrap_err();
    assert_eq!(reason_of(&denied), "HOLDER_PROOF_REJECTED");

    // The device is lost: a platform cannot bind a key; the registrar binds a new one.
    let new_device = SigningKey::from_bytes(&[43; 32]);
    let bind = |request_id: &str| pb::BindHolderKeyRequest {
        request_id: request_id.into(),
        identity_id: id.clone(),
        holder_key: new_device.verifying_key().to_bytes().to_vec(),
        reason: pb::ReasonCode::KeyCompromise as i32,
        authority: None,
    };
    let mut platform = RegistryClient::new(c.channel_as(2, "platform/bank").await.unwrap());
    let denied = platform.bind_holder_key(bind("k1")).await.unwrap_err();
    assert_eq!(reason_of(&denied), "NOT_PERMITTED");
    registrar
        .bind_holder_key(bind("k2"))
        .await
        .expect("the registrar binds the new device key");
    let old = bank
        .verify(verify_request(
            &id,
            Some(challenge(&device, "bank", nonce, now_ms())),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(failure(&old), Failure::BadSignature);
    let new = bank
        .verify(verify_request(
            &id,
            Some(challenge(&new_device, "bank", nonce, now_ms())),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(failure(&new), Failure::Unspecified);
    // A planned rotation, signed by the current key: the next device takes over, and a
    // replay of the same signed rotation cannot undo or redo anything.
    let next_device = SigningKey::from_bytes(&[44; 32]);
    let next_key = next_device.verifying_key().to_bytes();
    let rotate = pb::RotateHolderKeyRequest {
        request_id: "rot-1".into(),
        identity_id: id.clone(),
        new_key: next_key.to_vec(),
        proof: Some(proof(
            &new_device,
            "rotate",
            &[id.as_bytes(), &next_key, b"rot-1"],
            now_ms(),
        )),
    };
    relay
        .rotate_key(rotate.clone())
        .await
        .expect("the holder rotates their key");
    let stolen = relay
        .rotate_key(pb::RotateHolderKeyRequest {
            request_id: "rot-2".into(),
            ..rotate.clone()
        })
        .await
        .unwrap_err();
    assert_eq!(reason_of(&stolen), "HOLDER_PROOF_REJECTED", "{stolen:?}");
    let new_device = next_device;
    // The new device unlocks the face; the record shows the whole story.
    relay
        .set_modality_lock(lock(&new_device, "lock-3", false))
        .await
        .expect("the new device unlocks");
    let record = registrar
        .get_record(pb::GetRecordRequest {
            identity_id: id.clone(),
            consistency: Some(consistency(pb::ConsistencyLevel::Linearizable, 0, 0)),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(record.holder_key_bound);
    assert!(record.locked.is_empty());
    let kinds: Vec<i32> = record.history.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            Kind::Enrolled,
            Kind::HolderKeyBound,
            Kind::ModalityLocked,
            Kind::HolderKeyBound,
            Kind::HolderKeyBound,
            Kind::ModalityUnlocked
        ]
        .map(|k| k as i32)
    );
    c.shutdown().await;
}
