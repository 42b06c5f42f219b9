//! Error rates from genuine and impostor score lists: EER, FNMR at a given FMR, and the
//! threshold that meets a named FMR target.
//!
//! Scores are similarities: a comparison *matches* when `score >= threshold`.
//! FMR(t) is the share of impostor scores `>= t`, FNMR(t) the share of genuine scores `< t`.
//! A target FMR below `1 / impostor count` cannot be measured; the figures are still given
//! (the threshold then lies above every impostor score) and [`FmrPoint::measurable`] says so.

use thiserror::Error;

/// Why error rates cannot be computed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EvalError {
    #[error("no genuine scores")]
    NoGenuine,
    #[error("no impostor scores")]
    NoImpostor,
    #[error("{list} score {index} is not a finite number")]
    NotFinite { list: &'static str, index: usize },
    #[error("FMR target {0} is not in [0, 1]")]
    BadTarget(String),
}

/// FNMR and threshold at one FMR target.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FmrPoint {
    /// The FMR asked for.
    pub target_fmr: f64,
    /// Lowest threshold whose measured FMR is at or below the target.
    pub threshold: f64,
    /// Measured FMR at that threshold.
    pub fmr: f64,
    /// FNMR at that threshold.
    pub fnmr: f64,
    /// False if the target is below one impostor in the set (too few impostors to tell).
    pub measurable: bool,
}

/// Sorted score lists, ready for any number of queries.
#[derive(Debug, Clone)]
pub struct ScoreSets {
    /// Ascending.
    genuine: Vec<f64>,
    /// Ascending.
    impostor: Vec<f64>,
}

fn sorted(list: &'static str, scores: &[f64]) -> Result<Vec<f64>, EvalError> {
    if let Some(index) = scores.iter().position(|s| !s.is_finite()) {
        return Err(EvalError::NotFinite { list, index });
    }
    let mut v = scores.to_vec();
    v.sort_by(f64::total_cmp);
    Ok(v)
}

impl ScoreSets {
    pub fn new(genuine: &[f64], impostor: &[f64]) -> Result<Self, EvalError> {
        if genuine.is_empty() {
            return Err(EvalError::NoGenuine);
        }
        if impostor.is_empty() {
            return Err(EvalError::NoImpostor);
        }
        Ok(ScoreSets {
            genuine: sorted("genuine", genuine)?,
            impostor: sorted("impostor", impostor)?,
        })
    }

    pub fn genuine_count(&self) -> usize {
        self.genuine.len()
    }
    pub fn impostor_count(&self) -> usize {
        self.impostor.len()
    }

    /// Share of impostor scores `>= threshold`.
    pub fn fmr(&self, threshold: f64) -> f64 {
        let below = self.impostor.partition_point(|&s| s < threshold);
        (self.impostor.len() - below) as f64 / self.impostor.len() as f64
    }

    /// Share of genuine scores `< threshold`.
    pub fn fnmr(&self, threshold: f64) -> f64 {
        self.genuine.partition_point(|&s| s < threshold) as f64 / self.genuine.len() as f64
    }

    /// Equal error rate, as defined for the FVC competitions: t1 is the highest threshold
    /// with FNMR <= FMR, t2 the lowest with FNMR >= FMR; of the two, the one with the
    /// smaller FMR + FNMR gives the interval [min, max] of its two rates, and the EER is
    /// that interval's middle.
    pub fn eer(&self) -> f64 {
        // Candidate thresholds: every score, and one above them all.
        let mut candidates: Vec<f64> = self
            .genuine
            .iter()
            .chain(self.impostor.iter())
            .copied()
            .collect();
        candidates.sort_by(f64::total_cmp);
        candidates.dedup();
        if let Some(&top) = candidates.last() {
            candidates.push(top.next_up());
        }
        let mut t1: Option<(f64, f64)> = None;
        let mut t2: Option<(f64, f64)> = None;
        for &t in &candidates {
            let (fmr, fnmr) = (self.fmr(t), self.fnmr(t));
            if fnmr <= fmr {
                t1 = Some((fmr, fnmr)); // FNMR grows with t: keep the last one.
            }
            if fnmr >= fmr && t2.is_none() {
                t2 = Some((fmr, fnmr));
            }
        }
        let mid = |(a, b): (f64, f64)| (a + b) / 2.0;
        match (t1, t2) {
            (Some(x), Some(y)) => {
                if x.0 + x.1 <= y.0 + y.1 {
                    mid(x)
                } else {
                    mid(y)
                }
            }
            (Some(x), None) | (None, Some(x)) => mid(x),
            (None, None) => 0.5,
        }
    }

    /// Lowest threshold at which the FMR is at or below `target`, with the rates there.
    pub fn at_fmr(&self, target: f64) -> Result<FmrPoint, EvalError> {
        if !(0.0..=1.0).contains(&target) {
            return Err(EvalError::BadTarget(target.to_string()));
        }
        let n = self.impostor.len();
        // At most `allowed` impostor scores may reach the threshold.
        let allowed = ((target * n as f64) + 1e-9).floor() as usize;
        let threshold = if allowed >= n {
            self.impostor[0].min(self.genuine[0])
        } else {
            // Just above the (allowed + 1)-th highest impostor score.
            self.impostor[n - 1 - allowed].next_up()
        };
        Ok(FmrPoint {
            target_fmr: target,
            threshold,
            fmr: self.fmr(threshold),
            fnmr: self.fnmr(threshold),
            measurable: target * n as f64 >= 1.0,
        })
    }
}

/// The usual summary: EER and FNMR at FMR 1e-2, 1e-3, 1e-4.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ErrorRates {
    pub genuine_count: usize,
    pub impostor_count: usize,
    pub eer: f64,
    /// At FMR 1e-2, 1e-3 and 1e-4, in that order.
    pub at_fmr: Vec<FmrPoint>,
}

/// FMR targets reported by [`ErrorRates`].
pub const REPORTED_FMRS: [f64; 3] = [1e-2, 1e-3, 1e-4];

impl ErrorRates {
    pub fn compute(genuine: &[f64], impostor: &[f64]) -> Result<Self, EvalError> {
        let sets = ScoreSets::new(genuine, impostor)?;
        let at_fmr = REPORTED_FMRS
            .iter()
            .map(|&t| sets.at_fmr(t))
            .collect::<Result<_, _>>()?;
        Ok(ErrorRates {
            genuine_count: sets.genuine_count(),
            impostor_count: sets.impostor_count(),
            eer: sets.eer(),
            at_fmr,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separated_scores_have_zero_eer() {
        let s = ScoreSets::new(&[0.8, 0.9, 0.95], &[0.1, 0.2, 0.3]).unwrap();
        assert_eq!(s.eer(), 0.0);
        let p = s.at_fmr(0.0).unwrap();
        assert!(p.threshold > 0.3 && p.threshold <= 0.8);
        assert_eq!((p.fmr, p.fnmr), (0.0, 0.0));
    }

    #[test]
    fn overlapping_scores() {
        // Genuine 0.1..1.0 and impostor 0.0..0.9 in steps of 0.1 (10 each): one crossing.
        let g: Vec<f64> = (1..=10).map(|i| i as f64 / 10.0).collect();
        let i: Vec<f64> = (0..10).map(|i| i as f64 / 10.0).collect();
        let s = ScoreSets::new(&g, &i).unwrap();
        let eer = s.eer();
        assert!((eer - 0.45).abs() < 1e-9, "{eer}");
        // FMR 0.2: at most 2 impostors (0.8, 0.9) may pass; threshold just above 0.7.
        let p = s.at_fmr(0.2).unwrap();
        assert!(p.threshold > 0.7 && p.threshold < 0.7001);
        assert!((p.fmr - 0.2).abs() < 1e-12);
        assert!((p.fnmr - 0.7).abs() < 1e-12); // genuine 0.1..=0.7 fall below
        assert!(p.measurable);
        assert!(!s.at_fmr(0.01).unwrap().measurable);
    }

    #[test]
    fn ties_never_exceed_target() {
        let s = ScoreSets::new(&[0.5, 0.6], &[0.5, 0.5, 0.5, 0.1]).unwrap();
        let p = s.at_fmr(0.25).unwrap();
        assert!(p.fmr <= 0.25);
        assert!(p.threshold > 0.5);
    }

    #[test]
    fn bad_input_is_rejected() {
        assert_eq!(
            ScoreSets::new(&[], &[0.1]).unwrap_err(),
            EvalError::NoGenuine
        );
        assert_eq!(
            ScoreSets::new(&[0.1], &[]).unwrap_err(),
            EvalError::NoImpostor
        );
        assert!(matches!(
            ScoreSets::new(&[0.1, f64::NAN], &[0.1]),
            Err(EvalError::NotFinite {
                list: "genuine",
                index: 1
            })
        ));
        let s = ScoreSets::new(&[0.1], &[0.2]).unwrap();
        assert!(s.at_fmr(1.5).is_err());
    }
}
