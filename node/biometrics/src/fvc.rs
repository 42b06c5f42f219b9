//! FVC protocol evaluation over a directory of minutiae records named `FINGER_IMPRESSION.iso`
//! (as in `shared/data/fvc2002/DB*_B`).
//!
//! Genuine pairs: every unordered pair of impressions of the same finger (10 fingers x 8
//! impressions gives 10 x 28 = 280). Impostor pairs: every unordered pair of impressions of
//! two different fingers, all impressions used (C(80, 2) - 280 = 2,880). The classic FVC
//! rule (first impressions only, 45 pairs) is too small to resolve low error rates.
//! Each unordered pair is scored once, as `compare(lower index, higher index)`.

use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::eval::{ErrorRates, EvalError};
use crate::fingerprint::{FingerRecord, RecordError};
use crate::mcc::{Matcher, MccTemplate};

#[derive(Debug, Error)]
pub enum FvcError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: file name is not FINGER_IMPRESSION.iso with two numbers")]
    BadName { path: PathBuf },
    #[error("{path}: {source}")]
    Record { path: PathBuf, source: RecordError },
    #[error("{path}: the record has {views} finger views; one is expected")]
    NotOneView { path: PathBuf, views: usize },
    #[error("{path}: no .iso records found")]
    Empty { path: PathBuf },
    #[error(transparent)]
    Eval(#[from] EvalError),
}

/// One impression.
#[derive(Debug, Clone)]
pub struct Sample {
    pub finger: u32,
    pub impression: u32,
    pub record: FingerRecord,
}

/// The samples of one database, sorted by finger then impression.
#[derive(Debug, Clone)]
pub struct Database {
    pub samples: Vec<Sample>,
}

/// Scores and error rates of one database.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub genuine: Vec<f64>,
    pub impostor: Vec<f64>,
    pub rates: ErrorRates,
}

impl Database {
    /// Reads and strictly parses every `*.iso` file of `dir`.
    pub fn load(dir: &Path) -> Result<Self, FvcError> {
        let io = |source| FvcError::Io {
            path: dir.to_path_buf(),
            source,
        };
        let mut samples = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("iso") {
                continue;
            }
            let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
            let numbers = stem
                .split_once('_')
                .and_then(|(f, i)| Some((f.parse::<u32>().ok()?, i.parse::<u32>().ok()?)));
            let Some((finger, impression)) = numbers else {
                return Err(FvcError::BadName { path });
            };
            let bytes = std::fs::read(&path).map_err(|source| FvcError::Io {
                path: path.clone(),
                source,
            })?;
            let record = FingerRecord::parse(&bytes).map_err(|source| FvcError::Record {
                path: path.clone(),
                source,
            })?;
            if record.views.len() != 1 {
                return Err(FvcError::NotOneView {
                    path,
                    views: record.views.len(),
                });
            }
            samples.push(Sample {
                finger,
                impression,
                record,
            });
        }
        if samples.is_empty() {
            return Err(FvcError::Empty {
                path: dir.to_path_buf(),
            });
        }
        samples.sort_by_key(|s| (s.finger, s.impression));
        Ok(Database { samples })
    }

    /// Index pairs `(i, j)`, `i < j`, of impressions of the same finger.
    pub fn genuine_pairs(&self) -> Vec<(usize, usize)> {
        self.pairs(true)
    }

    /// Index pairs `(i, j)`, `i < j`, of impressions of different fingers.
    pub fn impostor_pairs(&self) -> Vec<(usize, usize)> {
        self.pairs(false)
    }

    fn pairs(&self, same: bool) -> Vec<(usize, usize)> {
        let s = &self.samples;
        let mut out = Vec::new();
        for i in 0..s.len() {
            for j in i + 1..s.len() {
                if (s[i].finger == s[j].finger) == same {
                    out.push((i, j));
                }
            }
        }
        out
    }

    /// One template per sample (the record's only view).
    pub fn templates(&self, matcher: &Matcher) -> Vec<MccTemplate> {
        self.samples
            .iter()
            .map(|s| match s.record.views.first() {
                Some(view) => matcher.template_from_view(&s.record, view),
                None => matcher.template(&[]),
            })
            .collect()
    }

    /// Scores every genuine and impostor pair and computes the error rates.
    pub fn evaluate(&self, matcher: &Matcher) -> Result<Evaluation, FvcError> {
        let templates = self.templates(matcher);
        let score = |pairs: Vec<(usize, usize)>| -> Vec<f64> {
            pairs
                .into_iter()
                .map(|(i, j)| f64::from(matcher.compare(&templates[i], &templates[j])))
                .collect()
        };
        let genuine = score(self.genuine_pairs());
        let impostor = score(self.impostor_pairs());
        let rates = ErrorRates::compute(&genuine, &impostor)?;
        Ok(Evaluation {
            genuine,
            impostor,
            rates,
        })
    }
}
