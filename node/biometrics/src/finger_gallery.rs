//! Exact 1:N search over enrolled fingerprints, for enrollment de-dup.
//!
//! Each enrolled finger view is a row: the key of the identity it belongs to, its finger
//! position (ISO 19794-2 code 1..=10, or 0 when the record does not say), and its MCC
//! template. A probe finger is compared, with the full [`Matcher::compare`], against every
//! row it may be the same finger as: the same position, or either position unknown (the
//! rule of the node's 1:1 match). The search reports the best row at or above the
//! threshold, so it never misses one: there is no candidate step to miss it in.
//!
//! That exactness has a price that grows with the gallery: one MCC comparison (about 48 µs
//! on one core of the machine in BENCHMARKS.md) per probe finger and eligible row, split
//! over [`FingerGallery::threads`] threads. A de-dup search stops at the first row at or
//! above the threshold, so a duplicate is found sooner than a newcomer is cleared.
//!
//! Memory per row: the MCC template (cylinder bits and the pairwise geometry of its
//! minutiae: about 20 KiB for 40 minutiae) and 16 bytes.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::identification::ImpostorTail;
use crate::mcc::{Matcher, MccTemplate};

/// The default de-dup threshold (MCC score, one finger): the lowest that keeps the false
/// match rate of the four FVC2002 B databases' within-database impostor pairs, pooled
/// (11,520), at or under 1e-4 (`tests/fvc.rs` checks it). Stricter than the 1:1 threshold
/// since an enrollment is compared with every enrolled finger.
pub const DEDUP_THRESHOLD: f32 = 0.037;

/// The upper tail of one-finger impostor scores, fitted (`identification`) to the same
/// pooled FVC2002 pairs at [`TAIL_FRACTION`](crate::identification::TAIL_FRACTION)
/// (`tests/fvc.rs` checks it): heavier than exponential. The de-dup threshold rises along it
/// as the gallery grows.
pub const IMPOSTOR_TAIL: ImpostorTail = ImpostorTail {
    from: 0.02044,
    fraction: 0.01997,
    scale: 0.002687,
    shape: 0.0900,
};

/// The finger position of a record that does not name one.
pub const UNKNOWN_POSITION: u8 = 0;

/// A gallery row found by a search.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FingerMatch {
    pub key: u64,
    /// The finger position of the matching row.
    pub position: u8,
    pub score: f32,
}

/// One enrolled finger view.
#[derive(Debug, Clone)]
struct Row {
    key: u64,
    position: u8,
    template: MccTemplate,
}

/// Every enrolled finger view; see the module documentation.
#[derive(Debug, Clone)]
pub struct FingerGallery {
    matcher: Matcher,
    rows: Vec<Row>,
    threads: usize,
    /// [`COMPARISONS_PER_THREAD`], lowered by the unit tests to split small galleries.
    comparisons_per_thread: usize,
}

/// Fewest comparisons worth a thread of its own (a thread costs tens of microseconds to
/// start; 64 comparisons take about 3 ms).
const COMPARISONS_PER_THREAD: usize = 64;

/// May a probe finger at `probe` be the same finger as a row at `row`?
pub fn same_finger(probe: u8, row: u8) -> bool {
    probe == UNKNOWN_POSITION || row == UNKNOWN_POSITION || probe == row
}

impl FingerGallery {
    /// An empty gallery whose templates come from `matcher` (rows must be made with the
    /// same parameters). Two search threads where the machine has two cores or more.
    pub fn new(matcher: Matcher) -> Self {
        FingerGallery {
            matcher,
            rows: Vec::new(),
            threads: std::thread::available_parallelism().map_or(1, |n| n.get().min(2)),
            comparisons_per_thread: COMPARISONS_PER_THREAD,
        }
    }

    /// The matcher the rows were made with.
    pub fn matcher(&self) -> &Matcher {
        &self.matcher
    }

    /// Threads one search may use.
    pub fn threads(&self) -> usize {
        self.threads
    }

    pub fn set_threads(&mut self, threads: usize) {
        self.threads = threads.max(1);
    }

    /// Adds one finger view of the identity `key` (an identity may have several rows).
    pub fn insert(&mut self, key: u64, position: u8, template: MccTemplate) {
        self.rows.push(Row {
            key,
            position,
            template,
        });
    }

    /// Removes every row of `key`; returns how many there were.
    pub fn remove(&mut self, key: u64) -> usize {
        let before = self.rows.len();
        self.rows.retain(|r| r.key != key);
        before - self.rows.len()
    }

    /// Finger views held.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn clear(&mut self) {
        self.rows.clear();
    }

    /// The best row scoring at least `threshold` against one of `probe`'s fingers
    /// (`(position, template)` pairs) at a position it may share, or `None` if no row does.
    /// With `first_only`, the search stops at the first such row instead of the best (what
    /// a de-dup decision needs).
    pub fn search(
        &self,
        probe: &[(u8, MccTemplate)],
        threshold: f32,
        first_only: bool,
    ) -> Option<FingerMatch> {
        let comparisons = self.rows.len() * probe.len();
        let threads = self
            .threads
            .min(comparisons / self.comparisons_per_thread)
            .clamp(1, self.rows.len().max(1));
        let found = AtomicBool::new(false);
        let scan = |part: &[Row]| -> Option<FingerMatch> {
            let mut best: Option<FingerMatch> = None;
            for row in part {
                if first_only && found.load(Ordering::Relaxed) {
                    break;
                }
                for (position, template) in probe {
                    if !same_finger(*position, row.position) {
                        continue;
                    }
                    let score = self.matcher.compare(template, &row.template);
                    if score >= threshold && best.is_none_or(|b| score > b.score) {
                        best = Some(FingerMatch {
                            key: row.key,
                            position: row.position,
                            score,
                        });
                        found.store(true, Ordering::Relaxed);
                    }
                }
            }
            best
        };
        let chunk = self.rows.len().div_ceil(threads).max(1);
        let parts: Vec<&[Row]> = self.rows.chunks(chunk).collect();
        let results: Vec<Option<FingerMatch>> = if parts.len() <= 1 {
            parts.iter().map(|p| scan(p)).collect()
        } else {
            let scan = &scan;
            std::thread::scope(|s| {
                let handles: Vec<_> = parts[1..]
                    .iter()
                    .map(|p| s.spawn(move || scan(p)))
                    .collect();
                let mut results = vec![scan(parts[0])];
                results.extend(
                    handles
                        .into_iter()
                        .map(|h| h.join().expect("a finger scan thread panicked")),
                );
                results
            })
        };
        // Ties go to the earlier row, so the answer does not depend on the split.
        results
            .into_iter()
            .flatten()
            .fold(None, |best, m| match best {
                Some(b) if b.score >= m.score => Some(b),
                _ => Some(m),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcc::MinutiaPoint;

    /// A finger of `n` minutiae drawn from `seed` (a small xorshift; no rand dependency).
    fn finger(m: &Matcher, seed: u64, n: usize) -> MccTemplate {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f32 / (1u64 << 53) as f32
        };
        let points: Vec<MinutiaPoint> = (0..n)
            .map(|_| MinutiaPoint {
                x: 60.0 + next() * 260.0,
                y: 60.0 + next() * 300.0,
                direction: next() * std::f32::consts::TAU,
            })
            .collect();
        m.template(&points)
    }

    #[test]
    fn positions_filter_and_unknown_matches_any() {
        assert!(same_finger(2, 2));
        assert!(!same_finger(2, 7));
        assert!(same_finger(0, 7));
        assert!(same_finger(7, 0));
    }

    #[test]
    fn finds_the_same_finger_only_at_a_shared_position_and_agrees_across_splits() {
        let m = Matcher::default();
        let mut g = FingerGallery::new(m.clone());
        g.comparisons_per_thread = 1;
        for key in 0..40u64 {
            g.insert(key, (key % 10 + 1) as u8, finger(&m, key, 40));
        }
        let target = finger(&m, 17, 40);
        let exact = m.compare(&target, &target);
        assert!(exact > 0.5, "a finger against itself scores {exact}");
        // Row 17 is position 8: found there, and from an unknown position.
        for position in [8, UNKNOWN_POSITION] {
            let hit = g.search(&[(position, target.clone())], exact, false);
            assert_eq!(hit.map(|h| h.key), Some(17));
        }
        assert_eq!(g.search(&[(3, target.clone())], exact, false), None);
        // Every split gives the same best row and score.
        let probe = [(UNKNOWN_POSITION, finger(&m, 1_000, 40))];
        let best = (0..g.len() as u64)
            .map(|k| m.compare(&probe[0].1, &finger(&m, k, 40)))
            .fold(0f32, f32::max);
        for threads in 1..=3 {
            g.set_threads(threads);
            let hit = g.search(&probe, best, false).expect("the best row");
            assert_eq!(hit.score, best);
            assert!(g.search(&probe, best + 1e-6, false).is_none());
        }
        assert_eq!(g.remove(17), 1);
        assert_eq!(g.search(&[(8, target)], exact, true), None);
    }
}
