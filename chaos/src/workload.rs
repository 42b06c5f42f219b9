//! The client workload: a few concurrent clients (the `quorumid-client` library, each
//! preferring a different node and failing over to the others) enroll identities, revoke,
//! suspend and reinstate them, and verify them at every consistency level. Every call is
//! recorded with its invocation and completion time and its outcome: acknowledged, refused
//! (definitely not applied), or unknown (may have been applied).
//!
//! Calls concentrate on a few recent identities so that writes and reads of one identity
//! overlap. Each client stops at the end time or after its share of `max_ops`, whichever
//! comes first.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use quorumid_client::{
    Authority, Client, CommitToken, Consistency, DuplicateKind, Enrollment, Error, Reason,
    StatusChange, VerifyOptions,
};
use rand::seq::IndexedRandom as _;
use rand::{Rng as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;
use tokio::time::Instant;

use crate::history::{Call, Level, Op, Outcome, Recorder};

#[derive(Clone, Debug)]
pub struct WorkloadSpec {
    pub seed: u64,
    pub clients: u32,
    pub max_ops: u64,
    /// How many of the most recent identities the calls pick from.
    pub hot_identities: usize,
}

/// Identities known to the workload, with the highest commit index of a write on each.
#[derive(Default)]
struct Known {
    identities: Mutex<Vec<(String, u64)>>,
    next_document: AtomicU64,
    next_op: AtomicU64,
}

impl Known {
    fn pick(&self, rng: &mut ChaCha8Rng, hot: usize) -> Option<(String, u64)> {
        let ids = self.identities.lock().unwrap_or_else(|e| e.into_inner());
        let start = ids.len().saturating_sub(hot);
        ids[start..].choose(rng).cloned()
    }

    fn wrote(&self, identity: &str, index: u64) {
        let mut ids = self.identities.lock().unwrap_or_else(|e| e.into_inner());
        match ids.iter_mut().find(|(id, _)| id == identity) {
            Some((_, latest)) => *latest = (*latest).max(index),
            None => ids.push((identity.to_string(), index)),
        }
    }
}

/// Connects one client per node (each preferring that node's province).
pub async fn clients(endpoints: &[(String, String)]) -> anyhow::Result<Vec<Client>> {
    let mut clients = Vec::new();
    for (_, province) in endpoints {
        let client = Client::builder()
            .endpoints(endpoints.iter().map(|(addr, _)| addr.clone()))
            .province(province.clone())
            .platform("chaos")
            .deadline(Duration::from_secs(3))
            .attempt_timeout(Duration::from_millis(800))
            .connect_timeout(Duration::from_millis(500))
            .probe_interval(Duration::from_millis(500))
            .connect()
            .await?;
        clients.push(client);
    }
    Ok(clients)
}

/// Runs the workload until `end`; every call goes to `recorder`.
pub async fn run(spec: WorkloadSpec, clients: Vec<Client>, recorder: Arc<Recorder>, end: Instant) {
    let known = Arc::new(Known::default());
    let per_client = spec.max_ops / spec.clients.max(1) as u64;
    let workers = (0..spec.clients).map(|c| {
        let clients = clients.clone();
        let recorder = recorder.clone();
        let known = known.clone();
        let spec = spec.clone();
        tokio::spawn(async move {
            let mut rng =
                ChaCha8Rng::seed_from_u64(spec.seed.wrapping_mul(1_000).wrapping_add(c as u64));
            for _ in 0..per_client {
                if Instant::now() >= end {
                    break;
                }
                let client = clients.choose(&mut rng).expect("at least one client");
                one_call(
                    c,
                    client,
                    &mut rng,
                    &known,
                    &recorder,
                    spec.hot_identities,
                    spec.seed,
                )
                .await;
            }
        })
    });
    for w in futures::future::join_all(workers).await {
        if let Err(e) = w {
            eprintln!("a workload client panicked: {e}");
        }
    }
}

fn level(rng: &mut ChaCha8Rng, token: u64) -> Level {
    match rng.random_range(0..4) {
        0 => Level::Linearizable,
        1 => Level::Bounded {
            max_ms: *[200, 500, 1000].choose(rng).expect("non-empty"),
        },
        2 => Level::AtLeast { index: token },
        _ => Level::Local,
    }
}

fn consistency(level: Level) -> Consistency {
    match level {
        Level::Linearizable => Consistency::Linearizable,
        Level::Bounded { max_ms } => Consistency::Bounded(Duration::from_millis(max_ms)),
        Level::AtLeast { index } => Consistency::AtLeast(CommitToken(index)),
        Level::Local => Consistency::Local,
    }
}

/// A definite refusal (`Fail`), or an outcome the caller cannot know (`Info`).
fn failure(e: &Error) -> Outcome {
    let fail = |reason: &str| Outcome::Fail {
        error: reason.to_string(),
    };
    match e {
        Error::Revoked => fail("REVOKED"),
        Error::Suspended => fail("SUSPENDED"),
        Error::InvalidTransition(_) => fail("INVALID_TRANSITION"),
        Error::UnknownIdentity => fail("UNKNOWN_IDENTITY"),
        Error::Duplicate {
            kind: DuplicateKind::Document,
            ..
        } => fail("DUPLICATE"),
        Error::Duplicate { .. } => fail("DUPLICATE_BIOMETRIC"),
        Error::RequestIdReused(_) => fail("REQUEST_ID_REUSED"),
        Error::PermissionDenied(_) => fail("PERMISSION_DENIED"),
        Error::InvalidInput(_) => fail("INVALID_INPUT"),
        other => Outcome::Info {
            error: other.to_string(),
        },
    }
}

async fn one_call(
    client_no: u32,
    client: &Client,
    rng: &mut ChaCha8Rng,
    known: &Known,
    recorder: &Recorder,
    hot: usize,
    seed: u64,
) {
    let picked = known.pick(rng, hot);
    let roll = rng.random_range(0..100);
    let authority = Authority::national("chaos-authority");
    let reason = *Reason::ALL.choose(rng).expect("non-empty");
    let call = match (&picked, roll) {
        (None, _) | (_, 0..15) => {
            let n = known.next_document.fetch_add(1, Ordering::Relaxed);
            let enrollment = Enrollment::new(
                "ON",
                &format!("CHAOS{seed}D{n}"),
                Authority::provincial("chaos-registrar", "ON"),
            );
            Call::Enroll {
                request_id: enrollment.request_id.as_str().to_string(),
                document: enrollment.document_number.clone(),
            }
        }
        (Some((id, _)), 15..22) => Call::Revoke {
            request_id: quorumid_client::RequestId::random().as_str().to_string(),
            identity: id.clone(),
        },
        (Some((id, _)), 22..32) => Call::Suspend {
            request_id: quorumid_client::RequestId::random().as_str().to_string(),
            identity: id.clone(),
        },
        (Some((id, _)), 32..42) => Call::Reinstate {
            request_id: quorumid_client::RequestId::random().as_str().to_string(),
            identity: id.clone(),
        },
        (Some((id, token)), _) => Call::Verify {
            identity: id.clone(),
            level: level(rng, *token),
        },
    };
    let id = known.next_op.fetch_add(1, Ordering::Relaxed);
    let invoked_ns = recorder.now_ns();
    let outcome = match &call {
        Call::Enroll {
            request_id,
            document,
        } => {
            let enrollment = Enrollment::new(
                "ON",
                document,
                Authority::provincial("chaos-registrar", "ON"),
            )
            .request_id(quorumid_client::RequestId::new(request_id.clone()));
            match client.enroll(&enrollment).await {
                Ok(done) => {
                    known.wrote(&done.identity_id, done.token.index());
                    Outcome::Ok {
                        identity: Some(done.identity_id),
                        status: Some(crate::history::Status::Active),
                        index: done.token.index(),
                        node: None,
                        staleness_ms: None,
                    }
                }
                Err(e) => failure(&e),
            }
        }
        Call::Revoke {
            request_id,
            identity,
        }
        | Call::Suspend {
            request_id,
            identity,
        }
        | Call::Reinstate {
            request_id,
            identity,
        } => {
            let change = StatusChange::new(identity, reason, authority)
                .request_id(quorumid_client::RequestId::new(request_id.clone()));
            let answer = match call {
                Call::Revoke { .. } => client.revoke(&change).await,
                Call::Suspend { .. } => client.suspend(&change).await,
                _ => client.reinstate(&change).await,
            };
            match answer {
                Ok(done) => {
                    known.wrote(identity, done.token.index());
                    Outcome::Ok {
                        identity: None,
                        status: Some(done.status.into()),
                        index: done.token.index(),
                        node: None,
                        staleness_ms: None,
                    }
                }
                Err(e) => failure(&e),
            }
        }
        Call::Verify { identity, level } => {
            let options = VerifyOptions {
                consistency: Some(consistency(*level)),
                ..Default::default()
            };
            match client.verify_with(identity, options).await {
                Ok(v) => Outcome::Ok {
                    identity: None,
                    status: Some(v.status.into()),
                    index: v.facts.applied_index,
                    node: Some(v.facts.node_id),
                    staleness_ms: v.facts.staleness_bound.map(|d| d.as_millis() as u64),
                },
                Err(e) => failure(&e),
            }
        }
    };
    recorder.op(Op {
        id,
        client: client_no,
        call,
        invoked_ns,
        completed_ns: recorder.now_ns(),
        outcome,
    });
}
