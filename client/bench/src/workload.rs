//! The operations, one shape for both systems.
//!
//! | op | quorumid | etcd |
//! |---|---|---|
//! | `status` | Suspend / Reinstate of the worker's own identity, in turn | put of the same size |
//! | `enroll` | Enroll with a 512-d face embedding (2 KiB), through the 1:N face de-dup | put of the same size |
//! | `bounded` | Verify at BOUNDED (1 s) of a random identity of the read set | serializable get |
//! | `linearizable` | Verify at LINEARIZABLE | linearizable get |
//! | `local` | Verify at LOCAL | serializable get |
//!
//! Both systems hold the same read set (1,000 identities; 1,000 keys holding values of the
//! enrollment's size). Each worker talks to node `worker % 3`, for both systems: a write
//! that reaches a follower is forwarded to the leader by the follower (both systems do).

use std::sync::Arc;

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use prost::Message as _;
use quorumid_proto::v1 as pb;
use quorumid_proto::v1::registry_client::RegistryClient;
use quorumid_proto::v1::verifier_client::VerifierClient;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde::Serialize;
use tonic::transport::Channel;

use crate::clusters::{EtcdCluster, Members, QuorumidCluster};

/// Identities (and etcd keys) in the read set.
const READ_SET: usize = 1_000;
/// The enrollment's face embedding: dimension and model name.
const FACE_DIMENSION: usize = 512;
const FACE_MODEL: &str = "bench-512";
const PROVINCE: &str = "ON";
const PLATFORM: &str = "bench-platform";

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Status,
    Enroll,
    Bounded,
    Linearizable,
    Local,
}

impl Op {
    /// Reads first, on the fresh read set: the write points leave both systems holding
    /// about a hundred thousand more records (and etcd compacting), which would weigh on
    /// the reads after them.
    pub const ALL: [Op; 5] = [
        Op::Bounded,
        Op::Linearizable,
        Op::Local,
        Op::Status,
        Op::Enroll,
    ];

    /// What etcd does for this operation.
    pub fn etcd_equivalent(self) -> &'static str {
        match self {
            Op::Status | Op::Enroll => "put",
            Op::Bounded | Op::Local => "serializable get",
            Op::Linearizable => "linearizable get",
        }
    }
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Op::Status => "status",
            Op::Enroll => "enroll",
            Op::Bounded => "bounded",
            Op::Linearizable => "linearizable",
            Op::Local => "local",
        };
        f.write_str(name)
    }
}

/// The enrollment payload: one face embedding of [`FACE_DIMENSION`] little-endian f32
/// values (2 KiB), a random unit vector for each enrollment. Random directions in 512
/// dimensions are far apart (cosine about 0 +- 0.05), so no enrollment is taken for another
/// by the node's 1:N face de-dup, which every one of them goes through.
fn face_template(rng: &mut StdRng) -> pb::Template {
    let mut values: Vec<f32> = (0..FACE_DIMENSION)
        .map(|_| rng.random::<f32>() - 0.5)
        .collect();
    let norm = values.iter().map(|v| v * v).sum::<f32>().sqrt();
    values.iter_mut().for_each(|v| *v /= norm);
    pb::Template {
        format: pb::TemplateFormat::FaceEmbeddingF32 as i32,
        model_id: FACE_MODEL.into(),
        data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

/// What one worker keeps between its calls.
pub struct Worker {
    pub index: usize,
    /// Random, so that document numbers and etcd keys differ between points and runs.
    nonce: String,
    seq: u64,
    /// Whether the worker's own identity is suspended now (quorumid's `status` op).
    suspended: bool,
    rng: StdRng,
}

impl Worker {
    pub fn new(index: usize) -> Worker {
        // Request ids must differ between points and runs too: seeded from the OS.
        let mut rng = StdRng::from_os_rng();
        Worker {
            index,
            nonce: hex::encode_upper(rng.random::<[u8; 6]>()),
            seq: 0,
            suspended: false,
            rng,
        }
    }

    fn request_id(&mut self) -> String {
        hex::encode(self.rng.random::<[u8; 16]>())
    }
}

pub struct QuorumidTarget {
    channels: Vec<Channel>,
    /// The read set.
    read_ids: Vec<String>,
    /// One identity per worker, for the status changes.
    own_ids: Vec<String>,
}

pub struct EtcdTarget {
    clients: Vec<etcd_client::Client>,
    pub enroll_value: Vec<u8>,
    status_value: Vec<u8>,
}

/// One system, ready to be driven.
#[derive(Clone)]
pub enum Target {
    Quorumid(Arc<QuorumidTarget>),
    Etcd(Arc<EtcdTarget>),
}

pub struct Targets {
    pub quorumid: Arc<QuorumidTarget>,
    pub etcd: Arc<EtcdTarget>,
}

fn registrar() -> pb::Authority {
    pb::Authority {
        id: "bench-registrar".into(),
        province: PROVINCE.into(),
        national: false,
    }
}

fn national() -> pb::Authority {
    pb::Authority {
        id: "bench-authority".into(),
        province: String::new(),
        national: true,
    }
}

impl QuorumidTarget {
    fn channel(&self, worker: usize) -> Channel {
        self.channels[worker % self.channels.len()].clone()
    }

    fn enrollment(&self, worker: &mut Worker) -> pb::EnrollRequest {
        worker.seq += 1;
        pb::EnrollRequest {
            request_id: worker.request_id(),
            home_province: PROVINCE.into(),
            document_issuer: PROVINCE.into(),
            document_number: format!("{}X{}", worker.nonce, worker.seq),
            templates: vec![face_template(&mut worker.rng)],
            authority: Some(registrar()),
            holder_key: Vec::new(),
        }
    }

    pub async fn enroll(&self, worker: &mut Worker) -> Result<String, tonic::Status> {
        let request = self.enrollment(worker);
        let mut client = RegistryClient::new(self.channel(worker.index));
        Ok(client.enroll(request).await?.into_inner().identity_id)
    }

    async fn status_change(&self, worker: &mut Worker) -> Result<(), tonic::Status> {
        let suspend = !worker.suspended;
        let request = pb::StatusChangeRequest {
            request_id: worker.request_id(),
            identity_id: self.own_ids[worker.index].clone(),
            reason: if suspend {
                pb::ReasonCode::UnderInvestigation
            } else {
                pb::ReasonCode::IssueResolved
            } as i32,
            authority: Some(national()),
        };
        let mut client = RegistryClient::new(self.channel(worker.index));
        let result = if suspend {
            client.suspend(request).await
        } else {
            client.reinstate(request).await
        };
        match result {
            Ok(_) => {
                worker.suspended = suspend;
                Ok(())
            }
            // An earlier call timed out but was applied: the identity is already there.
            Err(e) if e.code() == tonic::Code::FailedPrecondition => {
                worker.suspended = suspend;
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    async fn verify(
        &self,
        worker: &mut Worker,
        level: pb::ConsistencyLevel,
    ) -> Result<(), tonic::Status> {
        let identity_id = self.read_ids[worker.rng.random_range(0..self.read_ids.len())].clone();
        let request = pb::VerifyRequest {
            identity_id,
            platform_id: PLATFORM.into(),
            consistency: Some(pb::ReadConsistency {
                level: level as i32,
                max_staleness_ms: 1_000,
                min_index: 0,
            }),
            probe: None,
            holder: None,
        };
        let mut client = VerifierClient::new(self.channel(worker.index));
        let answer = client.verify(request).await?.into_inner();
        if answer.status != pb::IdentityStatus::Active as i32 {
            return Err(tonic::Status::internal(
                "a read-set identity did not verify ACTIVE",
            ));
        }
        Ok(())
    }
}

fn read_key(k: usize) -> String {
    format!("bench/read/{k:06}")
}

impl EtcdTarget {
    fn kv(&self, worker: usize) -> etcd_client::KvClient {
        self.clients[worker % self.clients.len()].kv_client()
    }

    pub async fn put(&self, worker: &mut Worker, key: String, value: &[u8]) -> anyhow::Result<()> {
        worker.seq += 1;
        self.kv(worker.index).put(key, value, None).await?;
        Ok(())
    }

    async fn get(&self, worker: &mut Worker, serializable: bool) -> anyhow::Result<()> {
        let key = read_key(worker.rng.random_range(0..READ_SET));
        let options = serializable.then(|| etcd_client::GetOptions::new().with_serializable());
        let answer = self.kv(worker.index).get(key, options).await?;
        if answer.kvs().len() != 1 {
            bail!("a read-set key was missing");
        }
        Ok(())
    }
}

impl Target {
    pub fn name(&self) -> &'static str {
        match self {
            Target::Quorumid(_) => "quorumid",
            Target::Etcd(_) => "etcd",
        }
    }

    /// One operation; the error is a one-line description.
    pub async fn call(&self, op: Op, worker: &mut Worker) -> Result<(), String> {
        match self {
            Target::Quorumid(q) => {
                let result = match op {
                    Op::Status => q.status_change(worker).await,
                    Op::Enroll => q.enroll(worker).await.map(drop),
                    Op::Bounded => q.verify(worker, pb::ConsistencyLevel::Bounded).await,
                    Op::Linearizable => q.verify(worker, pb::ConsistencyLevel::Linearizable).await,
                    Op::Local => q.verify(worker, pb::ConsistencyLevel::Local).await,
                };
                result.map_err(|s| format!("{:?}: {}", s.code(), s.message()))
            }
            Target::Etcd(e) => {
                let result = match op {
                    Op::Status => {
                        let key = format!("bench/status/{}", worker.index);
                        e.put(worker, key, &e.status_value).await
                    }
                    Op::Enroll => {
                        let key = format!("bench/enroll/{}/{}", worker.nonce, worker.seq);
                        e.put(worker, key, &e.enroll_value).await
                    }
                    Op::Bounded | Op::Local => e.get(worker, true).await,
                    Op::Linearizable => e.get(worker, false).await,
                };
                result.map_err(|e| e.to_string())
            }
        }
    }
}

impl Targets {
    /// Fills both systems with the same read set, and quorumid with one identity per worker.
    pub async fn prepare(
        quorumid: &QuorumidCluster,
        etcd: &EtcdCluster,
        workers: usize,
    ) -> anyhow::Result<Targets> {
        let mut q = QuorumidTarget {
            channels: quorumid.channels.clone(),
            read_ids: Vec::new(),
            own_ids: Vec::new(),
        };
        let sample = q.enrollment(&mut Worker::new(0));
        let enroll_value = vec![b'e'; sample.encoded_len()];
        let status_value = vec![
            b's';
            pb::StatusChangeRequest {
                request_id: Worker::new(0).request_id(),
                identity_id: "0".repeat(17),
                reason: pb::ReasonCode::UnderInvestigation as i32,
                authority: Some(national()),
            }
            .encoded_len()
        ];

        // Enroll through 32 concurrent callers; each enrollment is retried until it lands.
        let target = &q;
        let mut ids: Vec<String> = futures::stream::iter(0..READ_SET + workers)
            .map(|i| async move {
                let mut worker = Worker::new(1_000_000 + i);
                for _ in 0..10 {
                    match target.enroll(&mut worker).await {
                        Ok(id) => return Ok(id),
                        Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
                    }
                }
                bail!("enrollment {i} of the read set failed 10 times")
            })
            .buffer_unordered(32)
            .collect::<Vec<anyhow::Result<String>>>()
            .await
            .into_iter()
            .collect::<anyhow::Result<_>>()?;
        q.own_ids = ids.split_off(READ_SET);
        q.read_ids = ids;

        let e = EtcdTarget {
            clients: etcd.clients.clone(),
            enroll_value,
            status_value,
        };
        futures::stream::iter(0..READ_SET)
            .map(|k| {
                let mut kv = e.kv(k);
                let value = e.enroll_value.clone();
                async move { kv.put(read_key(k), value, None).await }
            })
            .buffer_unordered(32)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()
            .context("filling etcd's read set")?;

        // Let every quorumid node apply the read set before the first point.
        quorumid.settled().await?;
        Ok(Targets {
            quorumid: Arc::new(q),
            etcd: Arc::new(e),
        })
    }

    pub fn both(&self) -> [Target; 2] {
        [
            Target::Quorumid(self.quorumid.clone()),
            Target::Etcd(self.etcd.clone()),
        ]
    }
}
