//! The client library against real nodes on loopback (in-process nodes with real RocksDB and
//! real gRPC servers; `node/tests/common` is the shared cluster harness). Latency between the
//! client and each node is added by a small TCP proxy per node.

#[path = "../../node/tests/common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{TestCluster, eventually};
use quorumid_client::{
    Authority, Client, Consistency, Enrollment, Error, IdentityStatus, Reason, StatusChange,
    VerifyOptions,
};
use quorumid_node::config::RaftSettings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A TCP proxy that holds every chunk for `delay` in each direction.
struct Proxy {
    addr: SocketAddr,
    delay_ms: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Proxy {
    async fn start(target: &str, delay_ms: u64) -> Proxy {
        let target: SocketAddr = target.trim_start_matches("http://").parse().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let delay = Arc::new(AtomicU64::new(delay_ms));
        let d = delay.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let d = d.clone();
                tokio::spawn(async move {
                    let Ok(upstream) = TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = upstream.set_nodelay(true);
                    let (cr, cw) = client.into_split();
                    let (ur, uw) = upstream.into_split();
                    tokio::select! {
                        _ = pipe(cr, uw, d.clone()) => {}
                        _ = pipe(ur, cw, d) => {}
                    }
                });
            }
        });
        Proxy {
            addr,
            delay_ms: delay,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn set_delay(&self, ms: u64) {
        self.delay_ms.store(ms, Ordering::Relaxed);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay_ms: Arc<AtomicU64>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let delay = delay_ms.load(Ordering::Relaxed);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

fn registrar() -> Authority {
    Authority::provincial("registrar-on", "ON")
}

/// A cluster of three with one proxy per node; `delays[i]` is node i+1's one-way delay.
async fn cluster_with_proxies(delays: [u64; 3]) -> (TestCluster, Vec<Proxy>) {
    let cluster = TestCluster::start(3, RaftSettings::default()).await;
    let proxies = proxies_for(&cluster, delays).await;
    (cluster, proxies)
}

/// One proxy per node of `cluster`; `delays[i]` is node i+1's one-way delay.
async fn proxies_for(cluster: &TestCluster, delays: [u64; 3]) -> Vec<Proxy> {
    let mut proxies = Vec::new();
    for (i, delay) in delays.into_iter().enumerate() {
        proxies.push(Proxy::start(&cluster.configs[&(i as u64 + 1)].api_addr, delay).await);
    }
    proxies
}

async fn client_over(proxies: &[Proxy], deadline: Duration) -> Client {
    Client::builder()
        .endpoints(proxies.iter().map(Proxy::url))
        .platform("test-platform")
        .deadline(deadline)
        .attempt_timeout(Duration::from_millis(1500))
        .probe_interval(Duration::from_millis(100))
        .connect()
        .await
        .unwrap()
}

/// The node id the client ranks first.
fn nearest(client: &Client) -> Option<u64> {
    client.nodes().first().and_then(|n| n.node_id)
}

/// Delays that make `node` (1..=3) the nearest by far.
fn delays_favouring(node: u64) -> [u64; 3] {
    let mut delays = [30, 30, 30];
    delays[node as usize - 1] = 0;
    delays
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_nearest_node_answers_and_the_choice_follows_latency() {
    let (cluster, proxies) = cluster_with_proxies([40, 2, 120]).await;
    let client = client_over(&proxies, Duration::from_secs(5)).await;
    let enrolled = client
        .enroll(&Enrollment::new("ON", "N-1", registrar()))
        .await
        .unwrap();

    eventually("node 2 ranked nearest", Duration::from_secs(10), || async {
        nearest(&client) == Some(2)
    })
    .await;
    let answer = client
        .verify_with(
            &enrolled.identity_id,
            VerifyOptions {
                consistency: Some(Consistency::AtLeast(enrolled.token)),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(answer.status, IdentityStatus::Active);
    assert_eq!(answer.facts.node_id, 2, "the nearest node answers");
    // The whole ranking follows the round trips (once every node's probes have settled).
    eventually(
        "ranked by round trip: 2, 1, 3",
        Duration::from_secs(10),
        || async {
            let order: Vec<Option<u64>> = client.nodes().iter().map(|n| n.node_id).collect();
            order == [Some(2), Some(1), Some(3)]
        },
    )
    .await;

    // Latencies change: node 3 becomes the nearest, node 2 the farthest.
    proxies[1].set_delay(60);
    proxies[2].set_delay(0);
    eventually("node 3 ranked nearest", Duration::from_secs(10), || async {
        nearest(&client) == Some(3)
    })
    .await;
    let answer = client.verify(&enrolled.identity_id).await.unwrap();
    assert_eq!(answer.facts.node_id, 3);
    drop(client);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_nearest_node_mid_load_is_invisible_to_callers() {
    let cluster = TestCluster::start(3, RaftSettings::default()).await;
    let leader = cluster.wait_for_leader().await;
    let victim = cluster.followers()[0];
    let proxies = proxies_for(&cluster, delays_favouring(victim)).await;
    let client = client_over(&proxies, Duration::from_secs(5)).await;
    let enrolled = client
        .enroll(&Enrollment::new("ON", "K-1", registrar()))
        .await
        .unwrap();
    // Every node applies it before the load starts: the load's BOUNDED reads (1 s) may
    // rightly answer UNKNOWN for a write acknowledged less than a second before them.
    cluster.converged(enrolled.token.index()).await;
    eventually(
        "the victim ranked nearest",
        Duration::from_secs(10),
        || async { nearest(&client) == Some(victim) },
    )
    .await;

    let mut cluster = cluster;
    let killed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..4 {
        let client = client.clone();
        let id = enrolled.identity_id.clone();
        let killed = killed.clone();
        load.push(tokio::spawn(async move {
            // (answered by, after the kill?) for every call; bounded in count and time.
            let mut seen = Vec::new();
            let mut after_kill = 0;
            for _ in 0..2_000 {
                let was_killed = killed.load(Ordering::SeqCst);
                let answer = client.verify(&id).await;
                let answer = answer.unwrap_or_else(|e| panic!("a caller saw an error: {e}"));
                assert_eq!(answer.status, IdentityStatus::Active);
                seen.push((answer.facts.node_id, was_killed));
                if was_killed {
                    after_kill += 1;
                    if after_kill >= 100 {
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            seen
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.stop(victim).await;
    killed.store(true, Ordering::SeqCst);

    let mut before = Vec::new();
    let mut after = Vec::new();
    for task in load {
        for (node, was_killed) in task.await.unwrap() {
            if was_killed {
                after.push(node);
            } else {
                before.push(node);
            }
        }
    }
    assert!(
        before.contains(&victim),
        "before the kill the nearest node answered"
    );
    assert!(
        after.len() >= 100,
        "the load went on: {} calls",
        after.len()
    );
    assert!(
        after.iter().all(|n| *n != victim),
        "no answer from the killed node"
    );
    assert_eq!(cluster.leader(), Some(leader), "a follower was killed");
    drop(client);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cut_off_node_is_skipped_for_bounded_reads_and_used_again_once_healed() {
    let cluster = TestCluster::start(3, RaftSettings::default()).await;
    cluster.wait_for_leader().await;
    let cut = cluster.followers()[0];
    let proxies = proxies_for(&cluster, delays_favouring(cut)).await;
    let client = client_over(&proxies, Duration::from_secs(5)).await;
    let enrolled = client
        .enroll(&Enrollment::new("ON", "S-1", registrar()))
        .await
        .unwrap();
    eventually(
        "the cut node ranked nearest",
        Duration::from_secs(10),
        || async { nearest(&client) == Some(cut) },
    )
    .await;

    cluster.isolate(cut);
    // Once its watermark is older than the bound, the node may no longer answer BOUNDED reads.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for _ in 0..20 {
        let answer = client.verify(&enrolled.identity_id).await.unwrap();
        assert_ne!(answer.facts.node_id, cut, "a stale node answered BOUNDED");
        assert!(answer.facts.staleness_bound <= Some(Duration::from_secs(1)));
    }
    cluster.heal_all();
    eventually(
        "the healed node answers BOUNDED reads again",
        Duration::from_secs(15),
        || async {
            client
                .verify(&enrolled.identity_id)
                .await
                .is_ok_and(|a| a.facts.node_id == cut)
        },
    )
    .await;
    drop(client);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn read_your_writes_at_a_lagging_node_never_shows_the_revoked_identity_active() {
    let cluster = TestCluster::start(3, RaftSettings::default()).await;
    cluster.wait_for_leader().await;
    let lagging = cluster.followers()[0];
    let proxies = proxies_for(&cluster, delays_favouring(lagging)).await;
    let client = client_over(&proxies, Duration::from_secs(5)).await;
    eventually(
        "the lagging node ranked nearest",
        Duration::from_secs(10),
        || async { nearest(&client) == Some(lagging) },
    )
    .await;

    let authority = Authority::provincial("authority-on", "ON");
    let mut answered_elsewhere = 0;
    for round in 0..3 {
        let enrolled = client
            .enroll(&Enrollment::new("ON", &format!("R-{round}"), registrar()))
            .await
            .unwrap();
        // Cut the nearest node off, then revoke: it cannot have applied the revocation.
        cluster.isolate(lagging);
        let revoked = client
            .revoke(&StatusChange::new(
                &enrolled.identity_id,
                Reason::Fraud,
                authority.clone(),
            ))
            .await
            .unwrap();
        for _ in 0..5 {
            let answer = client
                .verify_with(
                    &enrolled.identity_id,
                    VerifyOptions {
                        consistency: Some(Consistency::AtLeast(revoked.token)),
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
            assert_eq!(answer.status, IdentityStatus::Revoked);
            assert!(answer.facts.applied_index >= revoked.token.index());
            if answer.facts.node_id != lagging {
                answered_elsewhere += 1;
            }
        }
        cluster.heal_all();
        // Back in touch, the node catches up and answers the token itself.
        eventually(
            "the lagging node answers",
            Duration::from_secs(15),
            || async {
                client
                    .verify_with(
                        &enrolled.identity_id,
                        VerifyOptions {
                            consistency: Some(Consistency::AtLeast(revoked.token)),
                            ..Default::default()
                        },
                    )
                    .await
                    .is_ok_and(|a| {
                        assert_eq!(a.status, IdentityStatus::Revoked);
                        a.facts.node_id == lagging
                    })
            },
        )
        .await;
    }
    assert_eq!(
        answered_elsewhere, 15,
        "a cut-off node never answers a newer token"
    );
    drop(client);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_retried_across_a_leader_change_apply_once() {
    let mut cluster = TestCluster::start(3, RaftSettings::default()).await;
    let leader = cluster.wait_for_leader().await;
    let endpoints: Vec<String> = cluster
        .configs
        .values()
        .map(|c| c.api_addr.clone())
        .collect();
    let client = Client::builder()
        .endpoints(endpoints)
        .deadline(Duration::from_secs(10))
        .attempt_timeout(Duration::from_secs(2))
        .probe_interval(Duration::from_millis(100))
        .connect()
        .await
        .unwrap();
    eventually(
        "the client learned the leader",
        Duration::from_secs(5),
        || async { client.leader().is_some() },
    )
    .await;

    let mut writers = Vec::new();
    for w in 0..4 {
        let client = client.clone();
        writers.push(tokio::spawn(async move {
            let mut done = Vec::new();
            for i in 0..25 {
                let enrollment = Enrollment::new("ON", &format!("W-{w}-{i}"), registrar());
                let enrolled = client.enroll(&enrollment).await.unwrap_or_else(|e| {
                    panic!("enrollment {w}/{i} failed across the leader change: {e}")
                });
                let change = StatusChange::new(
                    &enrolled.identity_id,
                    Reason::Deceased,
                    Authority::provincial("authority-on", "ON"),
                );
                client.revoke(&change).await.unwrap_or_else(|e| {
                    panic!("revocation {w}/{i} failed across the leader change: {e}")
                });
                done.push((enrollment, enrolled.identity_id));
            }
            done
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.stop(leader).await;

    let mut all = Vec::new();
    for w in writers {
        all.extend(w.await.unwrap());
    }
    assert_eq!(all.len(), 100);
    for (enrollment, identity_id) in &all {
        let record = client
            .record(identity_id, Consistency::Linearizable)
            .await
            .unwrap();
        let kinds: Vec<&str> = record.history.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, ["ENROLLED", "REVOKED"], "applied once each");
        // Sending an enrollment again with its request id answers the first result.
        let again = client.enroll(enrollment).await.unwrap();
        assert_eq!(&again.identity_id, identity_id);
    }
    assert_ne!(cluster.wait_for_leader().await, leader);
    drop(client);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn registry_answers_become_typed_errors() {
    let mut cluster = TestCluster::start(3, RaftSettings::default()).await;
    let endpoints: Vec<String> = cluster
        .configs
        .values()
        .map(|c| c.api_addr.clone())
        .collect();
    let client = Client::builder()
        .endpoints(endpoints)
        .deadline(Duration::from_secs(3))
        .attempt_timeout(Duration::from_secs(1))
        .connect()
        .await
        .unwrap();
    let enrolled = client
        .enroll(&Enrollment::new("ON", "E-1", registrar()))
        .await
        .unwrap();
    let authority = Authority::provincial("authority-on", "ON");

    let again = client
        .enroll(&Enrollment::new("ON", "E-1", registrar()))
        .await;
    assert!(matches!(again, Err(Error::Duplicate { .. })), "{again:?}");
    let elsewhere = StatusChange::new(
        &enrolled.identity_id,
        Reason::Fraud,
        Authority::provincial("authority-qc", "QC"),
    );
    let denied = client.suspend(&elsewhere).await;
    assert!(
        matches!(denied, Err(Error::PermissionDenied(_))),
        "{denied:?}"
    );
    let reinstate = client
        .reinstate(&StatusChange::new(
            &enrolled.identity_id,
            Reason::IssueResolved,
            authority.clone(),
        ))
        .await;
    assert!(
        matches!(reinstate, Err(Error::InvalidTransition(_))),
        "{reinstate:?}"
    );
    client
        .revoke(&StatusChange::new(
            &enrolled.identity_id,
            Reason::Fraud,
            authority.clone(),
        ))
        .await
        .unwrap();
    let twice = client
        .revoke(&StatusChange::new(
            &enrolled.identity_id,
            Reason::Fraud,
            authority.clone(),
        ))
        .await;
    assert!(matches!(twice, Err(Error::Revoked)), "{twice:?}");
    let verified = client
        .verify_with(
            &enrolled.identity_id,
            VerifyOptions {
                consistency: Some(Consistency::Linearizable),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(matches!(verified.require_valid(), Err(Error::Revoked)));
    let unknown = client.record("0000000000000000Z", Consistency::Local).await;
    assert!(
        matches!(
            unknown,
            Err(Error::InvalidInput(_) | Error::UnknownIdentity)
        ),
        "{unknown:?}"
    );
    let bad = client
        .enroll(&Enrollment::new("on!", "E-2", registrar()))
        .await;
    assert!(matches!(bad, Err(Error::InvalidInput(_))), "{bad:?}");

    // Two of three nodes gone: no quorum, and the call ends by its deadline with a reason.
    let ids: Vec<u64> = cluster.nodes.keys().copied().collect();
    cluster.stop(ids[0]).await;
    cluster.stop(ids[1]).await;
    let lost = tokio::time::timeout(
        Duration::from_secs(15),
        client.enroll(&Enrollment::new("ON", "E-3", registrar())),
    )
    .await
    .expect("the call ends by its deadline");
    assert!(
        matches!(
            lost,
            Err(Error::NoQuorum(_) | Error::Unavailable(_) | Error::DeadlineExceeded { .. })
        ),
        "{lost:?}"
    );
    drop(client);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hedged_read_is_answered_by_the_second_node_when_the_first_is_slow() {
    let (cluster, proxies) = cluster_with_proxies([0, 40, 40]).await;
    let setup = Client::builder()
        .endpoints(proxies.iter().map(Proxy::url))
        .connect()
        .await
        .unwrap();
    let enrolled = setup
        .enroll(&Enrollment::new("ON", "H-1", registrar()))
        .await
        .unwrap();
    cluster.converged(enrolled.token.index()).await;
    // Each client measures the round trips once, at connect, and never again during the test,
    // so the ranking stays as measured. A busy machine can spoil that one measurement (or a
    // node may not be SERVING yet), so connect until node 1 is measured nearest.
    let urls: Vec<String> = proxies.iter().map(Proxy::url).collect();
    let client = |hedge: bool| {
        let urls = urls.clone();
        async move {
            for _ in 0..20 {
                let mut builder = Client::builder()
                    .endpoints(urls.clone())
                    .deadline(Duration::from_secs(10))
                    .attempt_timeout(Duration::from_secs(8))
                    .probe_interval(Duration::from_secs(600));
                if hedge {
                    builder = builder.hedge_after(Duration::from_millis(100));
                }
                let client = builder.connect().await.unwrap();
                if nearest(&client) == Some(1) {
                    return client;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("node 1 (no added delay) was never measured nearest");
        }
    };
    let hedged = client(true).await;
    let plain = client(false).await;

    proxies[0].set_delay(1_000);
    let local = VerifyOptions {
        consistency: Some(Consistency::Local),
        ..Default::default()
    };
    let answer = hedged
        .verify_with(&enrolled.identity_id, local.clone())
        .await
        .unwrap();
    assert_ne!(answer.facts.node_id, 1, "the hedge answered first");
    // Without hedging, the same read waits for the slow nearest node.
    let answer = plain
        .verify_with(&enrolled.identity_id, local)
        .await
        .unwrap();
    assert_eq!(answer.facts.node_id, 1);
    drop((hedged, plain, setup));
    cluster.shutdown().await;
}
