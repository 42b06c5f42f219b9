//! Biometric checks on the node, built on `quorumid-biometrics`: strict validation of the
//! templates an enrollment carries, and the 1:1 match of a verification probe against the
//! claimed identity's enrolled templates (DESIGN.md 6). The match is local and not recorded.
//! `index` holds every enrolled face for the leader's 1:N de-dup search before enrollment.

pub mod calibrate;
mod index;

pub use index::FaceIndex;

use quorumid_biometrics::face::{Embedding, FaceTemplate, ModelId};
use quorumid_biometrics::fingerprint::FingerRecord;
use quorumid_biometrics::mcc::{Matcher, MccTemplate};
use serde::{Deserialize, Serialize};

use crate::registry::{Template, TemplateFormat};

/// Decision thresholds, each calibrated to a false-match rate.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Thresholds {
    /// Cosine of int8 face templates. Default: FMR 1e-3 on ORL with SFace (BENCHMARKS.md).
    pub face: f32,
    /// MCC score. Default: the highest of the four FVC2002 thresholds for FMR 1e-3.
    pub fingerprint: f32,
    /// Cosine above which an enrolling face is taken for an already enrolled person (1:N
    /// de-dup). Default: FMR 1e-4 on ORL, stricter than 1:1 since it is tried against all.
    pub dedup_face: f32,
}

impl Default for Thresholds {
    fn default() -> Thresholds {
        Thresholds {
            face: 0.393,
            fingerprint: 0.033,
            dedup_face: 0.438,
        }
    }
}

/// Why a probe could not be matched.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("probe: {0}")]
    Invalid(String),
    #[error("the identity has no enrolled {0} template to compare the probe with")]
    NoTemplate(String),
}

/// Validates templates and matches probes.
pub struct Biometrics {
    thresholds: Thresholds,
    matcher: Matcher,
    /// Every enrolled face, kept in step with the applied state by the state machine.
    pub faces: std::sync::Arc<FaceIndex>,
}

impl Biometrics {
    pub fn new(thresholds: Thresholds, faces: std::sync::Arc<FaceIndex>) -> Biometrics {
        Biometrics {
            thresholds,
            matcher: Matcher::default(),
            faces,
        }
    }

    /// 1:N de-dup: does an enrolling face match any enrolled one?
    pub fn duplicate_face(&self, templates: &[Template]) -> bool {
        self.faces.has_match(templates, self.thresholds.dedup_face)
    }

    /// Refuses a template that could never be matched, saying why.
    pub fn check(&self, template: &Template) -> Result<(), String> {
        match template.format {
            TemplateFormat::FaceEmbeddingF32 => face(template).map(|_| ()),
            // A strict parse is the whole check: building the matcher's cylinders (about
            // 0.6 ms a finger) would not reject anything more.
            TemplateFormat::Iso19794_2_2005 => finger_record(template).map(|_| ()),
        }
    }

    /// Does `probe` match one of `enrolled` (same format, and same model for faces)?
    pub fn matches(&self, probe: &Template, enrolled: &[Template]) -> Result<bool, ProbeError> {
        let candidates: Vec<&Template> = enrolled
            .iter()
            .filter(|t| t.format == probe.format)
            .filter(|t| {
                probe.format != TemplateFormat::FaceEmbeddingF32 || t.model_id == probe.model_id
            })
            .collect();
        match probe.format {
            TemplateFormat::FaceEmbeddingF32 => {
                let probe_template = face(probe).map_err(ProbeError::Invalid)?;
                let mut best = None::<f32>;
                for t in candidates {
                    // Stored templates were checked at enrollment; one that no longer parses
                    // (or has another dimension) is skipped, never matched.
                    if let Ok(stored) = face(t)
                        && let Ok(score) = probe_template.score(&stored)
                    {
                        best = Some(best.map_or(score, |b| b.max(score)));
                    }
                }
                let best = best
                    .ok_or_else(|| ProbeError::NoTemplate(format!("face ({})", probe.model_id)))?;
                Ok(best >= self.thresholds.face)
            }
            TemplateFormat::Iso19794_2_2005 => {
                let probe_fingers = self.fingers(probe).map_err(ProbeError::Invalid)?;
                let stored: Vec<(u8, MccTemplate)> = candidates
                    .into_iter()
                    .filter_map(|t| self.fingers(t).ok())
                    .flatten()
                    .collect();
                if stored.is_empty() {
                    return Err(ProbeError::NoTemplate("fingerprint".into()));
                }
                // Each probe finger against the enrolled views of the same finger position
                // (or every view where a position is unknown); the best score decides.
                let best = probe_fingers
                    .iter()
                    .flat_map(|(pos, p)| {
                        stored
                            .iter()
                            .filter(move |(s, _)| *pos == 0 || *s == 0 || s == pos)
                            .map(move |(_, s)| self.matcher.compare(p, s))
                    })
                    .fold(0.0f32, f32::max);
                Ok(best >= self.thresholds.fingerprint)
            }
        }
    }

    fn fingers(&self, template: &Template) -> Result<Vec<(u8, MccTemplate)>, String> {
        let record = finger_record(template)?;
        Ok(record
            .views
            .iter()
            .map(|view| {
                (
                    view.position,
                    self.matcher.template_from_view(&record, view),
                )
            })
            .collect())
    }
}

/// A strictly parsed ISO/IEC 19794-2 record with at least one finger view.
fn finger_record(template: &Template) -> Result<FingerRecord, String> {
    let record = FingerRecord::parse(&template.data).map_err(|e| e.to_string())?;
    if record.views.is_empty() {
        return Err("the minutiae record holds no finger view".into());
    }
    Ok(record)
}

/// An int8 face template from little-endian f32 values; the dimension is the value count.
pub(crate) fn face(template: &Template) -> Result<FaceTemplate, String> {
    if !template.data.len().is_multiple_of(4) {
        return Err(format!(
            "a face embedding is little-endian f32 values (a multiple of 4 bytes), got {} bytes",
            template.data.len()
        ));
    }
    let values: Vec<f32> = template
        .data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let model = ModelId::new(&template.model_id, values.len()).map_err(|e| e.to_string())?;
    let embedding = Embedding::new(model, values).map_err(|e| e.to_string())?;
    Ok(embedding.quantise())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn face_template(model: &str, values: &[f32]) -> Template {
        Template {
            format: TemplateFormat::FaceEmbeddingF32,
            model_id: model.into(),
            data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }

    #[test]
    fn malformed_templates_are_refused_with_a_reason() {
        let b = Biometrics::new(Thresholds::default(), Default::default());
        let odd = Template {
            data: vec![0; 7],
            ..face_template("m", &[1.0])
        };
        assert!(b.check(&odd).unwrap_err().contains("multiple of 4"));
        assert!(
            b.check(&face_template("m", &[0.0, 0.0]))
                .unwrap_err()
                .contains("zeros")
        );
        assert!(b.check(&face_template("m", &[f32::NAN, 1.0])).is_err());
        let iso = Template {
            format: TemplateFormat::Iso19794_2_2005,
            model_id: "x".into(),
            data: b"FMR\0 20\0garbage".to_vec(),
        };
        assert!(b.check(&iso).is_err());
        assert!(b.check(&face_template("m", &[0.3, 0.4])).is_ok());
    }

    #[test]
    fn face_probes_match_their_own_model_only() {
        let b = Biometrics::new(Thresholds::default(), Default::default());
        let enrolled = [face_template("sface", &[1.0, 0.1, 0.0])];
        assert!(
            b.matches(&face_template("sface", &[0.9, 0.15, 0.05]), &enrolled)
                .unwrap()
        );
        assert!(
            !b.matches(&face_template("sface", &[0.0, 0.1, 1.0]), &enrolled)
                .unwrap()
        );
        assert!(matches!(
            b.matches(&face_template("arcface", &[1.0, 0.1, 0.0]), &enrolled),
            Err(ProbeError::NoTemplate(_))
        ));
    }
}
