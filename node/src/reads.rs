//! Read consistency: the freshness watermark and the gate every read passes (DESIGN.md 3).
//!
//! In the background each node runs read-index rounds: it notes its monotonic time `t0`,
//! asks the leader for a read index `r` (the leader confirms its leadership with a quorum,
//! openraft `get_read_log_id`), and once it has applied `r` it knows its state holds every
//! write acknowledged before `t0`. That `t0` is the watermark; `now - t0` bounds staleness. No
//! clocks are compared across nodes.
//!
//! Rounds run every `interval`, and at once when a linearizable read is waiting: every such
//! read that arrived before a round started is answered by that round (batched read index).

use std::sync::Arc;
use std::time::Duration;

use quorumid_proto::v1::ReadIndexRequest;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tracing::Instrument as _;

use crate::raft::network::{Peers, call_peer};
use crate::raft::{NodeId, Raft};

/// A proven freshness: the state holds every write acknowledged before `since`.
#[derive(Clone, Copy, Debug)]
pub struct Watermark {
    pub since: Instant,
    pub read_index: u64,
}

/// The consistency a read asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Linearizable,
    Bounded(Duration),
    AtLeast(u64),
    Local,
}

/// Why a node cannot answer at the level asked. The client should try another node.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "this node cannot prove it is fresher than {max_ms} ms (watermark age: {}{})",
        age_text(*.age_ms),
        if *.leader_known { "" } else { "; no leader known" }
    )]
    Stale {
        max_ms: u64,
        age_ms: Option<u64>,
        leader_known: bool,
    },
    #[error("this node has applied index {applied}, not yet {wanted}")]
    Behind { applied: u64, wanted: u64 },
    #[error("the node is shutting down")]
    ShuttingDown,
}

fn age_text(age_ms: Option<u64>) -> String {
    age_ms.map_or_else(|| "never proven".to_string(), |ms| format!("{ms} ms"))
}

/// Settings of the read path.
#[derive(Clone, Copy, Debug)]
pub struct ReadSettings {
    /// Time between background read-index rounds.
    pub interval: Duration,
    /// The longest a read waits for a round or for its index to be applied.
    pub max_wait: Duration,
    /// The longest one round waits for the leader or for its own apply.
    pub round_timeout: Duration,
}

impl Default for ReadSettings {
    fn default() -> ReadSettings {
        ReadSettings {
            interval: Duration::from_millis(100),
            max_wait: Duration::from_secs(2),
            round_timeout: Duration::from_secs(1),
        }
    }
}

/// The node's freshness watermark and read gate.
pub struct Freshness {
    node_id: NodeId,
    raft: Raft,
    peers: Arc<Peers>,
    settings: ReadSettings,
    watermark: watch::Sender<Option<Watermark>>,
    wake: Notify,
}

impl Freshness {
    /// Starts the background rounds; they stop when the returned handle's last clone drops
    /// or when Raft shuts down.
    pub fn start(
        node_id: NodeId,
        raft: Raft,
        peers: Arc<Peers>,
        settings: ReadSettings,
    ) -> Arc<Freshness> {
        let freshness = Arc::new(Freshness {
            node_id,
            raft,
            peers,
            settings,
            watermark: watch::channel(None).0,
            wake: Notify::new(),
        });
        let weak = Arc::downgrade(&freshness);
        let rounds = async move {
            loop {
                let Some(this) = weak.upgrade() else { return };
                if this.raft.metrics().borrow().running_state.is_err() {
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(this.settings.interval) => {}
                    _ = this.wake.notified() => {}
                }
                if let Err(e) = this.round().await {
                    tracing::debug!(error = %e, "read-index round failed");
                }
            }
        };
        tokio::spawn(rounds.in_current_span());
        freshness
    }

    /// The current watermark's age, if freshness was ever proven.
    pub fn age(&self) -> Option<Duration> {
        self.watermark.borrow().map(|w| w.since.elapsed())
    }

    async fn round(&self) -> Result<(), String> {
        let t0 = Instant::now();
        let read_index = self.read_index().await?;
        self.raft
            .wait(Some(self.settings.round_timeout))
            .applied_index_at_least(Some(read_index), "freshness round")
            .await
            .map_err(|e| format!("applying up to the read index: {e}"))?;
        self.watermark.send_if_modified(|current| {
            let newer = current.is_none_or(|w| w.since < t0);
            if newer {
                *current = Some(Watermark {
                    since: t0,
                    read_index,
                });
            }
            newer
        });
        Ok(())
    }

    async fn read_index(&self) -> Result<u64, String> {
        let (leader, node) = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow();
            let leader = metrics.current_leader.ok_or("no leader")?;
            let node = metrics
                .membership_config
                .membership()
                .get_node(&leader)
                .cloned();
            (leader, node)
        };
        if leader == self.node_id {
            let (read_log_id, _) = self
                .raft
                .get_read_log_id()
                .await
                .map_err(|e| e.to_string())?;
            return Ok(read_log_id.map_or(0, |l| l.index));
        }
        let node = node.ok_or("leader is not in the membership")?;
        let mut client = self
            .peers
            .client(leader, &node.raft_addr)
            .map_err(|e| e.to_string())?;
        let answer = call_peer(
            "ReadIndex",
            leader,
            self.settings.round_timeout,
            client.read_index(ReadIndexRequest {}),
        )
        .await
        .map_err(|e| e.to_string())?;
        Ok(answer.read_index)
    }

    /// Waits until this node may answer a read at `level`, or says why it may not.
    pub async fn clear(&self, level: Level) -> Result<(), Refusal> {
        match level {
            Level::Local => Ok(()),
            Level::AtLeast(wanted) => {
                let waited = self
                    .raft
                    .wait(Some(self.settings.max_wait))
                    .applied_index_at_least(Some(wanted), "read at least")
                    .await;
                match waited {
                    Ok(_) => Ok(()),
                    Err(openraft::metrics::WaitError::ShuttingDown) => Err(Refusal::ShuttingDown),
                    Err(openraft::metrics::WaitError::Timeout(..)) => Err(Refusal::Behind {
                        applied: self.applied_index(),
                        wanted,
                    }),
                }
            }
            Level::Bounded(max) => {
                let fresh = |w: &Option<Watermark>| w.is_some_and(|w| w.since.elapsed() <= max);
                if fresh(&self.watermark.borrow()) {
                    return Ok(());
                }
                // A round may be about to land: wait for one, but never past the bound itself.
                self.wake.notify_one();
                let wait = max.min(self.settings.max_wait);
                self.wait_for(wait, fresh)
                    .await
                    .map_err(|()| self.refusal(max))
            }
            Level::Linearizable => {
                let arrival = Instant::now();
                self.wake.notify_one();
                let after_arrival = |w: &Option<Watermark>| w.is_some_and(|w| w.since >= arrival);
                self.wait_for(self.settings.max_wait, after_arrival)
                    .await
                    .map_err(|()| self.refusal(Duration::ZERO))
            }
        }
    }

    async fn wait_for(
        &self,
        timeout: Duration,
        done: impl Fn(&Option<Watermark>) -> bool,
    ) -> Result<(), ()> {
        let mut rx = self.watermark.subscribe();
        match tokio::time::timeout(timeout, rx.wait_for(|w| done(w))).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(()),
        }
    }

    fn refusal(&self, max: Duration) -> Refusal {
        Refusal::Stale {
            max_ms: max.as_millis() as u64,
            age_ms: self.age().map(|a| a.as_millis() as u64),
            leader_known: self.raft.metrics().borrow().current_leader.is_some(),
        }
    }

    pub fn applied_index(&self) -> u64 {
        self.raft
            .metrics()
            .borrow()
            .last_applied
            .map_or(0, |l| l.index)
    }
}
