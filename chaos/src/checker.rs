//! The checks a run must pass, over its [`History`] and the [`FinalState`] read from every node
//! after every fault was healed. Each check says what it proves and lists its violations (the
//! first few, with the op ids to look up in the history file).
//!
//! 1. `acknowledged-writes-everywhere`: every acknowledged enrollment is known, and every
//!    acknowledged revocation is REVOKED, on every node; every node holds the same status for
//!    every identity (no write is half-applied).
//! 2. `request-ids-applied-once`: a record's history holds at most as many events of a kind as
//!    calls of that kind were made (retries applied once); every acknowledged change is there;
//!    no enrollment of a fresh document is refused as a duplicate.
//! 3. `linearizable`: per identity, writes and `LINEARIZABLE` reads have a linearization
//!    ([`crate::linearizability`]), ending in the state every node holds.
//! 4. `revocation-fresh`: a read at `LINEARIZABLE` started after a revocation was acknowledged,
//!    at `AT_LEAST(i)` with `i` at or past its commit index, or at `BOUNDED`/`LOCAL` started
//!    more than the answer's stated staleness after the acknowledgement, says REVOKED (and
//!    likewise never UNKNOWN for an acknowledged enrollment); `BOUNDED(max)` answers state a
//!    staleness of at most `max`; `AT_LEAST(i)` answers reflect index `i` or later.
//! 5. `one-leader-per-term`: no two nodes reported being leader in the same term.
//! 6. `converged`: every node reached the same applied index and state digest.
//! 7. `no-crashes`: no node exited except when the nemesis killed it.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::history::{Call, History, Level, Op, Outcome, Status};
use crate::linearizability;

/// What one node holds once the run is over.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeFinal {
    pub node: u64,
    pub applied_index: u64,
    pub digest: String,
    /// The status of every identity the run touched, read locally at this node.
    pub statuses: BTreeMap<String, Status>,
}

/// Counts of a record's history events by kind (ENROLLED, SUSPENDED, REINSTATED, REVOKED).
pub type EventCounts = BTreeMap<String, u64>;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalState {
    pub nodes: Vec<NodeFinal>,
    /// Per identity, its record's history as the leader holds it.
    pub events: BTreeMap<String, EventCounts>,
    /// Nodes found exited without the nemesis having killed them, with what was seen.
    pub unexpected_exits: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    pub name: String,
    pub passed: bool,
    /// How many things it looked at (identities, reads, terms, ...).
    pub checked: usize,
    /// The violations, the first few in full.
    pub violations: Vec<String>,
}

/// At most this many violations are kept per check.
const SHOWN: usize = 10;

struct Check {
    name: &'static str,
    checked: usize,
    violations: Vec<String>,
    total: usize,
}

impl Check {
    fn new(name: &'static str) -> Check {
        Check {
            name,
            checked: 0,
            violations: Vec::new(),
            total: 0,
        }
    }

    fn fail(&mut self, message: String) {
        self.total += 1;
        if self.violations.len() < SHOWN {
            self.violations.push(message);
        }
    }

    fn done(mut self) -> CheckResult {
        if self.total > self.violations.len() {
            let more = self.total - self.violations.len();
            self.violations.push(format!("... and {more} more"));
        }
        CheckResult {
            name: self.name.to_string(),
            passed: self.total == 0,
            checked: self.checked,
            violations: self.violations,
        }
    }
}

/// Runs every check.
pub fn check(history: &History, last: &FinalState) -> Vec<CheckResult> {
    let by_identity = by_identity(&history.ops);
    vec![
        writes_everywhere(history, last),
        applied_once(history, &by_identity, last),
        linearizable(&by_identity, last),
        revocation_fresh(history),
        one_leader_per_term(history),
        converged(last),
        no_crashes(last),
    ]
}

fn by_identity(ops: &[Op]) -> BTreeMap<&str, Vec<&Op>> {
    let mut map: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in ops {
        if let Some(id) = op.identity() {
            map.entry(id).or_default().push(op);
        }
    }
    map
}

/// The status every node agrees on, if they agree and hold it.
fn agreed_status(last: &FinalState, identity: &str) -> Option<Status> {
    let mut seen = last.nodes.iter().map(|n| n.statuses.get(identity).copied());
    let first = seen.next()??;
    seen.all(|s| s == Some(first)).then_some(first)
}

fn writes_everywhere(history: &History, last: &FinalState) -> CheckResult {
    let mut check = Check::new("acknowledged-writes-everywhere");
    if last.nodes.is_empty() {
        check.fail("no node's final state was read".into());
    }
    for op in history.ops.iter().filter(|o| o.acknowledged()) {
        let Some(identity) = op.identity() else {
            continue;
        };
        let want = match op.call {
            Call::Enroll { .. } => None,
            Call::Revoke { .. } => Some(Status::Revoked),
            _ => continue,
        };
        check.checked += 1;
        for node in &last.nodes {
            let have = node.statuses.get(identity).copied();
            let lost = match want {
                Some(status) => have != Some(status),
                None => matches!(have, None | Some(Status::Unknown)),
            };
            if lost {
                check.fail(format!(
                    "op {} ({} acknowledged at index {}): node {} holds {:?}",
                    op.id,
                    op.call.name(),
                    op.index().unwrap_or(0),
                    node.node,
                    have
                ));
            }
        }
    }
    let identities: std::collections::BTreeSet<&String> =
        last.nodes.iter().flat_map(|n| n.statuses.keys()).collect();
    for identity in identities {
        let statuses: Vec<(u64, Option<Status>)> = last
            .nodes
            .iter()
            .map(|n| (n.node, n.statuses.get(identity).copied()))
            .collect();
        if statuses.windows(2).any(|w| w[0].1 != w[1].1) {
            check.fail(format!(
                "nodes disagree on an identity's status: {statuses:?}"
            ));
        }
    }
    check.done()
}

fn applied_once(
    history: &History,
    by_identity: &BTreeMap<&str, Vec<&Op>>,
    last: &FinalState,
) -> CheckResult {
    let mut check = Check::new("request-ids-applied-once");
    for op in &history.ops {
        if let (Call::Enroll { .. }, Outcome::Fail { error }) = (&op.call, &op.outcome)
            && error == "DUPLICATE"
        {
            check.fail(format!(
                "op {}: the enrollment of a fresh document was refused as a duplicate \
                 (a retry applied twice?)",
                op.id
            ));
        }
    }
    for (identity, ops) in by_identity {
        let Some(events) = last.events.get(*identity) else {
            check.fail(format!(
                "no record history was read for an identity of op {}",
                ops[0].id
            ));
            continue;
        };
        check.checked += 1;
        let kinds = [
            ("ENROLLED", "enroll"),
            ("REVOKED", "revoke"),
            ("SUSPENDED", "suspend"),
            ("REINSTATED", "reinstate"),
        ];
        for (event, call) in kinds {
            let have = events.get(event).copied().unwrap_or(0);
            let of_kind = || ops.iter().filter(|o| o.call.name() == call);
            let may = of_kind()
                .filter(|o| o.acknowledged() || o.unknown())
                .count() as u64;
            let must = of_kind().filter(|o| o.acknowledged()).count() as u64;
            if have > may || have < must {
                check.fail(format!(
                    "identity of op {}: {have} {event} events, but {must} acknowledged and \
                     {may} possibly applied {call} calls",
                    ops[0].id
                ));
            }
        }
    }
    check.done()
}

fn linearizable(by_identity: &BTreeMap<&str, Vec<&Op>>, last: &FinalState) -> CheckResult {
    let mut check = Check::new("linearizable");
    for (identity, ops) in by_identity {
        check.checked += 1;
        match linearizability::check(ops, agreed_status(last, identity)) {
            linearizability::Verdict::Linearizable => {}
            linearizability::Verdict::NotLinearizable { ops } => check.fail(format!(
                "no linearization of the identity's writes and LINEARIZABLE reads (and the final \
                 state) explains their answers; ops {ops:?}"
            )),
            linearizability::Verdict::TooLarge { ops } => check.fail(format!(
                "an identity has {ops} operations, more than the checker's {}; shorten the run",
                linearizability::MAX_OPS
            )),
        }
    }
    check.done()
}

/// A write that every read must see once it is old enough: a revocation (REVOKED) or an
/// enrollment (not UNKNOWN).
struct Landmark<'a> {
    op: &'a Op,
    acked_ns: u64,
    index: u64,
    revocation: bool,
}

fn revocation_fresh(history: &History) -> CheckResult {
    let mut check = Check::new("revocation-fresh");
    let mut landmarks: HashMap<&str, Vec<Landmark>> = HashMap::new();
    for op in history.ops.iter().filter(|o| o.acknowledged()) {
        let revocation = match op.call {
            Call::Revoke { .. } => true,
            Call::Enroll { .. } => false,
            _ => continue,
        };
        if let (Some(identity), Some(index)) = (op.identity(), op.index()) {
            landmarks.entry(identity).or_default().push(Landmark {
                op,
                acked_ns: op.completed_ns,
                index,
                revocation,
            });
        }
    }
    for read in &history.ops {
        let (
            Call::Verify { identity, level },
            Outcome::Ok {
                status,
                index,
                staleness_ms,
                node,
                ..
            },
        ) = (&read.call, &read.outcome)
        else {
            continue;
        };
        check.checked += 1;
        let status = status.unwrap_or(Status::Unknown);
        let where_ = format!("op {} ({level:?} read at node {node:?})", read.id);
        // The answer's own promises.
        match *level {
            Level::Bounded { max_ms } => match staleness_ms {
                Some(s) if *s <= max_ms => {}
                other => check.fail(format!(
                    "{where_}: stated staleness {other:?} ms, more than the {max_ms} ms asked"
                )),
            },
            Level::AtLeast { index: min } if *index < min => check.fail(format!(
                "{where_}: reflects index {index}, before the {min} asked"
            )),
            _ => {}
        }
        for landmark in landmarks.get(identity.as_str()).into_iter().flatten() {
            let must_see = match *level {
                Level::Linearizable => read.invoked_ns > landmark.acked_ns,
                Level::AtLeast { index: min } => min >= landmark.index,
                // The stated bound is whole milliseconds: allow one more for its rounding.
                Level::Bounded { .. } | Level::Local => staleness_ms.is_some_and(|s| {
                    read.invoked_ns > landmark.acked_ns.saturating_add((s + 1) * 1_000_000)
                }),
            };
            let sees = if landmark.revocation {
                status == Status::Revoked
            } else {
                status != Status::Unknown
            };
            if must_see && !sees {
                check.fail(format!(
                    "{where_}: answered {status:?} although op {} ({}) was acknowledged {} ms \
                     before the read began (commit index {}, stated staleness {:?} ms)",
                    landmark.op.id,
                    landmark.op.call.name(),
                    (read.invoked_ns.saturating_sub(landmark.acked_ns)) / 1_000_000,
                    landmark.index,
                    staleness_ms
                ));
            }
        }
    }
    check.done()
}

fn one_leader_per_term(history: &History) -> CheckResult {
    let mut check = Check::new("one-leader-per-term");
    let mut leaders: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for sample in history.roles.iter().filter(|r| r.leader) {
        let nodes = leaders.entry(sample.term).or_default();
        if !nodes.contains(&sample.node) {
            nodes.push(sample.node);
        }
    }
    check.checked = leaders.len();
    for (term, nodes) in leaders {
        if nodes.len() > 1 {
            check.fail(format!(
                "term {term}: nodes {nodes:?} each reported being leader"
            ));
        }
    }
    check.done()
}

fn converged(last: &FinalState) -> CheckResult {
    let mut check = Check::new("converged");
    check.checked = last.nodes.len();
    if let Some(first) = last.nodes.first() {
        for node in &last.nodes[1..] {
            if node.applied_index != first.applied_index || node.digest != first.digest {
                check.fail(format!(
                    "node {} at index {} digest {} but node {} at index {} digest {}",
                    node.node,
                    node.applied_index,
                    node.digest,
                    first.node,
                    first.applied_index,
                    first.digest
                ));
            }
        }
    }
    check.done()
}

fn no_crashes(last: &FinalState) -> CheckResult {
    let mut check = Check::new("no-crashes");
    check.checked = last.nodes.len();
    for exit in &last.unexpected_exits {
        check.fail(exit.clone());
    }
    check.done()
}

#[cfg(test)]
mod tests {
    //! Hand-made histories: a clean one passes every check; each corruption is caught by the
    //! check meant for it.

    use super::*;
    use crate::history::RoleSample;

    const MS: u64 = 1_000_000;

    fn ok(
        identity: Option<&str>,
        status: Option<Status>,
        index: u64,
        stale: Option<u64>,
    ) -> Outcome {
        Outcome::Ok {
            identity: identity.map(str::to_string),
            status,
            index,
            node: Some(1),
            staleness_ms: stale,
        }
    }

    fn op(id: u64, call: Call, invoked_ms: u64, completed_ms: u64, outcome: Outcome) -> Op {
        Op {
            id,
            client: 0,
            call,
            invoked_ns: invoked_ms * MS,
            completed_ns: completed_ms * MS,
            outcome,
        }
    }

    fn verify(level: Level) -> Call {
        Call::Verify {
            identity: "X".into(),
            level,
        }
    }

    /// Enroll X (index 5), revoke it (index 9), then reads at every level that see it.
    fn clean() -> (History, FinalState) {
        let ops = vec![
            op(
                1,
                Call::Enroll {
                    request_id: "e1".into(),
                    document: "D1".into(),
                },
                0,
                10,
                ok(Some("X"), None, 5, None),
            ),
            op(
                2,
                verify(Level::Linearizable),
                20,
                25,
                ok(None, Some(Status::Active), 5, Some(0)),
            ),
            op(
                3,
                Call::Revoke {
                    request_id: "r1".into(),
                    identity: "X".into(),
                },
                30,
                40,
                ok(None, Some(Status::Revoked), 9, None),
            ),
            op(
                4,
                verify(Level::Linearizable),
                50,
                55,
                ok(None, Some(Status::Revoked), 9, Some(0)),
            ),
            op(
                5,
                verify(Level::AtLeast { index: 9 }),
                60,
                65,
                ok(None, Some(Status::Revoked), 9, Some(3)),
            ),
            // Stale but within its stated bound: started 5 ms after the ack, bound 100 ms.
            op(
                6,
                verify(Level::Bounded { max_ms: 500 }),
                45,
                47,
                ok(None, Some(Status::Active), 5, Some(100)),
            ),
            op(
                7,
                verify(Level::Bounded { max_ms: 500 }),
                400,
                405,
                ok(None, Some(Status::Revoked), 9, Some(100)),
            ),
        ];
        let roles = vec![
            RoleSample {
                at_ns: 0,
                node: 1,
                term: 1,
                leader: true,
                applied_index: 5,
            },
            RoleSample {
                at_ns: 50 * MS,
                node: 2,
                term: 2,
                leader: true,
                applied_index: 9,
            },
        ];
        let node = |id| NodeFinal {
            node: id,
            applied_index: 9,
            digest: "abc".into(),
            statuses: BTreeMap::from([("X".to_string(), Status::Revoked)]),
        };
        let last = FinalState {
            nodes: vec![node(1), node(2), node(3)],
            events: BTreeMap::from([(
                "X".to_string(),
                BTreeMap::from([("ENROLLED".to_string(), 1), ("REVOKED".to_string(), 1)]),
            )]),
            unexpected_exits: vec![],
        };
        (
            History {
                ops,
                nemesis: vec![],
                roles,
            },
            last,
        )
    }

    fn failed(results: &[CheckResult]) -> Vec<&str> {
        results
            .iter()
            .filter(|r| !r.passed)
            .map(|r| r.name.as_str())
            .collect()
    }

    #[test]
    fn a_clean_history_passes_every_check() {
        let (history, last) = clean();
        let results = check(&history, &last);
        assert!(failed(&results).is_empty(), "{results:#?}");
        assert_eq!(results.len(), 7);
    }

    #[test]
    fn a_lost_revocation_is_caught() {
        let (history, mut last) = clean();
        last.nodes[2]
            .statuses
            .insert("X".to_string(), Status::Active);
        let results = check(&history, &last);
        let failed = failed(&results);
        assert!(
            failed.contains(&"acknowledged-writes-everywhere"),
            "{results:#?}"
        );
        // Nodes no longer agree, so the final state is not checked as a read; the digest
        // check is separate (left equal here on purpose).
        assert!(!failed.contains(&"converged"));
    }

    #[test]
    fn a_stale_linearizable_read_is_caught() {
        let (mut history, last) = clean();
        history.ops[3].outcome = ok(None, Some(Status::Active), 5, Some(0));
        let failed_now = failed(&check(&history, &last))
            .into_iter()
            .map(str::to_string)
            .collect::<Vec<_>>();
        assert!(failed_now.contains(&"revocation-fresh".to_string()));
        assert!(failed_now.contains(&"linearizable".to_string()));
    }

    #[test]
    fn a_bounded_read_past_its_bound_is_caught() {
        let (mut history, last) = clean();
        // Started 360 ms after the revocation was acknowledged, stated 100 ms staleness,
        // answered ACTIVE.
        history.ops[6].outcome = ok(None, Some(Status::Active), 5, Some(100));
        assert_eq!(failed(&check(&history, &last)), ["revocation-fresh"]);
        // A bound larger than asked is a violation by itself.
        let (mut history, last) = clean();
        history.ops[6].outcome = ok(None, Some(Status::Revoked), 9, Some(900));
        assert_eq!(failed(&check(&history, &last)), ["revocation-fresh"]);
    }

    #[test]
    fn an_at_least_read_behind_its_token_is_caught() {
        let (mut history, last) = clean();
        history.ops[4].outcome = ok(None, Some(Status::Active), 5, Some(3));
        assert_eq!(failed(&check(&history, &last)), ["revocation-fresh"]);
    }

    #[test]
    fn a_write_applied_twice_is_caught() {
        let (history, mut last) = clean();
        last.events
            .get_mut("X")
            .unwrap()
            .insert("REVOKED".to_string(), 2);
        assert_eq!(
            failed(&check(&history, &last)),
            ["request-ids-applied-once"]
        );
    }

    #[test]
    fn two_leaders_in_one_term_are_caught() {
        let (mut history, last) = clean();
        history.roles.push(RoleSample {
            at_ns: 60 * MS,
            node: 3,
            term: 2,
            leader: true,
            applied_index: 9,
        });
        assert_eq!(failed(&check(&history, &last)), ["one-leader-per-term"]);
    }

    #[test]
    fn diverged_digests_and_crashes_are_caught() {
        let (history, mut last) = clean();
        last.nodes[1].digest = "def".into();
        last.unexpected_exits
            .push("node 2 exited with code 101".into());
        assert_eq!(failed(&check(&history, &last)), ["converged", "no-crashes"]);
    }
}
