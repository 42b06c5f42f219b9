//! Encryption at rest on real nodes: after enrollments with known template bytes and a known
//! document number, no file of any node's data directory (RocksDB tables, write-ahead logs,
//! manifests, snapshot files) holds them; the data still serves verifications; and a node
//! given the wrong storage key refuses to start instead of reading garbage.

mod common;

use std::path::{Path, PathBuf};

use common::{STORAGE_KEY, TestCluster, consistency, enroll_request, face_template, keys};
use quorumid_node::config::RaftSettings;
use quorumid_node::node::Node;
use quorumid_node::raft::store::{Cf, Store};
use quorumid_proto::v1 as pb;

fn shared() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// The files under `dir` that contain `needle`.
fn holding(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    files(dir)
        .into_iter()
        .filter(|f| {
            let bytes = std::fs::read(f).unwrap_or_default();
            bytes.windows(needle.len()).any(|w| w == needle)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn templates_and_document_numbers_are_nowhere_on_disk() {
    let mut c = TestCluster::start(3, RaftSettings::default()).await;
    let leader = c.wait_for_leader().await;
    let face = face_template(&common::synthetic_embedding("at-rest"));
    let finger = pb::Template {
        format: pb::TemplateFormat::Iso1979422005 as i32,
        model_id: "secugen".into(),
        data: std::fs::read(shared().join("fvc2002/DB4_B/101_1.iso")).unwrap(),
    };
    let document = "ZX-4417-AT-REST-9931";
    let enrolled = c
        .registry(leader)
        .await
        .enroll(pb::EnrollRequest {
            templates: vec![face.clone(), finger.clone()],
            ..enroll_request("at-rest", "ON", document)
        })
        .await
        .expect("enroll")
        .into_inner();
    c.converged(enrolled.log_index).await;
    // A snapshot file on every node, then every node stopped and its memtables flushed to
    // table files, so the scan sees every form RocksDB keeps.
    for id in [1, 2, 3] {
        c.cluster(id)
            .await
            .trigger_snapshot(pb::TriggerSnapshotRequest {})
            .await
            .expect("snapshot");
    }
    let config = c.configs[&1].clone();
    for id in [1, 2, 3] {
        c.stop(id).await;
        // The stopped node's last tasks may hold the database a moment longer.
        let mut attempt = 0;
        let store = loop {
            let sealer = c.configs[&id].sealer().unwrap();
            match Store::open(&c.configs[&id].data_dir.join("db"), sealer) {
                Ok(store) => break store,
                Err(_) if attempt < 100 => {
                    attempt += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(e) => panic!("opening node {id}'s database: {e}"),
            }
        };
        for cf in Cf::ALL {
            store.db().flush_cf(store.cf(cf)).unwrap();
        }
    }
    let data = c.dir.path();
    let snapshots: Vec<PathBuf> = files(data)
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == "snap"))
        .collect();
    assert_eq!(snapshots.len(), 3, "one snapshot file per node");
    let tables = files(data)
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == "sst"))
        .count();
    assert!(tables > 0, "the flush wrote table files");

    // The scan reads what is there: identity ids are keys, stored in the clear.
    let id_holders = holding(data, enrolled.identity_id.as_bytes());
    assert!(
        id_holders
            .iter()
            .any(|f| f.extension().is_some_and(|e| e == "sst")),
        "the scan should see the identity id in table files: {id_holders:?}"
    );
    // Neither template, in whole or in part, nor the document number is anywhere.
    for (what, bytes) in [
        ("face template", &face.data),
        ("fingerprint record", &finger.data),
    ] {
        for window in [
            &bytes[..],
            &bytes[..32],
            &bytes[bytes.len() / 2..bytes.len() / 2 + 32],
        ] {
            let found = holding(data, window);
            assert!(found.is_empty(), "{what} bytes found in {found:?}");
        }
    }
    let found = holding(data, document.as_bytes());
    assert!(found.is_empty(), "the document number found in {found:?}");
    let found = holding(data, b"ZX4417ATREST9931");
    assert!(
        found.is_empty(),
        "the normalised document number found in {found:?}"
    );

    // The sealed state still serves: restart, then a probe of the enrolled face matches.
    for id in [1, 2, 3] {
        c.restart(id).await;
    }
    c.wait_for_leader().await;
    let answer = c
        .verifier(1)
        .await
        .verify(pb::VerifyRequest {
            identity_id: enrolled.identity_id.clone(),
            platform_id: "bank".into(),
            consistency: Some(consistency(pb::ConsistencyLevel::Linearizable, 0, 0)),
            probe: Some(face),
            holder: None,
        })
        .await
        .expect("verify")
        .into_inner();
    assert!(answer.probe.expect("a probe result").matched);
    c.stop(1).await;

    // A node with another storage key refuses to start, and says why.
    let mut wrong = config;
    wrong.keys = keys();
    wrong.keys.storage_key = Some(STORAGE_KEY.replace('3', "4"));
    let err = match Node::start(wrong).await {
        Ok(_) => panic!("a node started with the wrong storage key"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("fails authentication"), "{err}");
    c.shutdown().await;
}
