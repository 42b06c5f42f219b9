//! Start-up time of a node with a large gallery (issue 4): the de-dup index is rebuilt
//! from the stored templates every time a node starts. This fills a real store (RocksDB,
//! sealed at rest, as a node writes it) through the state machine's own `apply`, then times
//! what a start does: open the store, open the state machine with the de-dup index, which
//! reads every identity's templates and indexes them.
//!
//! ```sh
//! cargo run --profile ci -p quorumid-node --example startup -- --faces 1000000
//! cargo run --profile ci -p quorumid-node --example startup -- --faces 0 --fingers 20000
//! ```
//!
//! `--faces N`: identities with one 128-d face embedding (random directions);
//! `--fingers N`: identities with one fingerprint record (FVC2002 DB1..DB4 B records in
//! turn, from `../shared/data`).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use openraft::storage::RaftStateMachine as _;
use openraft::{CommittedLeaderId, EntryPayload};
use quorumid_node::biometrics::DedupIndex;
use quorumid_node::raft::state_machine::StateMachine;
use quorumid_node::raft::store::Store;
use quorumid_node::raft::{Entry, LogId};
use quorumid_node::registry::{
    Authority, Command, DocumentKey, IdentityId, Proposal, Request, Scope, Template, TemplateFormat,
};
use quorumid_storage_format::Sealer;
use rand::{Rng as _, SeedableRng as _};

/// Enrollments a log entry carries (the leader batches this many and more under load).
const PER_ENTRY: usize = 256;

fn argument(name: &str) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or(0, |v| v.parse().expect("a count"))
}

fn main() -> anyhow::Result<()> {
    let (faces, fingers) = (argument("--faces"), argument("--fingers"));
    let records: Vec<Vec<u8>> = if fingers > 0 {
        let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/fvc2002");
        let mut records = Vec::new();
        for db in ["DB1_B", "DB2_B", "DB3_B", "DB4_B"] {
            let mut paths: Vec<_> = std::fs::read_dir(data.join(db))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "iso"))
                .collect();
            paths.sort();
            for p in paths {
                records.push(std::fs::read(p)?);
            }
        }
        records
    } else {
        Vec::new()
    };
    let dir = tempfile::tempdir()?;
    let sealer = || Sealer::new((1, [5; 32]), []);
    let runtime = tokio::runtime::Runtime::new()?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);

    let filled = Instant::now();
    {
        let store = Store::open(&dir.path().join("db"), sealer())?;
        let mut machine = StateMachine::open(store, &dir.path().join("snapshots"), None)?;
        let templates = |n: usize, rng: &mut rand::rngs::StdRng| {
            if n < faces {
                let values: Vec<f32> = (0..128).map(|_| rng.random::<f32>() - 0.5).collect();
                let norm = values.iter().map(|v| v * v).sum::<f32>().sqrt();
                Template {
                    format: TemplateFormat::FaceEmbeddingF32,
                    model_id: "sface".into(),
                    data: values
                        .iter()
                        .flat_map(|v| (v / norm).to_le_bytes())
                        .collect(),
                }
            } else {
                Template {
                    format: TemplateFormat::Iso19794_2_2005,
                    model_id: "secugen".into(),
                    data: records[(n - faces) % records.len()].clone(),
                }
            }
        };
        let total = faces + fingers;
        let mut index = 0;
        for start in (0..total).step_by(PER_ENTRY) {
            let batch: Vec<Command> = (start..(start + PER_ENTRY).min(total))
                .map(|n| {
                    let mut document = [0u8; 32];
                    document[..8].copy_from_slice(&(n as u64).to_be_bytes());
                    let request = Request {
                        request_id: format!("startup-{n}"),
                        proposal: Proposal::Enroll {
                            home_province: "ON".into(),
                            document: DocumentKey(document),
                            document_key_id: [1; 8],
                            templates: vec![templates(n, &mut rng)],
                            authority: Authority {
                                id: "registrar".into(),
                                scope: Scope::National,
                            },
                            holder_key: None,
                        },
                    };
                    Command {
                        fingerprint: request.fingerprint(),
                        request,
                        at_unix_ms: 1_000,
                        new_identity: Some(IdentityId::from_random(rng.random())),
                    }
                })
                .collect();
            index += 1;
            let entry = Entry {
                log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
                payload: EntryPayload::Normal(batch),
            };
            runtime.block_on(machine.apply([entry]))?;
        }
    }
    println!(
        "filled: {faces} identities with a face, {fingers} with a fingerprint, in {:.1} s",
        filled.elapsed().as_secs_f64()
    );

    // What a start does, timed in its two parts.
    let opened = Instant::now();
    let store = Store::open(&dir.path().join("db"), sealer())?;
    let open_store = opened.elapsed();
    let index = Arc::new(DedupIndex::default());
    let rebuilt = Instant::now();
    let _machine = StateMachine::open(store, &dir.path().join("snapshots"), Some(index.clone()))?;
    let rebuild = rebuilt.elapsed();
    println!(
        "start: store opened in {:.2} s; de-dup index rebuilt in {:.2} s ({} faces, {} finger views)",
        open_store.as_secs_f64(),
        rebuild.as_secs_f64(),
        index.faces(),
        index.fingers()
    );
    Ok(())
}
