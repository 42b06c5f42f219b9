//! Crash safety with real `quorumid-node` processes: SIGKILL nodes (one at a time, the leader
//! among them, then all at once) during a write load, restart them on the same data, and
//! check that every acknowledged write is present everywhere and applied exactly once.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{consistency, enroll_request, eventually, keys};
use quorumid_node::config::{MemberConfig, NodeConfig, RaftSettings, ReadConfig};
use quorumid_proto::v1 as pb;
use quorumid_proto::v1::cluster_client::ClusterClient;
use quorumid_proto::v1::registry_client::RegistryClient;
use tonic::transport::Channel;

struct Process {
    config: NodeConfig,
    config_path: PathBuf,
    child: Option<Child>,
}

impl Process {
    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.config.data_dir.join("node.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_quorumid-node"))
            .arg("serve")
            .arg("--config")
            .arg(&self.config_path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn quorumid-node");
        self.child = Some(child);
    }

    /// SIGKILL: no shutdown path runs, only what was fsynced survives.
    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL");
            child.wait().expect("reap");
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn free_port() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

async fn connect(addr: &str) -> Option<Channel> {
    Channel::from_shared(addr.to_string())
        .ok()?
        .connect_timeout(Duration::from_millis(300))
        .timeout(Duration::from_secs(3))
        .connect()
        .await
        .ok()
}

/// The leader and its term, as the first node of `addrs` that knows a leader reports them.
async fn leader_and_term(addrs: &[String]) -> Option<(u64, u64)> {
    for addr in addrs {
        if let Some(c) = connect(addr).await
            && let Ok(s) = ClusterClient::new(c).status(pb::StatusRequest {}).await
            && let Some(leader) = s.get_ref().leader_id
        {
            return Some((leader, s.get_ref().term));
        }
    }
    None
}

async fn leader_of(addrs: &[String]) -> Option<u64> {
    leader_and_term(addrs).await.map(|(leader, _)| leader)
}

/// One writer: enrolls its own documents, retrying each request id on other nodes until
/// it is acknowledged or its attempts run out. Returns request id -> identity id.
async fn writer(
    worker: usize,
    addrs: Vec<String>,
    stop: Arc<AtomicBool>,
    acknowledged: Arc<Mutex<BTreeMap<String, String>>>,
) {
    // Bounded in count as well as by the stop flag.
    for i in 0..5_000 {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let request_id = format!("w{worker}-{i}");
        for attempt in 0..40 {
            let addr = &addrs[(i + attempt + worker) % addrs.len()];
            let Some(channel) = connect(addr).await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let request = enroll_request(&request_id, "ON", &format!("W{worker}N{i}"));
            match RegistryClient::new(channel).enroll(request).await {
                Ok(answer) => {
                    let id = answer.into_inner().identity_id;
                    acknowledged.lock().unwrap().insert(request_id.clone(), id);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}

/// Three `quorumid-node` processes on loopback (not started), configured in `dir`.
fn three_processes(dir: &std::path::Path, raft: RaftSettings) -> Vec<Process> {
    let mut members = Vec::new();
    let mut configs = Vec::new();
    for id in 1..=3u64 {
        let api = free_port();
        let raft_port = free_port();
        let config = NodeConfig {
            node_id: id,
            province: common::PROVINCES[id as usize - 1].into(),
            data_dir: dir.join(format!("node-{id}")),
            api_listen: api,
            raft_listen: raft_port,
            api_addr: format!("http://{api}"),
            raft_addr: format!("http://{raft_port}"),
            bootstrap: id == 1,
            initial_members: Vec::new(),
            membership: Default::default(),
            keys: keys(),
            raft: raft.clone(),
            reads: ReadConfig::default(),
            biometrics: Default::default(),
            tls: Default::default(),
            limits: Default::default(),
            telemetry: Default::default(),
        };
        members.push(MemberConfig {
            node_id: id,
            province: config.province.clone(),
            api_addr: config.api_addr.clone(),
            raft_addr: config.raft_addr.clone(),
        });
        configs.push(config);
    }
    configs
        .into_iter()
        .map(|mut config| {
            config.initial_members = members.clone();
            std::fs::create_dir_all(&config.data_dir).unwrap();
            let config_path = config.data_dir.join("node.toml");
            std::fs::write(&config_path, toml::to_string(&config).unwrap()).unwrap();
            Process {
                config,
                config_path,
                child: None,
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_sigkill_of_any_node_and_of_all_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let mut processes = three_processes(
        dir.path(),
        RaftSettings {
            // Snapshots and purges happen during the test too.
            snapshot_after_entries: 40,
            keep_entries_after_snapshot: 5,
            ..RaftSettings::default()
        },
    );
    for p in &mut processes {
        p.start();
    }
    let addrs: Vec<String> = processes
        .iter()
        .map(|p| p.config.api_addr.clone())
        .collect();
    eventually("a leader", Duration::from_secs(30), || {
        let addrs = addrs.clone();
        async move { leader_of(&addrs).await.is_some() }
    })
    .await;

    let acknowledged = Arc::new(Mutex::new(BTreeMap::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| tokio::spawn(writer(w, addrs.clone(), stop.clone(), acknowledged.clone())))
        .collect();

    // Kill one node at a time (the leader twice), restarting each after a pause.
    for round in 0..4 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let victim = if round % 2 == 0 {
            leader_of(&addrs).await.map_or(0, |l| l as usize - 1)
        } else {
            (round * 7) % 3
        };
        processes[victim].kill9();
        tokio::time::sleep(Duration::from_millis(600)).await;
        processes[victim].start();
    }
    // Then every node at once.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let before_all = acknowledged.lock().unwrap().len();
    for p in &mut processes {
        p.kill9();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for p in &mut processes {
        p.start();
    }
    // Let the load run on after the restart, then stop it.
    let after_restart = acknowledged.lock().unwrap().len();
    eventually(
        "writes acknowledged after every node restarted",
        Duration::from_secs(30),
        || {
            let acknowledged = acknowledged.clone();
            async move { acknowledged.lock().unwrap().len() > after_restart + 20 }
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        before_all > 0,
        "writes were acknowledged before the crash of every node"
    );
    eprintln!(
        "{} writes acknowledged across the crashes",
        acknowledged.len()
    );

    // Every acknowledged write is on every node, applied once.
    eventually(
        "a leader after the restarts",
        Duration::from_secs(30),
        || {
            let addrs = addrs.clone();
            async move { leader_of(&addrs).await.is_some() }
        },
    )
    .await;
    for addr in &addrs {
        let channel = connect(addr).await.expect("node is up");
        let mut registry = RegistryClient::new(channel);
        for (request_id, identity) in &acknowledged {
            let record = registry
                .get_record(pb::GetRecordRequest {
                    identity_id: identity.clone(),
                    consistency: Some(consistency(pb::ConsistencyLevel::Linearizable, 0, 0)),
                })
                .await
                .unwrap_or_else(|e| panic!("{addr} lost acknowledged {request_id}: {e}"))
                .into_inner();
            assert_eq!(record.history.len(), 1, "applied exactly once");
        }
    }
    // Retrying an acknowledged request returns its first result, after all the crashes.
    let mut registry = RegistryClient::new(connect(&addrs[0]).await.unwrap());
    for (request_id, identity) in acknowledged.iter().take(20) {
        let (w, rest) = request_id.split_once('-').unwrap();
        let worker = w.trim_start_matches('w');
        let doc = format!("W{worker}N{rest}");
        let again = registry
            .enroll(enroll_request(request_id, "ON", &doc))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(&again.identity_id, identity);
    }
    eventually(
        "replicas converge to one digest",
        Duration::from_secs(20),
        || {
            let addrs = addrs.clone();
            async move {
                let mut seen = Vec::new();
                for addr in &addrs {
                    let Some(c) = connect(addr).await else {
                        return false;
                    };
                    let Ok(s) = ClusterClient::new(c).status(pb::StatusRequest {}).await else {
                        return false;
                    };
                    let s = s.into_inner();
                    seen.push((s.applied_index, s.state_digest));
                }
                seen.windows(2).all(|w| w[0] == w[1])
            }
        },
    )
    .await;
}

/// The leader's `kill -9` closes its connections; its voters notice at once and one of them
/// campaigns as soon as every leader lease has run out (`leader_watch.rs`), instead of after
/// openraft's lease plus a random election timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leaders_voters_campaign_once_the_leases_run_out() {
    let dir = tempfile::tempdir().unwrap();
    let mut processes = three_processes(dir.path(), RaftSettings::default());
    for p in &mut processes {
        p.start();
    }
    let addrs: Vec<String> = processes
        .iter()
        .map(|p| p.config.api_addr.clone())
        .collect();
    eventually("a leader", Duration::from_secs(30), || {
        let addrs = addrs.clone();
        async move { leader_of(&addrs).await.is_some() }
    })
    .await;
    // Let every voter open its watch on the leader.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (old_leader, old_term) = leader_and_term(&addrs)
        .await
        .expect("a leader and its term");
    let victim = old_leader as usize - 1;
    processes[victim].kill9();
    let survivors: Vec<String> = addrs
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != victim)
        .map(|(_, a)| a.clone())
        .collect();
    eventually("a new leader", Duration::from_secs(30), || {
        let survivors = survivors.clone();
        async move {
            leader_and_term(&survivors)
                .await
                .is_some_and(|(leader, _)| leader != old_leader)
        }
    })
    .await;
    let (_, new_term) = leader_and_term(&survivors)
        .await
        .expect("the new leader's term");
    assert!(new_term > old_term, "elected in a later term");
    let campaigned: Vec<u64> = processes
        .iter()
        .filter(|p| p.config.node_id != old_leader)
        .filter(|p| {
            std::fs::read_to_string(p.config.data_dir.join("node.log"))
                .unwrap_or_default()
                .contains("the leader's connection broke")
        })
        .map(|p| p.config.node_id)
        .collect();
    assert!(
        !campaigned.is_empty(),
        "no survivor noticed the leader's death through its watch"
    );
}
