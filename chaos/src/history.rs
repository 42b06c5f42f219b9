//! The history of a run: every client call with its invocation and completion times (on one
//! monotonic clock, nanoseconds since the run started), what the nemesis did and when, and
//! what each node said about its role. Written as JSON lines, one record per line, so a failing
//! run can be read and re-checked (`quorumid-chaos check FILE`).

use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// An identity's status as a read or a write answer reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    Active,
    Suspended,
    Revoked,
    Unknown,
}

impl From<quorumid_client::IdentityStatus> for Status {
    fn from(s: quorumid_client::IdentityStatus) -> Status {
        match s {
            quorumid_client::IdentityStatus::Active => Status::Active,
            quorumid_client::IdentityStatus::Suspended => Status::Suspended,
            quorumid_client::IdentityStatus::Revoked => Status::Revoked,
            quorumid_client::IdentityStatus::Unknown => Status::Unknown,
        }
    }
}

/// The consistency level a verification asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "level", rename_all = "snake_case")]
pub enum Level {
    Linearizable,
    Bounded { max_ms: u64 },
    AtLeast { index: u64 },
    Local,
}

/// What a call did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "snake_case")]
pub enum Call {
    /// A new identity for a document never used before in this run.
    Enroll {
        request_id: String,
        document: String,
    },
    Revoke {
        request_id: String,
        identity: String,
    },
    Suspend {
        request_id: String,
        identity: String,
    },
    Reinstate {
        request_id: String,
        identity: String,
    },
    Verify {
        identity: String,
        level: Level,
    },
}

impl Call {
    pub fn identity(&self) -> Option<&str> {
        match self {
            Call::Enroll { .. } => None,
            Call::Revoke { identity, .. }
            | Call::Suspend { identity, .. }
            | Call::Reinstate { identity, .. }
            | Call::Verify { identity, .. } => Some(identity),
        }
    }

    pub fn is_write(&self) -> bool {
        !matches!(self, Call::Verify { .. })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Call::Enroll { .. } => "enroll",
            Call::Revoke { .. } => "revoke",
            Call::Suspend { .. } => "suspend",
            Call::Reinstate { .. } => "reinstate",
            Call::Verify { .. } => "verify",
        }
    }
}

/// How a call ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Outcome {
    /// Acknowledged. Writes carry their commit index; reads what they saw and its facts.
    Ok {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        identity: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<Status>,
        index: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        node: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        staleness_ms: Option<u64>,
    },
    /// A definite answer from the registry that the write was not applied, and why
    /// (`REVOKED` when the identity was already revoked, `SUSPENDED`, `INVALID_TRANSITION`,
    /// `DUPLICATE_DOCUMENT`, ...). For reads: the read failed (it saw nothing).
    Fail { error: String },
    /// The outcome is not known (timeout, no quorum, unreachable): a write may or may not
    /// have been applied, at any time after its invocation.
    Info { error: String },
}

/// One client call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// Unique within the run, in invocation order per client.
    pub id: u64,
    pub client: u32,
    pub call: Call,
    pub invoked_ns: u64,
    pub completed_ns: u64,
    pub outcome: Outcome,
}

impl Op {
    pub fn acknowledged(&self) -> bool {
        matches!(self.outcome, Outcome::Ok { .. })
    }

    pub fn unknown(&self) -> bool {
        matches!(self.outcome, Outcome::Info { .. })
    }

    /// The identity the call concerns: the one it names, or the one an enrollment created.
    pub fn identity(&self) -> Option<&str> {
        match (&self.call, &self.outcome) {
            (Call::Enroll { .. }, Outcome::Ok { identity, .. }) => identity.as_deref(),
            (call, _) => call.identity(),
        }
    }

    /// The index a write committed at, or the index a read reflected.
    pub fn index(&self) -> Option<u64> {
        match self.outcome {
            Outcome::Ok { index, .. } => Some(index),
            _ => None,
        }
    }

    pub fn status(&self) -> Option<Status> {
        match self.outcome {
            Outcome::Ok { status, .. } => status,
            _ => None,
        }
    }
}

/// Something the nemesis did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NemesisEvent {
    pub at_ns: u64,
    /// `start` or `heal` (or `note`).
    pub phase: String,
    pub fault: String,
    /// Node ids it concerned.
    pub nodes: Vec<u64>,
    /// For a kill: the node was killed on purpose (so its exit is not a crash).
    #[serde(default)]
    pub killed: bool,
}

/// A node's own report of its role, sampled during the run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleSample {
    pub at_ns: u64,
    pub node: u64,
    pub term: u64,
    pub leader: bool,
    pub applied_index: u64,
}

/// One line of the history file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "snake_case")]
pub enum Record {
    Op(Op),
    Nemesis(NemesisEvent),
    Role(RoleSample),
}

/// Everything recorded in one run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    pub ops: Vec<Op>,
    pub nemesis: Vec<NemesisEvent>,
    pub roles: Vec<RoleSample>,
}

impl History {
    pub fn write_jsonl(&self, path: &Path) -> anyhow::Result<()> {
        let file = std::fs::File::create(path)
            .with_context(|| format!("creating history file {}", path.display()))?;
        let mut out = std::io::BufWriter::new(file);
        let mut records: Vec<(u64, Record)> = Vec::new();
        records.extend(
            self.ops
                .iter()
                .map(|o| (o.invoked_ns, Record::Op(o.clone()))),
        );
        records.extend(
            self.nemesis
                .iter()
                .map(|n| (n.at_ns, Record::Nemesis(n.clone()))),
        );
        records.extend(
            self.roles
                .iter()
                .map(|r| (r.at_ns, Record::Role(r.clone()))),
        );
        records.sort_by_key(|(t, _)| *t);
        for (_, record) in records {
            serde_json::to_writer(&mut out, &record)?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
        Ok(())
    }

    pub fn read_jsonl(path: &Path) -> anyhow::Result<History> {
        let file = std::fs::File::open(path)
            .with_context(|| format!("opening history file {}", path.display()))?;
        let mut history = History::default();
        for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let record: Record = serde_json::from_str(&line)
                .with_context(|| format!("{}: line {}", path.display(), n + 1))?;
            match record {
                Record::Op(op) => history.ops.push(op),
                Record::Nemesis(n) => history.nemesis.push(n),
                Record::Role(r) => history.roles.push(r),
            }
        }
        Ok(history)
    }
}

/// Where the workload, the nemesis and the role sampler record, concurrently.
#[derive(Debug)]
pub struct Recorder {
    start: Instant,
    history: Mutex<History>,
}

impl Recorder {
    pub fn new(start: Instant) -> Recorder {
        Recorder {
            start,
            history: Mutex::new(History::default()),
        }
    }

    /// Nanoseconds since the run started, on the monotonic clock.
    pub fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    fn with<T>(&self, f: impl FnOnce(&mut History) -> T) -> T {
        f(&mut self.history.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn op(&self, op: Op) {
        self.with(|h| h.ops.push(op));
    }

    pub fn nemesis(&self, phase: &str, fault: &str, nodes: &[u64], killed: bool) {
        let event = NemesisEvent {
            at_ns: self.now_ns(),
            phase: phase.to_string(),
            fault: fault.to_string(),
            nodes: nodes.to_vec(),
            killed,
        };
        self.with(|h| h.nemesis.push(event));
    }

    pub fn role(&self, sample: RoleSample) {
        self.with(|h| h.roles.push(sample));
    }

    pub fn snapshot(&self) -> History {
        self.with(|h| h.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_history_survives_its_file() {
        let history = History {
            ops: vec![Op {
                id: 1,
                client: 0,
                call: Call::Verify {
                    identity: "X".into(),
                    level: Level::Bounded { max_ms: 500 },
                },
                invoked_ns: 10,
                completed_ns: 20,
                outcome: Outcome::Ok {
                    identity: None,
                    status: Some(Status::Revoked),
                    index: 7,
                    node: Some(2),
                    staleness_ms: Some(40),
                },
            }],
            nemesis: vec![NemesisEvent {
                at_ns: 5,
                phase: "start".into(),
                fault: "kill".into(),
                nodes: vec![1],
                killed: true,
            }],
            roles: vec![RoleSample {
                at_ns: 15,
                node: 1,
                term: 3,
                leader: true,
                applied_index: 7,
            }],
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        history.write_jsonl(&path).unwrap();
        assert_eq!(History::read_jsonl(&path).unwrap(), history);
    }
}
