//! Identity-level fingerprint scores from several fingers.
//!
//! An identity enrols up to one template per finger position (ISO codes 1..=10; 0, unknown
//! position, is kept apart and only ever compared with another unknown position). Two
//! identities are compared finger by finger over the positions both have; the per-finger
//! MCC scores are fused by a [`FusionRule`]:
//!
//! - [`FusionRule::Mean`] (the default, the "sum rule"): the average of the per-finger
//!   scores. It stays on the same `[0, 1]` scale as one finger, so one calibrated threshold
//!   serves any number of fingers, and it needs evidence from every shared finger.
//! - [`FusionRule::Max`]: the best per-finger score; tolerant of one bad capture, but its
//!   false-match rate grows with the number of fingers, so calibrate it separately.
//!
//! With no position in common there is nothing to compare: the result is `None`, never 0.

use crate::mcc::{Matcher, MccTemplate};

/// How per-finger scores become one score; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FusionRule {
    #[default]
    Mean,
    Max,
}

impl FusionRule {
    /// Fuses per-finger scores; `None` for an empty list.
    pub fn fuse(self, scores: &[f32]) -> Option<f32> {
        if scores.is_empty() {
            return None;
        }
        Some(match self {
            FusionRule::Mean => scores.iter().sum::<f32>() / scores.len() as f32,
            FusionRule::Max => scores.iter().copied().fold(f32::MIN, f32::max),
        })
    }
}

/// The fingerprint templates of one identity, at most one per finger position.
#[derive(Debug, Clone, Default)]
pub struct FingerSet {
    fingers: Vec<(u8, MccTemplate)>,
}

impl FingerSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the template of finger `position`, returning the one it replaces.
    pub fn insert(&mut self, position: u8, template: MccTemplate) -> Option<MccTemplate> {
        match self.fingers.iter_mut().find(|(p, _)| *p == position) {
            Some(slot) => Some(std::mem::replace(&mut slot.1, template)),
            None => {
                self.fingers.push((position, template));
                self.fingers.sort_by_key(|(p, _)| *p);
                None
            }
        }
    }

    pub fn get(&self, position: u8) -> Option<&MccTemplate> {
        self.fingers
            .iter()
            .find(|(p, _)| *p == position)
            .map(|(_, t)| t)
    }

    /// Finger positions held, ascending.
    pub fn positions(&self) -> impl Iterator<Item = u8> + '_ {
        self.fingers.iter().map(|(p, _)| *p)
    }

    pub fn len(&self) -> usize {
        self.fingers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fingers.is_empty()
    }

    /// Per-finger scores over the shared positions, `(position, score)`.
    pub fn finger_scores(&self, other: &FingerSet, matcher: &Matcher) -> Vec<(u8, f32)> {
        self.fingers
            .iter()
            .filter_map(|(p, a)| other.get(*p).map(|b| (*p, matcher.compare(a, b))))
            .collect()
    }

    /// Fused score over the shared positions; `None` if there is none.
    pub fn compare(&self, other: &FingerSet, matcher: &Matcher, rule: FusionRule) -> Option<f32> {
        let scores: Vec<f32> = self
            .finger_scores(other, matcher)
            .into_iter()
            .map(|(_, s)| s)
            .collect();
        rule.fuse(&scores)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        let mean = FusionRule::Mean.fuse(&[0.2, 0.4]).unwrap_or(0.0);
        assert!((mean - 0.3).abs() < 1e-6);
        assert_eq!(FusionRule::Max.fuse(&[0.2, 0.4]), Some(0.4));
        assert_eq!(FusionRule::Mean.fuse(&[]), None);
    }

    #[test]
    fn no_shared_finger_is_none() {
        let m = Matcher::default();
        let mut a = FingerSet::new();
        let mut b = FingerSet::new();
        a.insert(1, m.template(&[]));
        b.insert(2, m.template(&[]));
        assert!(a.compare(&b, &m, FusionRule::Mean).is_none());
        assert!(a.insert(1, m.template(&[])).is_some());
        assert_eq!(a.len(), 1);
    }
}
