//! 1:N de-dup thresholds that rise with the gallery (open-set identification).
//!
//! A newcomer searched against N enrolled templates has N chances to be taken for somebody
//! else. At a per-comparison false match rate `f`, a share `1 - (1 - f)^N` of newcomers is
//! refused as a duplicate (the false positive identification rate, FPIR): at `f = 1e-4`,
//! 10 % at 1,000 templates and 63 % at 10,000. Holding FPIR at a target needs
//! `f = 1 - (1 - FPIR)^(1/N)`, about `FPIR / N`: 1e-8 for 1 % at a million templates, far
//! below what a calibration set measures (n impostor pairs resolve `f` down to about 10 / n).
//!
//! [`ImpostorTail`] extrapolates the impostor scores past their measured end by the
//! peaks-over-threshold method of extreme value statistics: above a high quantile `from`
//! (a share `fraction` of the impostor scores lies above it), the excesses follow a
//! generalised Pareto distribution, so that
//!
//! ```text
//! FMR(s) = fraction * (1 + shape * (s - from) / scale) ^ (-1 / shape)   (s >= from)
//! FMR(s) = fraction * exp(-(s - from) / scale)                          (shape 0)
//! ```
//!
//! Shape and scale are fitted by the moments of the excesses. A fitted shape below zero (a
//! tail that ends, as scores bounded by 1 do) is raised to zero, with the exponential's own
//! scale: the extrapolation never assumes a tail lighter than exponential. For a light tail
//! that overstates the FMR far out, which places the threshold higher than needed: fewer
//! newcomers refused than the target allows, and a duplicate must score higher to be caught.
//! The fit is a model: `tests/` check it against the measured FMR a decade past the data it
//! was fitted on, and BENCHMARKS.md gives what it implies at province sizes.

use thiserror::Error;

use crate::eval::ScoreSets;

/// Why a tail cannot be fitted.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum TailError {
    #[error("the tail fraction {0} is not in (0, 0.5]")]
    Fraction(f64),
    #[error(
        "{found} impostor scores lie in the tail; at least {MIN_EXCESSES} are needed to fit it"
    )]
    TooFew { found: usize },
    #[error("impostor score {index} is not a finite number")]
    NotFinite { index: usize },
    #[error("every impostor score in the tail is the same: no spread to fit")]
    Flat,
    #[error(
        "impostor tail {0:?}: needs a finite start, a fraction in (0, 0.5], a positive scale \
         and a shape in [0, 0.5)"
    )]
    Invalid(ImpostorTail),
}

/// The share of impostor scores a calibration fits the tail to: 1,560 of ORL's 78,000
/// impostor pairs, 230 of FVC2002's pooled 11,520 (BENCHMARKS.md compares 1, 2 and 5 %).
pub const TAIL_FRACTION: f64 = 0.02;

/// Fewest scores above the tail's start that a fit accepts.
pub const MIN_EXCESSES: usize = 50;

/// The upper tail of an impostor score distribution; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImpostorTail {
    /// Where the tail starts: a score with `fraction` of the impostor scores above it.
    pub from: f64,
    /// The share of impostor scores above `from`.
    pub fraction: f64,
    /// Scale of the excesses over `from`, in score units.
    pub scale: f64,
    /// Shape of the excesses: 0 is an exponential tail, above 0 a heavier one.
    pub shape: f64,
}

impl ImpostorTail {
    /// Fits the tail above the impostor scores' `1 - fraction` quantile.
    pub fn fit(impostor: &[f64], fraction: f64) -> Result<ImpostorTail, TailError> {
        if !(fraction > 0.0 && fraction <= 0.5) {
            return Err(TailError::Fraction(fraction));
        }
        if let Some(index) = impostor.iter().position(|s| !s.is_finite()) {
            return Err(TailError::NotFinite { index });
        }
        let mut sorted = impostor.to_vec();
        sorted.sort_by(f64::total_cmp);
        let above = ((sorted.len() as f64) * fraction).floor() as usize;
        if above < MIN_EXCESSES {
            return Err(TailError::TooFew { found: above });
        }
        // The start is the highest score under the tail, so exactly `above` lie past it.
        let from = sorted[sorted.len() - above - 1];
        let excesses: Vec<f64> = sorted[sorted.len() - above..]
            .iter()
            .map(|s| s - from)
            .collect();
        let n = excesses.len() as f64;
        let mean = excesses.iter().sum::<f64>() / n;
        let variance = excesses.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / (n - 1.0);
        // Moments of a generalised Pareto: mean = scale / (1 - shape),
        // variance = scale² / ((1 - shape)² (1 - 2 shape)). No spread: an infinite ratio,
        // a shape far below zero, and the exponential.
        let ratio = if variance > 0.0 {
            mean * mean / variance
        } else {
            f64::INFINITY
        };
        let shape = 0.5 * (1.0 - ratio);
        let (shape, scale) = if shape > 0.0 {
            (shape, 0.5 * mean * (ratio + 1.0))
        } else {
            (0.0, mean)
        };
        if !(scale > 0.0 && scale.is_finite()) {
            return Err(TailError::Flat);
        }
        Ok(ImpostorTail {
            from,
            fraction: above as f64 / sorted.len() as f64,
            scale,
            shape,
        })
    }

    /// Refuses a tail that no fit gives (one written into a configuration by hand).
    pub fn check(&self) -> Result<(), TailError> {
        let valid = self.from.is_finite()
            && self.fraction > 0.0
            && self.fraction <= 0.5
            && self.scale > 0.0
            && self.scale.is_finite()
            && (0.0..0.5).contains(&self.shape);
        if valid {
            Ok(())
        } else {
            Err(TailError::Invalid(*self))
        }
    }

    /// The modelled share of impostor comparisons scoring `score` or more; `fraction` for
    /// any score at or under the tail's start (the model says nothing below it).
    pub fn fmr(&self, score: f64) -> f64 {
        let excess = (score - self.from).max(0.0) / self.scale;
        if self.shape == 0.0 {
            self.fraction * (-excess).exp()
        } else {
            self.fraction * (1.0 + self.shape * excess).powf(-1.0 / self.shape)
        }
    }

    /// The lowest score whose modelled FMR is `fmr` (the tail's start for an `fmr` at or
    /// above `fraction`).
    pub fn score_at(&self, fmr: f64) -> f64 {
        if fmr >= self.fraction {
            return self.from;
        }
        let odds = self.fraction / fmr;
        let excess = if self.shape == 0.0 {
            odds.ln()
        } else {
            (odds.powf(self.shape) - 1.0) / self.shape
        };
        self.from + self.scale * excess
    }

    /// The de-dup threshold for a search making `comparisons` comparisons, so that a
    /// newcomer is refused with probability at most `fpir`; never under `floor`, the
    /// per-comparison threshold a small gallery uses.
    pub fn dedup_threshold(&self, floor: f32, comparisons: usize, fpir: f64) -> f32 {
        if comparisons == 0 {
            return floor;
        }
        let per_comparison = per_comparison_fmr(fpir, comparisons);
        floor.max(self.score_at(per_comparison) as f32)
    }
}

/// A de-dup threshold at one gallery size, and what it costs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AtSize {
    /// Comparisons a search makes (the probe's templates times the gallery's).
    pub comparisons: usize,
    pub threshold: f32,
    /// Share of a calibration set's genuine scores under the threshold: second enrollments
    /// of the same person that this modality alone lets through.
    pub fnmr: f64,
}

impl ImpostorTail {
    /// [`dedup_threshold`](Self::dedup_threshold) at each of `sizes`, with the FNMR it gives
    /// on `scores`' genuine pairs: what the tail means for an operator.
    pub fn at_sizes(
        &self,
        floor: f32,
        fpir: f64,
        sizes: &[usize],
        scores: &ScoreSets,
    ) -> Vec<AtSize> {
        sizes
            .iter()
            .map(|&comparisons| {
                let threshold = self.dedup_threshold(floor, comparisons, fpir);
                AtSize {
                    comparisons,
                    threshold,
                    fnmr: scores.fnmr(f64::from(threshold)),
                }
            })
            .collect()
    }
}

/// The per-comparison false match rate at which `comparisons` independent comparisons give
/// a false match with probability `fpir`: `1 - (1 - fpir)^(1 / comparisons)`.
pub fn per_comparison_fmr(fpir: f64, comparisons: usize) -> f64 {
    -((-fpir).ln_1p() / comparisons as f64).exp_m1()
}

/// The chance that at least one of `comparisons` independent comparisons at a false match
/// rate of `fmr` matches: `1 - (1 - fmr)^comparisons`.
pub fn fpir(fmr: f64, comparisons: usize) -> f64 {
    -((-fmr).ln_1p() * comparisons as f64).exp_m1()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::Rng;

    fn draw(n: usize, seed: u64, sample: impl Fn(f64) -> f64) -> Vec<f64> {
        let mut rng = Rng::new(seed);
        (0..n).map(|_| sample(rng.uniform())).collect()
    }

    #[test]
    fn an_exponential_tail_is_recovered() {
        // Scores: exponential with scale 0.05 above 0.1 (inverse transform).
        let scores = draw(200_000, 3, |u| 0.1 - 0.05 * (1.0 - u).ln());
        let tail = ImpostorTail::fit(&scores, 0.01).unwrap();
        assert!((tail.scale - 0.05).abs() < 0.005, "{tail:?}");
        assert!(tail.shape < 0.05, "{tail:?}");
        // FMR 1e-6, where the data has no score: 0.1 + 0.05 ln(1e6).
        let want = 0.1 + 0.05 * 1e6f64.ln();
        assert!(
            (tail.score_at(1e-6) - want).abs() < 0.05,
            "{}",
            tail.score_at(1e-6)
        );
    }

    #[test]
    fn a_heavy_tail_gets_a_positive_shape_and_a_bounded_one_the_exponential() {
        // Pareto with shape 0.25 (inverse transform of a generalised Pareto).
        let heavy = draw(200_000, 5, |u| 0.02 / 0.25 * ((1.0 - u).powf(-0.25) - 1.0));
        let tail = ImpostorTail::fit(&heavy, 0.02).unwrap();
        assert!((tail.shape - 0.25).abs() < 0.08, "{tail:?}");
        // Uniform scores end at 1: the fit does not claim it, it falls back to exponential.
        let bounded = draw(200_000, 7, |u| u);
        let tail = ImpostorTail::fit(&bounded, 0.01).unwrap();
        assert_eq!(tail.shape, 0.0);
        assert!(tail.score_at(1e-9) > 1.0, "{tail:?}");
    }

    #[test]
    fn score_at_inverts_fmr() {
        for shape in [0.0, 0.2] {
            let tail = ImpostorTail {
                from: 0.3,
                fraction: 0.01,
                scale: 0.04,
                shape,
            };
            for fmr in [1e-3, 1e-5, 1e-8] {
                let s = tail.score_at(fmr);
                assert!((tail.fmr(s) / fmr - 1.0).abs() < 1e-9, "{shape} {fmr}");
            }
            assert_eq!(tail.score_at(0.5), 0.3);
            assert_eq!(tail.fmr(0.0), 0.01);
        }
    }

    #[test]
    fn the_dedup_threshold_rises_with_the_gallery_and_holds_the_fpir() {
        let tail = ImpostorTail {
            from: 0.3,
            fraction: 0.01,
            scale: 0.04,
            shape: 0.0,
        };
        let floor = 0.35;
        assert_eq!(tail.dedup_threshold(floor, 0, 0.01), floor);
        assert_eq!(tail.dedup_threshold(floor, 1, 0.01), floor);
        let mut last = floor;
        for n in [1_000, 10_000, 100_000, 1_000_000, 10_000_000] {
            let t = tail.dedup_threshold(floor, n, 0.01);
            assert!(t > last, "{n}: {t} <= {last}");
            last = t;
            let achieved = fpir(tail.fmr(f64::from(t)), n);
            assert!((achieved / 0.01 - 1.0).abs() < 1e-3, "{n}: {achieved}");
        }
    }

    #[test]
    fn per_comparison_fmr_inverts_fpir() {
        for n in [1, 7, 1_000, 1_000_000] {
            let f = per_comparison_fmr(0.01, n);
            assert!((fpir(f, n) / 0.01 - 1.0).abs() < 1e-9);
        }
        assert!((fpir(1e-4, 10_000) - 0.632).abs() < 1e-3);
    }

    #[test]
    fn bad_input_is_refused() {
        assert_eq!(
            ImpostorTail::fit(&[0.1; 100], 0.01),
            Err(TailError::TooFew { found: 1 })
        );
        assert_eq!(
            ImpostorTail::fit(&[0.1; 100], 0.7),
            Err(TailError::Fraction(0.7))
        );
        assert_eq!(
            ImpostorTail::fit(&[0.1, f64::NAN], 0.5),
            Err(TailError::NotFinite { index: 1 })
        );
        let fitted = ImpostorTail::fit(&draw(1_000, 9, |u| u), 0.1).unwrap();
        assert_eq!(fitted.check(), Ok(()));
        for bad in [
            ImpostorTail {
                scale: 0.0,
                ..fitted
            },
            ImpostorTail {
                shape: -0.1,
                ..fitted
            },
            ImpostorTail {
                fraction: 0.0,
                ..fitted
            },
            ImpostorTail {
                from: f64::NAN,
                ..fitted
            },
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
    }
}
