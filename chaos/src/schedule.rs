//! The fault schedule, drawn from a seed: which faults, on which nodes, when, and for how long.
//! The same seed, node count and duration give the same schedule, so a failing run is replayed
//! with `--seed`. (What the cluster does in between — elections, timings — is not replayed.)
//! Faults whose target is only known at run time (the leader) or that depend on the
//! membership at that moment carry a drawn number that the nemesis resolves.

use std::fmt;
use std::time::Duration;

use rand::seq::SliceRandom as _;
use rand::{Rng as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// The kinds of fault, as named on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Isolate,
    IsolateLeader,
    Halves,
    Bridge,
    MajoritiesRing,
    OneWay,
    Kill,
    KillLeader,
    Pause,
    RollingRestart,
    Membership,
}

impl Kind {
    pub const ALL: [Kind; 11] = [
        Kind::Isolate,
        Kind::IsolateLeader,
        Kind::Halves,
        Kind::Bridge,
        Kind::MajoritiesRing,
        Kind::OneWay,
        Kind::Kill,
        Kind::KillLeader,
        Kind::Pause,
        Kind::RollingRestart,
        Kind::Membership,
    ];

    pub const PARTITIONS: [Kind; 6] = [
        Kind::Isolate,
        Kind::IsolateLeader,
        Kind::Halves,
        Kind::Bridge,
        Kind::MajoritiesRing,
        Kind::OneWay,
    ];
}

/// One fault, with its targets drawn.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Fault {
    Isolate {
        node: u64,
    },
    IsolateLeader,
    Halves {
        order: Vec<u64>,
    },
    Bridge {
        order: Vec<u64>,
    },
    MajoritiesRing {
        order: Vec<u64>,
    },
    OneWay {
        from: u64,
        to: u64,
    },
    Kill {
        node: u64,
    },
    KillLeader,
    Pause {
        node: u64,
    },
    RollingRestart {
        order: Vec<u64>,
    },
    /// Promote a learner and demote a voter (both picked with `pick` from the membership of
    /// the moment) while `isolated` is cut off from the others.
    Membership {
        pick: u64,
        isolated: u64,
    },
}

impl Fault {
    pub fn kind(&self) -> Kind {
        match self {
            Fault::Isolate { .. } => Kind::Isolate,
            Fault::IsolateLeader => Kind::IsolateLeader,
            Fault::Halves { .. } => Kind::Halves,
            Fault::Bridge { .. } => Kind::Bridge,
            Fault::MajoritiesRing { .. } => Kind::MajoritiesRing,
            Fault::OneWay { .. } => Kind::OneWay,
            Fault::Kill { .. } => Kind::Kill,
            Fault::KillLeader => Kind::KillLeader,
            Fault::Pause { .. } => Kind::Pause,
            Fault::RollingRestart { .. } => Kind::RollingRestart,
            Fault::Membership { .. } => Kind::Membership,
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Isolate { node } => write!(f, "isolate node {node}"),
            Fault::IsolateLeader => write!(f, "isolate the leader"),
            Fault::Halves { order } => write!(
                f,
                "halves {:?} | {:?}",
                &order[..order.len() / 2],
                &order[order.len() / 2..]
            ),
            Fault::Bridge { order } => write!(f, "bridge {order:?} (middle node talks to both)"),
            Fault::MajoritiesRing { order } => write!(f, "majorities ring {order:?}"),
            Fault::OneWay { from, to } => write!(f, "one-way: node {to} drops node {from}"),
            Fault::Kill { node } => write!(f, "kill -9 node {node}, then restart it"),
            Fault::KillLeader => write!(f, "kill -9 the leader, then restart it"),
            Fault::Pause { node } => write!(f, "pause node {node}"),
            Fault::RollingRestart { order } => write!(f, "rolling restart {order:?}"),
            Fault::Membership { isolated, .. } => write!(
                f,
                "promote a learner and demote a voter while node {isolated} is isolated"
            ),
        }
    }
}

/// A fault, when it starts (from the start of the workload) and how long it is held before
/// its heal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub start_ms: u64,
    pub hold_ms: u64,
    pub fault: Fault,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    pub seed: u64,
    pub steps: Vec<Step>,
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "schedule (seed {}):", self.seed)?;
        for s in &self.steps {
            writeln!(
                f,
                "  {:>6.1}s  hold {:>4.1}s  {}",
                s.start_ms as f64 / 1000.0,
                s.hold_ms as f64 / 1000.0,
                s.fault
            )?;
        }
        Ok(())
    }
}

/// Draws a schedule for `nodes` (every node id; learners included) over `duration`, using
/// only `kinds` (in a seeded order, repeated). The first two and the last two seconds are
/// quiet, so the run starts healthy and ends healed.
pub fn generate(seed: u64, nodes: &[u64], duration: Duration, kinds: &[Kind]) -> Schedule {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut steps = Vec::new();
    if kinds.is_empty() || nodes.len() < 2 {
        return Schedule { seed, steps };
    }
    let end = (duration.as_millis() as u64).saturating_sub(2_000);
    let mut at = 2_000;
    let mut order: Vec<Kind> = Vec::new();
    loop {
        let hold = rng.random_range(1_500..=5_000);
        if at + hold > end {
            break;
        }
        if order.is_empty() {
            order = kinds.to_vec();
            order.shuffle(&mut rng);
        }
        let kind = order.pop().expect("refilled above");
        let mut shuffled = nodes.to_vec();
        shuffled.shuffle(&mut rng);
        let one = shuffled[0];
        let fault = match kind {
            Kind::Isolate => Fault::Isolate { node: one },
            Kind::IsolateLeader => Fault::IsolateLeader,
            Kind::Halves => Fault::Halves { order: shuffled },
            Kind::Bridge => Fault::Bridge { order: shuffled },
            Kind::MajoritiesRing => Fault::MajoritiesRing { order: shuffled },
            Kind::OneWay => Fault::OneWay {
                from: shuffled[0],
                to: shuffled[1],
            },
            Kind::Kill => Fault::Kill { node: one },
            Kind::KillLeader => Fault::KillLeader,
            Kind::Pause => Fault::Pause { node: one },
            Kind::RollingRestart => Fault::RollingRestart { order: shuffled },
            Kind::Membership => Fault::Membership {
                pick: rng.random(),
                isolated: one,
            },
        };
        steps.push(Step {
            start_ms: at,
            hold_ms: hold,
            fault,
        });
        at += hold + rng.random_range(1_000..=3_000);
    }
    Schedule { seed, steps }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_one_schedule() {
        let nodes = [1, 2, 3, 4];
        let a = generate(7, &nodes, Duration::from_secs(60), &Kind::ALL);
        let b = generate(7, &nodes, Duration::from_secs(60), &Kind::ALL);
        let c = generate(8, &nodes, Duration::from_secs(60), &Kind::ALL);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.steps.len() >= 5, "{a}");
    }

    #[test]
    fn steps_stay_inside_the_run_and_use_the_kinds_given() {
        let s = generate(
            3,
            &[1, 2, 3],
            Duration::from_secs(40),
            &[Kind::Kill, Kind::Pause],
        );
        assert!(!s.steps.is_empty());
        for (i, step) in s.steps.iter().enumerate() {
            assert!(step.start_ms >= 2_000 && step.start_ms + step.hold_ms <= 38_000);
            assert!(matches!(
                step.fault,
                Fault::Kill { .. } | Fault::Pause { .. }
            ));
            if let Some(next) = s.steps.get(i + 1) {
                assert!(
                    next.start_ms > step.start_ms + step.hold_ms,
                    "faults do not overlap"
                );
            }
        }
        // Every kind given comes up before any repeats.
        let first_two: Vec<bool> = s.steps[..2]
            .iter()
            .map(|st| matches!(st.fault, Fault::Kill { .. }))
            .collect();
        assert_ne!(first_two[0], first_two[1]);
    }
}
