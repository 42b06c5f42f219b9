//! Fast failover when the leader's process dies.
//!
//! openraft 0.9.25 lets a follower campaign only once `election_timeout_max` (its *leader
//! lease*) plus a random election timeout have passed since the leader last reached it, and a
//! voter refuses every vote while its own lease runs (`Engine::handle_vote_req`). With the
//! default timings (heartbeat 100 ms, election timeout 300–600 ms) a crashed leader would be
//! replaced 0.9–1.2 s after its last heartbeat.
//!
//! A process that dies is noticed far sooner: the kernel closes its connections. So each
//! voter that follows a leader holds one `Raft.WatchLeader` stream open to it (the stream
//! carries nothing; the leader ends it when it stops leading). When the stream breaks, the
//! voter waits until no voter's lease can still hold: `election_timeout_max` past the last
//! AppendEntries it received itself, plus a margin (half a heartbeat) for voters that heard
//! the last heartbeat a little later, plus a stagger by rank (lowest id first) so that two
//! voters do not split the vote. Then, if no AppendEntries arrived meanwhile and no other
//! leader is known, it starts an election (`trigger().elect()`).
//!
//! Nothing here weakens safety: every vote is still granted by openraft's own rules (lease
//! expired, higher term, log at least as up to date); this only chooses the moment to ask. A
//! stream that breaks while the leader lives costs nothing: the leader's heartbeats keep
//! arriving and the voter stands down. A leader cut off by the network closes no connection;
//! openraft's own timers replace it, as before.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::Stream;
use openraft::ServerState;
use quorumid_proto::v1::{WatchLeaderEvent, WatchLeaderRequest};
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::Status;

use crate::config::RaftSettings;
use crate::raft::network::Peers;
use crate::raft::{NodeId, Raft};

/// The server side's stream type: it ends when the node stops leading.
pub type LeaderStream = Pin<Box<dyn Stream<Item = Result<WatchLeaderEvent, Status>> + Send>>;

/// When this node last received an AppendEntries from a leader (monotonic clock), recorded by
/// the Raft service.
#[derive(Default)]
pub struct LeaderContact {
    last: Mutex<Option<Instant>>,
}

impl LeaderContact {
    /// Records an AppendEntries that a leader sent and this node accepted as from its leader.
    pub fn heard(&self) {
        *self.last.lock().expect("leader contact lock poisoned") = Some(Instant::now());
    }

    fn last(&self) -> Option<Instant> {
        *self.last.lock().expect("leader contact lock poisoned")
    }
}

/// The leader's side of `WatchLeader`: a stream that stays open, silent, while this node
/// leads, and ends when it stops leading or the node begins to stop (`stopping`; an open
/// stream would otherwise keep its connection, and the node's storage, alive past shutdown).
pub fn serve(raft: &Raft, mut stopping: watch::Receiver<bool>) -> Result<LeaderStream, Status> {
    let mut metrics = raft.metrics();
    if metrics.borrow().state != ServerState::Leader {
        return Err(Status::failed_precondition(
            "this node is not the leader; watch the current one",
        ));
    }
    let ended = async move {
        tokio::select! {
            _ = metrics.wait_for(|m| m.state != ServerState::Leader) => {}
            _ = stopping.wait_for(|stop| *stop) => {}
        }
    };
    Ok(Box::pin(futures::StreamExt::filter_map(
        futures::stream::once(ended),
        |()| async { None },
    )))
}

/// The timings the watcher works with, from the node's Raft settings.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub heartbeat: Duration,
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
}

impl From<&RaftSettings> for Timing {
    fn from(raft: &RaftSettings) -> Timing {
        Timing {
            heartbeat: Duration::from_millis(raft.heartbeat_ms),
            election_timeout_min: Duration::from_millis(raft.election_timeout_min_ms),
            election_timeout_max: Duration::from_millis(raft.election_timeout_max_ms),
        }
    }
}

impl Timing {
    /// How long after its last AppendEntries a voter of rank `rank` may campaign: every
    /// voter's lease has run out by then, the lowest ranks first.
    fn campaign_after(&self, rank: usize) -> Duration {
        let stagger = self.election_timeout_min / 2;
        self.election_timeout_max + self.heartbeat / 2 + stagger * rank as u32
    }
}

/// Runs on every node until the node stops: watches the leader while this node is a voter
/// that follows one, and campaigns early when the leader's process is gone.
pub async fn run(raft: Raft, peers: Arc<Peers>, contact: Arc<LeaderContact>, timing: Timing) {
    let mut metrics = raft.metrics();
    loop {
        let followed = {
            let m = metrics.borrow_and_update();
            let membership = m.membership_config.membership();
            let voter = membership.voter_ids().any(|v| v == m.id);
            match m.current_leader {
                Some(leader) if voter && leader != m.id && m.state == ServerState::Follower => {
                    membership
                        .get_node(&leader)
                        .map(|node| (leader, node.raft_addr.clone(), m.current_term))
                }
                _ => None,
            }
        };
        let Some((leader, addr, term)) = followed else {
            if metrics.changed().await.is_err() {
                return; // Raft stopped.
            }
            continue;
        };
        match watch(&peers, leader, &addr).await {
            Watch::Ended => {}
            Watch::Broken => {
                let broken_at = Instant::now();
                campaign_if_gone(&raft, &contact, timing, leader, term, broken_at).await;
            }
        }
        // Not in a tight loop, whatever happened.
        tokio::time::sleep(timing.heartbeat).await;
    }
}

enum Watch {
    /// The leader ended the stream (it stopped leading) or refused it (it does not lead).
    Ended,
    /// The stream or the connection broke: the leader's process may be gone.
    Broken,
}

async fn watch(peers: &Peers, leader: NodeId, addr: &str) -> Watch {
    let Ok(mut client) = peers.client(leader, addr) else {
        // Cut by a test's fault switch: as silent as a network partition.
        return Watch::Ended;
    };
    let mut stream = match client.watch_leader(WatchLeaderRequest {}).await {
        Ok(stream) => stream.into_inner(),
        Err(status) if status.code() == tonic::Code::FailedPrecondition => return Watch::Ended,
        Err(_) => return Watch::Broken,
    };
    loop {
        match stream.message().await {
            Ok(Some(WatchLeaderEvent {})) => {}
            Ok(None) => return Watch::Ended,
            Err(_) => return Watch::Broken,
        }
    }
}

/// After the watch on `leader` broke at `broken_at`: waits until every voter's lease has run
/// out and campaigns, unless the leader shows it is alive or another leader turns up first.
async fn campaign_if_gone(
    raft: &Raft,
    contact: &LeaderContact,
    timing: Timing,
    leader: NodeId,
    term: u64,
    broken_at: Instant,
) {
    let mut metrics = raft.metrics();
    // Voters other than the leader with a lower id than this node's go first.
    let rank = {
        let m = metrics.borrow();
        m.membership_config
            .membership()
            .voter_ids()
            .filter(|v| *v != leader && *v < m.id)
            .count()
    };
    let Some(last) = contact.last() else { return };
    let campaign_at = last + timing.campaign_after(rank);
    let still_leads = |m: &openraft::RaftMetrics<NodeId, crate::raft::NodeInfo>| {
        m.current_leader == Some(leader) && m.current_term == term
    };
    let changed = metrics.wait_for(|m| !still_leads(m));
    if let Ok(Ok(_)) = tokio::time::timeout_at(campaign_at, changed).await {
        return; // A new term or leader: openraft moved on by itself.
    }
    if contact.last() > Some(broken_at) {
        return; // The leader's AppendEntries still arrive: it lives.
    }
    if !still_leads(&raft.metrics().borrow()) {
        return;
    }
    tracing::info!(
        leader,
        rank,
        "the leader's connection broke and no AppendEntries came since; campaigning now that \
         every voter's leader lease has run out"
    );
    if let Err(e) = raft.trigger().elect().await {
        tracing::warn!(error = %e, "could not start an election");
    }
}
