//! Runs one call against the cluster: the best node first, the next one when a node cannot
//! answer, all within the caller's deadline.
//!
//! A round tries each candidate once, in order; with hedging, a read also goes to the next
//! candidate when the current one has not answered after the hedge delay, and the first answer
//! wins. Rounds repeat (with a short backoff) until the deadline, since stale nodes catch up and
//! elections end. An answer from the registry (unknown id, duplicate, ...) ends the call at
//! once: another node would say the same.

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::error::{self, Error, Failure, Failures, RetryKind, Verdict};
use crate::nodes::{Node, NodeSet};

/// How one call is run.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan {
    pub deadline: Duration,
    pub attempt_timeout: Duration,
    /// Reads only: also ask the next node after this long.
    pub hedge_after: Option<Duration>,
    /// Writes and membership changes: the leader first, and follow leader hints.
    pub to_leader: bool,
    /// Try one round only (for calls that must not be retried blindly).
    pub one_round: bool,
}

const FIRST_BACKOFF: Duration = Duration::from_millis(25);
const MAX_BACKOFF: Duration = Duration::from_millis(400);

type Attempt<T> = BoxFuture<'static, (Arc<Node>, Result<Result<T, tonic::Status>, ()>)>;

/// Runs `op` (one attempt at one node, with its timeout) according to `plan`.
pub(crate) async fn run<T, F, Fut>(nodes: &NodeSet, plan: Plan, op: F) -> Result<T, Error>
where
    T: Send + 'static,
    F: Fn(Channel, Duration) -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>> + Send + 'static,
{
    let deadline = Instant::now() + plan.deadline;
    let mut backoff = FIRST_BACKOFF;
    let mut last_round = Failures::default();
    loop {
        let mut failures = Failures::default();
        match round(nodes, plan, deadline, &op, &mut failures).await? {
            Some(answer) => return Ok(answer),
            None => {
                last_round = if failures.0.is_empty() {
                    last_round
                } else {
                    failures
                }
            }
        }
        let now = Instant::now();
        if plan.one_round || now + backoff >= deadline {
            let timed_out = last_round.0.is_empty()
                || last_round.0.iter().all(|f| f.kind == RetryKind::Timeout);
            return Err(error::exhausted(
                last_round,
                timed_out.then_some(plan.deadline),
            ));
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One pass over the candidates: `Some(answer)`, `None` when every candidate failed in a way
/// that another try may not, or the registry's final answer as an error.
async fn round<T, F, Fut>(
    nodes: &NodeSet,
    plan: Plan,
    deadline: Instant,
    op: &F,
    failures: &mut Failures,
) -> Result<Option<T>, Error>
where
    T: Send + 'static,
    F: Fn(Channel, Duration) -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>> + Send + 'static,
{
    let mut queue: VecDeque<Arc<Node>> = nodes.ranked().into();
    if plan.to_leader
        && let Some(leader) = nodes.leader().and_then(|a| nodes.at(&a).ok())
    {
        queue.retain(|n| n.addr != leader.addr);
        queue.push_front(leader);
    }
    let mut tried: HashSet<String> = HashSet::new();
    let mut inflight: FuturesUnordered<Attempt<T>> = FuturesUnordered::new();
    let launch = |node: Arc<Node>, tried: &mut HashSet<String>| -> Option<Attempt<T>> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        tried.insert(node.addr.clone());
        let timeout = left.min(plan.attempt_timeout);
        let call = op(node.channel.clone(), timeout);
        Some(Box::pin(async move {
            let result = tokio::time::timeout(timeout, call).await.map_err(|_| ());
            (node, result)
        }))
    };
    let Some(first) = queue.pop_front().and_then(|n| launch(n, &mut tried)) else {
        return Ok(None);
    };
    inflight.push(first);

    loop {
        let hedge_delay = plan
            .hedge_after
            .filter(|_| !queue.is_empty() && inflight.len() < 2);
        let hedge = async move {
            match hedge_delay {
                Some(delay) => tokio::time::sleep(delay).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some((node, result)) = inflight.next() => {
                let (kind, message) = match result {
                    Ok(Ok(answer)) => return Ok(Some(answer)),
                    Ok(Err(status)) => match error::classify(&status) {
                        Verdict::Final(e) => return Err(e),
                        Verdict::Retry { kind, message, leader_addr } => {
                            if let Some(addr) = leader_addr {
                                nodes.set_leader(&addr);
                                if plan.to_leader
                                    && !tried.contains(&addr)
                                    && let Ok(leader) = nodes.at(&addr)
                                {
                                    queue.retain(|n| n.addr != addr);
                                    queue.push_front(leader);
                                }
                            }
                            (kind, message)
                        }
                    },
                    Err(()) => (RetryKind::Timeout, "no answer within the attempt timeout".into()),
                };
                node.failed(kind);
                if matches!(kind, RetryKind::Unreachable | RetryKind::Timeout | RetryKind::ShuttingDown) {
                    nodes.forget_leader(&node.addr);
                }
                failures.0.push(Failure { node: node.addr.clone(), kind, message });
                if inflight.is_empty() {
                    match queue.pop_front().and_then(|n| launch(n, &mut tried)) {
                        Some(next) => inflight.push(next),
                        None => return Ok(None),
                    }
                }
            }
            _ = hedge => {
                if let Some(next) = queue.pop_front().and_then(|n| launch(n, &mut tried)) {
                    inflight.push(next);
                }
            }
        }
    }
}
