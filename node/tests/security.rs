//! Mutual TLS and roles on a real 3-node cluster: certificates from a test CA, real rustls
//! handshakes on loopback, Raft replicating over TLS. Each test names the rule it breaks on
//! purpose and checks the precise refusal.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{TestCluster, consistency, enroll_request, eventually, reason_of};
use quorumid_node::config::RaftSettings;
use quorumid_node::security::certs::CertificateAuthority;
use quorumid_node::security::{Caller, LimitsConfig, TlsConfig};
use quorumid_proto::v1 as pb;
use quorumid_proto::v1::cluster_client::ClusterClient;
use quorumid_proto::v1::raft_client::RaftClient;
use quorumid_proto::v1::registry_client::RegistryClient;
use quorumid_proto::v1::verifier_client::VerifierClient;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

async fn cluster() -> TestCluster {
    TestCluster::start_with_tls(3, RaftSettings::default()).await
}

async fn registry(c: &TestCluster, caller: &str) -> RegistryClient<Channel> {
    RegistryClient::new(c.channel_as(1, caller).await.expect("connect"))
}

fn enroll_in(province: &str, request_id: &str, document: &str) -> pb::EnrollRequest {
    pb::EnrollRequest {
        authority: None,
        ..enroll_request(request_id, province, document)
    }
}

fn change(request_id: &str, identity: &str) -> pb::StatusChangeRequest {
    pb::StatusChangeRequest {
        request_id: request_id.into(),
        identity_id: identity.into(),
        reason: pb::ReasonCode::Fraud as i32,
        authority: None,
    }
}

fn assert_denied(result: Result<impl std::fmt::Debug, tonic::Status>, reason: &str, says: &str) {
    let status = result.expect_err("the call should be refused");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(reason_of(&status), reason, "{status:?}");
    assert!(status.message().contains(says), "{}", status.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn roles_and_scopes_decide_who_may_write_and_read() {
    let c = cluster().await;
    // A registrar of ON enrolls in ON; the history names it, from its certificate.
    let mut on_registrar = registry(&c, "registrar/ON/clerk-7").await;
    let enrolled = on_registrar
        .enroll(enroll_in("ON", "e1", "D-1"))
        .await
        .expect("a registrar enrolls in its province")
        .into_inner();
    // ... but not in QC, and not as someone else.
    assert_denied(
        on_registrar.enroll(enroll_in("QC", "e2", "D-2")).await,
        "NOT_PERMITTED",
        "own province",
    );
    let impersonating = enroll_request("e3", "ON", "D-3"); // declares registrar-ON
    assert_denied(
        on_registrar.enroll(impersonating).await,
        "NOT_PERMITTED",
        "names authority",
    );

    // A platform cannot revoke, suspend or enroll.
    let mut platform = registry(&c, "platform/bank").await;
    assert_denied(
        platform.revoke(change("r1", &enrolled.identity_id)).await,
        "NOT_PERMITTED",
        "for authorities",
    );
    assert_denied(
        platform.enroll(enroll_in("ON", "e4", "D-4")).await,
        "NOT_PERMITTED",
        "for registrars",
    );
    // Nor can a registrar change a status.
    assert_denied(
        on_registrar
            .suspend(change("r2", &enrolled.identity_id))
            .await,
        "NOT_PERMITTED",
        "for authorities",
    );

    // QC's authority cannot touch an identity homed in ON (decided by apply, in the log).
    let mut qc = registry(&c, "authority/QC/saaq").await;
    assert_denied(
        qc.revoke(change("r3", &enrolled.identity_id)).await,
        "OUT_OF_SCOPE",
        "does not cover",
    );
    // ON's authority can; the record's history names both actors from their certificates.
    let mut on = registry(&c, "authority/ON/office-3").await;
    let revoked = on
        .revoke(change("r4", &enrolled.identity_id))
        .await
        .expect("ON's authority revokes an ON identity")
        .into_inner();
    assert_eq!(revoked.status, pb::IdentityStatus::Revoked as i32);
    let record = on
        .get_record(pb::GetRecordRequest {
            identity_id: enrolled.identity_id.clone(),
            consistency: Some(consistency(pb::ConsistencyLevel::Linearizable, 0, 0)),
        })
        .await
        .expect("ON's authority reads an ON record")
        .into_inner();
    let actors: Vec<(String, String)> = record
        .history
        .iter()
        .map(|e| {
            let a = e.authority.clone().unwrap();
            (a.id, a.province)
        })
        .collect();
    assert_eq!(
        actors,
        vec![
            ("clerk-7".to_string(), "ON".to_string()),
            ("office-3".to_string(), "ON".to_string())
        ]
    );
    // Records: within scope only; the national authority sees all; platforms none.
    let read = |identity_id: &str| pb::GetRecordRequest {
        identity_id: identity_id.into(),
        consistency: Some(consistency(pb::ConsistencyLevel::Linearizable, 0, 0)),
    };
    assert_denied(
        qc.get_record(read(&enrolled.identity_id)).await,
        "NOT_PERMITTED",
        "own province",
    );
    registry(&c, "authority/national/ircc")
        .await
        .get_record(read(&enrolled.identity_id))
        .await
        .expect("the national authority reads any record");
    assert_denied(
        platform.get_record(read(&enrolled.identity_id)).await,
        "NOT_PERMITTED",
        "registrars and authorities",
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn platforms_verify_in_their_own_sector_and_reach_nothing_else() {
    let c = cluster().await;
    let id = registry(&c, "registrar/ON/clerk")
        .await
        .enroll(enroll_in("ON", "e1", "D-1"))
        .await
        .unwrap()
        .into_inner()
        .identity_id;
    let verify = |platform_id: &str| pb::VerifyRequest {
        identity_id: id.clone(),
        platform_id: platform_id.into(),
        consistency: Some(consistency(pb::ConsistencyLevel::Linearizable, 0, 0)),
        probe: None,
        holder: None,
    };
    let mut bank = VerifierClient::new(c.channel_as(2, "platform/bank").await.unwrap());
    let mut shop = VerifierClient::new(c.channel_as(3, "platform/shop").await.unwrap());
    let as_bank = bank.verify(verify("")).await.unwrap().into_inner();
    assert_eq!(as_bank.status, pb::IdentityStatus::Active as i32);
    let as_shop = shop.verify(verify("shop")).await.unwrap().into_inner();
    assert_ne!(as_bank.pseudonym, as_shop.pseudonym);
    // The sector is the certificate's: claiming another platform's is refused.
    assert_denied(
        bank.verify(verify("shop")).await,
        "NOT_PERMITTED",
        "own pseudonym sector",
    );
    // An authority is not a platform.
    let mut authority = VerifierClient::new(c.channel_as(1, "authority/ON/x").await.unwrap());
    assert_denied(
        authority.verify(verify("")).await,
        "NOT_PERMITTED",
        "for platforms",
    );

    // The Cluster service: not for platforms.
    let mut cluster = ClusterClient::new(c.channel_as(1, "platform/bank").await.unwrap());
    assert_denied(
        cluster.status(pb::StatusRequest {}).await,
        "NOT_PERMITTED",
        "for operators",
    );
    assert_denied(
        cluster
            .trigger_snapshot(pb::TriggerSnapshotRequest {})
            .await,
        "NOT_PERMITTED",
        "for operators",
    );
    // The Raft service: a platform's certificate is refused on the peer port.
    let raft_addr = c.configs[&1].raft_addr.clone();
    let (cert, key) = c.certificate("platform/bank");
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(
            std::fs::read(c.tls.as_ref().unwrap().join("ca.pem")).unwrap(),
        ))
        .identity(Identity::from_pem(
            std::fs::read(cert).unwrap(),
            std::fs::read(key).unwrap(),
        ));
    let channel = Channel::from_shared(raft_addr)
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let refused = RaftClient::new(channel)
        .read_index(pb::ReadIndexRequest {})
        .await;
    assert_denied(refused, "NOT_PERMITTED", "cluster nodes only");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_caller_without_a_cluster_certificate_gets_no_connection() {
    let c = cluster().await;
    let ca_pem = std::fs::read(c.tls.as_ref().unwrap().join("ca.pem")).unwrap();
    // No client certificate at all.
    let anonymous = Channel::from_shared(c.api(1))
        .unwrap()
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&ca_pem)))
        .unwrap()
        .connect()
        .await;
    let refused = match anonymous {
        Err(_) => true,
        Ok(channel) => ClusterClient::new(channel)
            .status(pb::StatusRequest {})
            .await
            .is_err(),
    };
    assert!(refused, "a caller without a certificate was answered");
    // A certificate from another CA, naming an operator.
    let rogue_dir = c.dir.path().join("rogue");
    let rogue = CertificateAuthority::create("rogue CA").unwrap();
    rogue.save(&rogue_dir).unwrap();
    let issued = rogue
        .issue(&Caller::Operator { name: "ops".into() }, &[])
        .unwrap();
    let forged = Channel::from_shared(c.api(1))
        .unwrap()
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&ca_pem))
                .identity(Identity::from_pem(&issued.cert_pem, &issued.key_pem)),
        )
        .unwrap()
        .connect()
        .await;
    let refused = match forged {
        Err(_) => true,
        Ok(channel) => ClusterClient::new(channel)
            .trigger_snapshot(pb::TriggerSnapshotRequest {})
            .await
            .is_err(),
    };
    assert!(refused, "a certificate from another CA was accepted");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_without_a_cluster_certificate_cannot_join() {
    let mut c = cluster().await;
    let leader_api = c.api(c.wait_for_leader().await);
    // Node 4's certificate is signed by a rogue CA that names it node 4; it trusts the real
    // cluster CA, so only the cluster's side can refuse it.
    let rogue_dir = c.dir.path().join("rogue");
    let rogue = CertificateAuthority::create("rogue CA").unwrap();
    rogue.save(&rogue_dir).unwrap();
    let issued = rogue
        .issue(
            &Caller::Node { node_id: 4 },
            &["127.0.0.1".to_string(), "localhost".to_string()],
        )
        .unwrap();
    let (cert, key) = issued.save(&rogue_dir, "node-4").unwrap();
    let ca = c.tls.as_ref().unwrap().join("ca.pem");
    let id = c
        .start_new_node_with(|config| {
            config.membership.join = vec![leader_api.clone()];
            config.tls = TlsConfig {
                ca: Some(ca),
                cert: Some(cert),
                key: Some(key),
                ..TlsConfig::default()
            };
        })
        .await;
    assert_eq!(id, 4);
    let joining = c.nodes[&4].joining.clone();
    eventually(
        "node 4 asks to join a few times",
        Duration::from_secs(20),
        || {
            let attempts = joining.borrow().attempts;
            async move { attempts >= 2 }
        },
    )
    .await;
    let status = c.status(1).await;
    assert!(
        status.members.iter().all(|m| m.node_id != 4),
        "a node with a rogue certificate became a member: {:?}",
        status.members
    );
    assert!(!joining.borrow().joined);
    // With a real certificate, the same kind of node joins.
    let id = c
        .start_new_node_with(|config| config.membership.join = vec![leader_api.clone()])
        .await;
    let joining = c.nodes[&id].joining.clone();
    eventually(
        "node 5 joins with a cluster certificate",
        Duration::from_secs(30),
        || {
            let joined = joining.borrow().joined;
            async move { joined }
        },
    )
    .await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_caller_over_its_rate_is_refused_and_told_when_to_retry() {
    let mut c = cluster().await;
    let id = c
        .start_new_node_with(|config| {
            config.limits = LimitsConfig {
                per_caller_per_second: 1,
                per_caller_burst: 3,
            }
        })
        .await;
    let mut ops = ClusterClient::new(c.channel_as(id, "operator/ops").await.unwrap());
    for _ in 0..3 {
        ops.status(pb::StatusRequest {})
            .await
            .expect("within the burst");
    }
    let refused = ops.status(pb::StatusRequest {}).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert_eq!(reason_of(&refused), "RATE_LIMITED");
    assert!(
        refused.message().contains("operator/ops"),
        "{}",
        refused.message()
    );
    let retry_ms: u64 = refused
        .metadata()
        .get("quorumid-retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a retry-after hint");
    assert!((1..=1000).contains(&retry_ms), "{retry_ms}");
    // Another caller has a bucket of its own.
    ClusterClient::new(c.channel_as(id, "operator/other").await.unwrap())
        .status(pb::StatusRequest {})
        .await
        .expect("another caller is not limited by the first");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rotated_certificate_is_served_without_a_restart() {
    let c = cluster().await;
    let (cert_path, key_path) = c.certificate("node/1");
    let before = std::fs::read(&cert_path).unwrap();
    let served = || async {
        let ca = std::fs::read(c.tls.as_ref().unwrap().join("ca.pem")).unwrap();
        served_certificate(&c.configs[&1].api_listen.to_string(), &ca, &c).await
    };
    assert_eq!(pem_der(&before), served().await);
    // Issue node 1 a new certificate and replace the files, as a Secret update would.
    let ca = CertificateAuthority::load(c.tls.as_ref().unwrap()).unwrap();
    let fresh = ca
        .issue(
            &Caller::Node { node_id: 1 },
            &["127.0.0.1".to_string(), "localhost".to_string()],
        )
        .unwrap();
    std::fs::write(&key_path, &fresh.key_pem).unwrap();
    std::fs::write(&cert_path, &fresh.cert_pem).unwrap();
    let expected = pem_der(fresh.cert_pem.as_bytes());
    eventually(
        "node 1 serves its new certificate",
        Duration::from_secs(10),
        || {
            let got = served();
            let expected = expected.clone();
            async move { got.await == expected }
        },
    )
    .await;
    // The cluster keeps working: node 1's peers reconnect with the rotated certificate too.
    registry(&c, "registrar/ON/clerk")
        .await
        .enroll(enroll_in("ON", "after-rotation", "D-9"))
        .await
        .expect("writes go on after the rotation");
    c.shutdown().await;
}

fn pem_der(pem: &[u8]) -> Vec<u8> {
    use tokio_rustls::rustls::pki_types::CertificateDer;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem)
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

/// The leaf certificate a node presents in a fresh TLS handshake.
async fn served_certificate(addr: &str, ca_pem: &[u8], c: &TestCluster) -> Vec<u8> {
    use tokio_rustls::TlsConnector;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio_rustls::rustls::{ClientConfig, RootCertStore};
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let (cert, key) = c.certificate("operator/ops");
    let chain = CertificateDer::pem_file_iter(cert)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    let config = ClientConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}
