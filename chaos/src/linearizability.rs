//! A Wing–Gong linearizability search for one identity (as Knossos does it, in small): is
//! there an order of the identity's operations, each placed between its invocation and its
//! completion, in which the status model below gives every acknowledged answer?
//!
//! Included are the identity's writes (acknowledged, definitely refused, or of unknown
//! outcome) and its `LINEARIZABLE` reads. A write of unknown outcome may take effect at any
//! point after its invocation, or never. Other reads promise less and are checked elsewhere
//! ([`crate::checker`]).

use std::collections::HashSet;

use crate::history::{Call, Level, Op, Outcome, Status};

/// The registry's status machine (DESIGN.md section 4) for one identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    /// Not enrolled yet.
    Absent,
    Active,
    Suspended,
    Revoked,
}

impl State {
    fn as_status(self) -> Status {
        match self {
            State::Absent => Status::Unknown,
            State::Active => Status::Active,
            State::Suspended => Status::Suspended,
            State::Revoked => Status::Revoked,
        }
    }
}

/// What one operation does to the model, and the answer it gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Effect {
    Enroll,
    Revoke,
    Suspend,
    Reinstate,
    Read,
}

/// The model's answer for an effect in a state: the next state, or the refusal it gives.
fn step(state: State, effect: Effect) -> Result<State, &'static str> {
    use State::*;
    match (effect, state) {
        (Effect::Read, s) => Ok(s),
        (Effect::Enroll, Absent) => Ok(Active),
        (Effect::Enroll, _) => Err("DUPLICATE"),
        (_, Absent) => Err("UNKNOWN_IDENTITY"),
        (_, Revoked) => Err("REVOKED"),
        (Effect::Revoke, _) => Ok(Revoked),
        (Effect::Suspend, Active) => Ok(Suspended),
        (Effect::Suspend, Suspended) => Err("SUSPENDED"),
        (Effect::Reinstate, Suspended) => Ok(Active),
        (Effect::Reinstate, Active) => Err("INVALID_TRANSITION"),
    }
}

/// What an operation must observe when it is placed.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Expect {
    /// Applied: the transition must be allowed (and a read must see `Some(status)`).
    Applied(Option<Status>),
    /// Definitely refused with this reason: the model must refuse the same way.
    Refused(String),
    /// Unknown outcome: applied if allowed, or not at all.
    Maybe,
}

#[derive(Clone, Debug)]
struct Entry {
    effect: Effect,
    expect: Expect,
    invoked: u64,
    /// `u64::MAX` for writes of unknown outcome.
    completed: u64,
    op_id: u64,
}

/// The result of the search for one identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// No order explains the answers; the operations involved, as op ids.
    NotLinearizable {
        ops: Vec<u64>,
    },
    /// Too many operations for this checker (it says so rather than guess).
    TooLarge {
        ops: usize,
    },
}

/// The most operations checked for one identity (a bit set of this width).
pub const MAX_OPS: usize = 128;

fn entry(op: &Op) -> Option<Entry> {
    let effect = match &op.call {
        Call::Enroll { .. } => Effect::Enroll,
        Call::Revoke { .. } => Effect::Revoke,
        Call::Suspend { .. } => Effect::Suspend,
        Call::Reinstate { .. } => Effect::Reinstate,
        Call::Verify {
            level: Level::Linearizable,
            ..
        } => Effect::Read,
        Call::Verify { .. } => return None,
    };
    let (expect, completed) = match (&op.outcome, effect) {
        (Outcome::Ok { status, .. }, Effect::Read) => (Expect::Applied(*status), op.completed_ns),
        (Outcome::Ok { .. }, _) => (Expect::Applied(None), op.completed_ns),
        // A failed read saw nothing; a failed write was refused for a stated reason.
        (Outcome::Fail { .. }, Effect::Read) => return None,
        (Outcome::Fail { error }, _) => (Expect::Refused(error.clone()), op.completed_ns),
        (Outcome::Info { .. }, Effect::Read) => return None,
        (Outcome::Info { .. }, _) => (Expect::Maybe, u64::MAX),
    };
    Some(Entry {
        effect,
        expect,
        invoked: op.invoked_ns,
        completed,
        op_id: op.id,
    })
}

/// Checks the operations of one identity (enrollment included, if known). `final_status`, if
/// given, is what every node holds after the run: it is checked as a read after everything.
pub fn check(ops: &[&Op], final_status: Option<Status>) -> Verdict {
    let mut entries: Vec<Entry> = ops.iter().filter_map(|o| entry(o)).collect();
    // Refusals that the model never gives (permission, input) carry no information.
    entries.retain(|e| match &e.expect {
        Expect::Refused(reason) => [
            "DUPLICATE",
            "UNKNOWN_IDENTITY",
            "REVOKED",
            "SUSPENDED",
            "INVALID_TRANSITION",
        ]
        .contains(&reason.as_str()),
        _ => true,
    });
    // Without the enrollment, the identity starts enrolled (ACTIVE).
    let start = if entries.iter().any(|e| e.effect == Effect::Enroll) {
        State::Absent
    } else {
        State::Active
    };
    if let Some(status) = final_status {
        entries.push(Entry {
            effect: Effect::Read,
            expect: Expect::Applied(Some(status)),
            invoked: u64::MAX - 1,
            completed: u64::MAX - 1,
            op_id: u64::MAX,
        });
    }
    if entries.len() > MAX_OPS {
        return Verdict::TooLarge { ops: entries.len() };
    }
    entries.sort_by_key(|e| (e.invoked, e.completed));
    let must: u128 = entries
        .iter()
        .enumerate()
        .filter(|(_, e)| e.expect != Expect::Maybe)
        .fold(0, |m, (i, _)| m | (1u128 << i));
    let mut seen: HashSet<(u128, State)> = HashSet::new();
    if search(&entries, must, 0, start, &mut seen) {
        Verdict::Linearizable
    } else {
        Verdict::NotLinearizable {
            ops: entries
                .iter()
                .map(|e| e.op_id)
                .filter(|&id| id != u64::MAX)
                .collect(),
        }
    }
}

/// Depth-first: place one more operation among those that may come next.
fn search(
    entries: &[Entry],
    must: u128,
    done: u128,
    state: State,
    seen: &mut HashSet<(u128, State)>,
) -> bool {
    if done & must == must {
        return true;
    }
    if !seen.insert((done, state)) {
        return false;
    }
    // An operation may come next only if it was invoked before every pending operation
    // completed.
    let horizon = entries
        .iter()
        .enumerate()
        .filter(|(i, _)| done & (1u128 << i) == 0)
        .map(|(_, e)| e.completed)
        .min()
        .unwrap_or(u64::MAX);
    for (i, e) in entries.iter().enumerate() {
        let bit = 1u128 << i;
        if done & bit != 0 || e.invoked > horizon {
            continue;
        }
        let next = match (&e.expect, step(state, e.effect)) {
            (Expect::Applied(want), Ok(next)) => {
                if e.effect == Effect::Read && *want != Some(state.as_status()) {
                    continue;
                }
                next
            }
            (Expect::Applied(_), Err(_)) => continue,
            (Expect::Refused(reason), Err(got)) if got == reason => state,
            (Expect::Refused(_), _) => continue,
            (Expect::Maybe, Ok(next)) => next,
            // An unknown write the model refuses is the same as one never applied.
            (Expect::Maybe, Err(_)) => state,
        };
        if search(entries, must, done | bit, next, seen) {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(id: u64, call: Call, invoked: u64, completed: u64, outcome: Outcome) -> Op {
        Op {
            id,
            client: 0,
            call,
            invoked_ns: invoked,
            completed_ns: completed,
            outcome,
        }
    }

    fn ok(status: Option<Status>) -> Outcome {
        Outcome::Ok {
            identity: None,
            status,
            index: 1,
            node: None,
            staleness_ms: None,
        }
    }

    fn revoke() -> Call {
        Call::Revoke {
            request_id: "r".into(),
            identity: "X".into(),
        }
    }

    fn read() -> Call {
        Call::Verify {
            identity: "X".into(),
            level: Level::Linearizable,
        }
    }

    #[test]
    fn a_read_after_an_acknowledged_revocation_must_see_it() {
        let ops = [
            op(1, revoke(), 0, 10, ok(Some(Status::Revoked))),
            op(2, read(), 20, 30, ok(Some(Status::Active))),
        ];
        let refs: Vec<&Op> = ops.iter().collect();
        assert!(matches!(
            check(&refs, None),
            Verdict::NotLinearizable { .. }
        ));
    }

    #[test]
    fn concurrent_operations_may_go_either_way() {
        let ops = [
            op(1, revoke(), 0, 30, ok(Some(Status::Revoked))),
            op(2, read(), 10, 20, ok(Some(Status::Active))),
            op(3, read(), 15, 25, ok(Some(Status::Revoked))),
        ];
        let refs: Vec<&Op> = ops.iter().collect();
        assert_eq!(check(&refs, Some(Status::Revoked)), Verdict::Linearizable);
    }

    #[test]
    fn an_unknown_write_may_apply_late_or_never() {
        let unknown = Outcome::Info {
            error: "timeout".into(),
        };
        let ops = [
            op(1, revoke(), 0, 10, unknown.clone()),
            op(2, read(), 20, 30, ok(Some(Status::Active))),
            op(3, read(), 40, 50, ok(Some(Status::Revoked))),
        ];
        let refs: Vec<&Op> = ops.iter().collect();
        assert_eq!(check(&refs, Some(Status::Revoked)), Verdict::Linearizable);
        // ... but once seen, it cannot be unseen.
        let ops = [
            op(1, revoke(), 0, 10, unknown),
            op(2, read(), 20, 30, ok(Some(Status::Revoked))),
            op(3, read(), 40, 50, ok(Some(Status::Active))),
        ];
        let refs: Vec<&Op> = ops.iter().collect();
        assert!(matches!(
            check(&refs, None),
            Verdict::NotLinearizable { .. }
        ));
    }

    #[test]
    fn refusals_must_match_the_state() {
        // A second revocation refused as REVOKED is consistent; a suspension refused as
        // SUSPENDED while the identity is ACTIVE is not.
        let ops = [
            op(1, revoke(), 0, 10, ok(Some(Status::Revoked))),
            op(
                2,
                revoke(),
                20,
                30,
                Outcome::Fail {
                    error: "REVOKED".into(),
                },
            ),
        ];
        let refs: Vec<&Op> = ops.iter().collect();
        assert_eq!(check(&refs, Some(Status::Revoked)), Verdict::Linearizable);
        let ops = [op(
            1,
            Call::Suspend {
                request_id: "s".into(),
                identity: "X".into(),
            },
            0,
            10,
            Outcome::Fail {
                error: "SUSPENDED".into(),
            },
        )];
        let refs: Vec<&Op> = ops.iter().collect();
        assert!(matches!(
            check(&refs, None),
            Verdict::NotLinearizable { .. }
        ));
    }

    #[test]
    fn the_final_state_must_be_explained() {
        // Nobody ever suspended it, yet every node holds SUSPENDED.
        let ops = [op(1, read(), 0, 10, ok(Some(Status::Active)))];
        let refs: Vec<&Op> = ops.iter().collect();
        assert!(matches!(
            check(&refs, Some(Status::Suspended)),
            Verdict::NotLinearizable { .. }
        ));
    }
}
