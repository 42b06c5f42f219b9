//! Threshold calibration from a labelled set of face embeddings.
//!
//! Every unordered pair of samples is scored (O(n²): meant for evaluation sets of up to
//! some thousands) with the int8 templates the node stores, split into genuine (same
//! label) and impostor pairs, and summarised: EER, FNMR at FMR 1e-2 / 1e-3 / 1e-4, the
//! threshold for each named FMR target, and the impostor scores' fitted upper tail (for 1:N
//! thresholds past what the set measures, `identification`).
//!
//! Embedding models whose vectors are not zero-centred crowd every score towards 1 and
//! waste the int8 range on the shared offset. [`Centring::Mean`] subtracts the set's mean
//! embedding and renormalises; the mean is returned in the [`Calibration`] as a
//! [`Centre`], which must then be applied to every embedding before enrolment or matching.

use thiserror::Error;

use crate::eval::{ErrorRates, EvalError, FmrPoint, ScoreSets};
use crate::face::{Embedding, FaceError, FaceTemplate, ModelId};
use crate::identification::{ImpostorTail, TAIL_FRACTION};

#[derive(Debug, Clone, PartialEq, Error)]
pub enum CalibrationError {
    #[error("sample {index}: {source}")]
    Sample { index: usize, source: FaceError },
    #[error("need at least one genuine and one impostor pair: {0}")]
    Pairs(#[from] EvalError),
    #[error("centre has {found} values but model {model} makes {expected}")]
    CentreDimension {
        model: String,
        expected: usize,
        found: usize,
    },
}

/// Whether to centre embeddings before normalising them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Centring {
    /// Use the embeddings as they come (normalised).
    #[default]
    None,
    /// Subtract the mean of the calibration set's normalised embeddings, then renormalise.
    Mean,
}

/// A mean to subtract from every (normalised) embedding of a model before renormalising.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Centre {
    pub model: ModelId,
    pub mean: Vec<f32>,
}

impl Centre {
    pub fn new(model: ModelId, mean: Vec<f32>) -> Result<Self, CalibrationError> {
        if mean.len() != model.dimension() || mean.iter().any(|v| !v.is_finite()) {
            return Err(CalibrationError::CentreDimension {
                model: model.to_string(),
                expected: model.dimension(),
                found: mean.len(),
            });
        }
        Ok(Centre { model, mean })
    }

    /// Normalises `values`, subtracts the mean and normalises again.
    pub fn apply(&self, values: Vec<f32>) -> Result<Embedding, FaceError> {
        let unit = Embedding::new(self.model.clone(), values)?;
        let centred = unit
            .values()
            .iter()
            .zip(&self.mean)
            .map(|(v, m)| v - m)
            .collect();
        Embedding::new(self.model.clone(), centred)
    }
}

/// Summary of a score distribution.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Distribution {
    pub count: usize,
    pub min: f64,
    pub median: f64,
    pub mean: f64,
    pub max: f64,
}

impl Distribution {
    fn of(scores: &[f64]) -> Self {
        let mut s = scores.to_vec();
        s.sort_by(f64::total_cmp);
        let n = s.len();
        Distribution {
            count: n,
            min: s.first().copied().unwrap_or(f64::NAN),
            median: if n == 0 { f64::NAN } else { s[n / 2] },
            mean: s.iter().sum::<f64>() / n.max(1) as f64,
            max: s.last().copied().unwrap_or(f64::NAN),
        }
    }
}

/// What a calibration run found; serialisable as the node's threshold config.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Calibration {
    pub model: ModelId,
    /// Present when the set was calibrated with [`Centring::Mean`].
    pub centre: Option<Centre>,
    pub genuine: Distribution,
    pub impostor: Distribution,
    pub rates: ErrorRates,
    /// One per requested FMR target, in the order asked.
    pub thresholds: Vec<FmrPoint>,
    /// The impostor scores' upper tail at [`TAIL_FRACTION`], for de-dup thresholds that rise
    /// with the gallery; `None` when too few impostor pairs lie in it to fit one.
    pub impostor_tail: Option<ImpostorTail>,
}

/// Calibrates `model` on `(label, embedding)` samples; see the module documentation.
pub fn calibrate<L: PartialEq>(
    model: &ModelId,
    samples: &[(L, Vec<f32>)],
    centring: Centring,
    fmr_targets: &[f64],
) -> Result<Calibration, CalibrationError> {
    calibrate_scored(model, samples, centring, fmr_targets).map(|(calibration, _)| calibration)
}

/// [`calibrate`], with the genuine and impostor scores it summarised (for questions the
/// summary does not answer, such as the FNMR at a threshold of the caller's).
pub fn calibrate_scored<L: PartialEq>(
    model: &ModelId,
    samples: &[(L, Vec<f32>)],
    centring: Centring,
    fmr_targets: &[f64],
) -> Result<(Calibration, ScoreSets), CalibrationError> {
    let mut embeddings = Vec::with_capacity(samples.len());
    for (index, (_, values)) in samples.iter().enumerate() {
        let e = Embedding::new(model.clone(), values.clone())
            .map_err(|source| CalibrationError::Sample { index, source })?;
        embeddings.push(e);
    }
    let centre = match centring {
        Centring::None => None,
        Centring::Mean => {
            let mut mean = vec![0f64; model.dimension()];
            for e in &embeddings {
                for (m, v) in mean.iter_mut().zip(e.values()) {
                    *m += f64::from(*v);
                }
            }
            let n = embeddings.len().max(1) as f64;
            let mean = mean.into_iter().map(|m| (m / n) as f32).collect();
            let centre = Centre::new(model.clone(), mean)?;
            embeddings = samples
                .iter()
                .enumerate()
                .map(|(index, (_, v))| {
                    centre
                        .apply(v.clone())
                        .map_err(|source| CalibrationError::Sample { index, source })
                })
                .collect::<Result<_, _>>()?;
            Some(centre)
        }
    };
    let templates: Vec<FaceTemplate> = embeddings.iter().map(Embedding::quantise).collect();
    let (genuine, impostor) = pair_scores(samples, &templates)?;
    let rates = ErrorRates::compute(&genuine, &impostor)?;
    let sets = ScoreSets::new(&genuine, &impostor)?;
    let thresholds = fmr_targets
        .iter()
        .map(|&t| sets.at_fmr(t))
        .collect::<Result<_, _>>()?;
    let calibration = Calibration {
        model: model.clone(),
        centre,
        genuine: Distribution::of(&genuine),
        impostor: Distribution::of(&impostor),
        rates,
        thresholds,
        impostor_tail: ImpostorTail::fit(&impostor, TAIL_FRACTION).ok(),
    };
    Ok((calibration, sets))
}

type Scores = (Vec<f64>, Vec<f64>);

/// Scores of every unordered pair, split by whether the labels agree.
pub fn pair_scores<L: PartialEq>(
    samples: &[(L, Vec<f32>)],
    templates: &[FaceTemplate],
) -> Result<Scores, CalibrationError> {
    let (mut genuine, mut impostor) = (Vec::new(), Vec::new());
    for i in 0..templates.len() {
        for j in i + 1..templates.len() {
            let s = f64::from(
                templates[i]
                    .score(&templates[j])
                    .map_err(|source| CalibrationError::Sample { index: j, source })?,
            );
            if samples[i].0 == samples[j].0 {
                genuine.push(s);
            } else {
                impostor.push(s);
            }
        }
    }
    Ok((genuine, impostor))
}
