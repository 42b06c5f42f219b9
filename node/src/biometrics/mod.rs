//! Biometric checks on the node, built on `quorumid-biometrics`: strict validation of the
//! templates an enrollment carries, and the 1:1 match of a verification probe against the
//! claimed identity's enrolled templates (DESIGN.md 6). The match is local and not recorded.
//! `index` holds every enrolled face and finger for the leader's 1:N de-dup search before
//! enrollment.

pub mod calibrate;
mod index;

pub use index::{DedupIndex, DedupThresholds, Modality};
pub use quorumid_biometrics::extract::default_models_dir;

use std::path::PathBuf;
use std::sync::Arc;

use quorumid_biometrics::extract::{
    DetectorConfig, ExtractError, FaceExtractor, Limits, SFACE_FILE, YUNET_FILE,
};
use quorumid_biometrics::face::{Embedding, FaceTemplate, ModelId};
use quorumid_biometrics::finger_gallery::same_finger;
use quorumid_biometrics::fingerprint::FingerRecord;
use quorumid_biometrics::identification::ImpostorTail;
use quorumid_biometrics::mcc::{Matcher, MccTemplate};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::registry::{Template, TemplateFormat};

/// Largest face photograph accepted (encoded bytes).
pub const MAX_FACE_IMAGE_BYTES: usize = 1024 * 1024;

/// The `[biometrics]` section: decision thresholds, each calibrated to a false-match rate,
/// and where the face models are.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BiometricsConfig {
    /// Cosine of int8 face templates. Default: FMR 1e-3 on ORL with SFace (BENCHMARKS.md).
    pub face: f32,
    /// MCC score. Default: the highest of the four FVC2002 thresholds for FMR 1e-3.
    pub fingerprint: f32,
    /// Cosine above which an enrolling face is taken for an already enrolled person (1:N
    /// de-dup). Default: FMR 1e-4 on ORL, stricter than 1:1 since it is tried against all.
    pub dedup_face: f32,
    /// MCC score of one finger above which an enrolling finger is taken for an enrolled one
    /// (1:N de-dup). Default: FMR 1e-4 over the four FVC2002 B databases' impostor pairs.
    pub dedup_fingerprint: f32,
    /// The share of newcomers (people not enrolled yet) the 1:N de-dup may take for somebody
    /// enrolled, half of it for faces, half for fingerprints. `dedup_face` and
    /// `dedup_fingerprint` are floors: as the gallery grows, each modality's threshold rises
    /// along its impostor tail so that a search of N templates keeps its half. Default 1 %.
    pub dedup_fpir: f64,
    /// The upper tail of face impostor scores (`quorumid-node calibrate` fits it). Default:
    /// SFace on ORL.
    pub face_impostor_tail: ImpostorTail,
    /// The upper tail of one-finger impostor scores. Default: MCC on FVC2002 B, pooled.
    pub fingerprint_impostor_tail: ImpostorTail,
    /// A directory with the YuNet and SFace ONNX files (`node/biometrics/models/fetch.sh`),
    /// for FACE_IMAGE templates; or `QUORUMID_FACE_MODELS`. Without it, the node takes
    /// embeddings only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub face_models: Option<PathBuf>,
}

impl Default for BiometricsConfig {
    fn default() -> BiometricsConfig {
        BiometricsConfig {
            face: 0.393,
            fingerprint: 0.035,
            dedup_face: 0.438,
            dedup_fingerprint: quorumid_biometrics::finger_gallery::DEDUP_THRESHOLD,
            dedup_fpir: 0.01,
            face_impostor_tail: ImpostorTail {
                from: 0.2971,
                fraction: 0.02,
                scale: 0.03364,
                shape: 0.0,
            },
            fingerprint_impostor_tail: quorumid_biometrics::finger_gallery::IMPOSTOR_TAIL,
            face_models: None,
        }
    }
}

impl BiometricsConfig {
    /// The 1:N de-dup rules of this configuration.
    pub fn dedup_thresholds(&self) -> DedupThresholds {
        DedupThresholds {
            face: self.dedup_face,
            fingerprint: self.dedup_fingerprint,
            face_tail: self.face_impostor_tail,
            fingerprint_tail: self.fingerprint_impostor_tail,
            fpir: self.dedup_fpir,
            elsewhere: (0, 0),
        }
    }

    /// Refuses thresholds and tails that could not come from a calibration.
    pub fn check(&self) -> Result<(), String> {
        if !(self.dedup_fpir > 0.0 && self.dedup_fpir < 1.0) {
            return Err(format!(
                "biometrics.dedup_fpir must be in (0, 1), got {}",
                self.dedup_fpir
            ));
        }
        self.face_impostor_tail
            .check()
            .map_err(|e| format!("biometrics.face_impostor_tail: {e}"))?;
        self.fingerprint_impostor_tail
            .check()
            .map_err(|e| format!("biometrics.fingerprint_impostor_tail: {e}"))
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

/// Why a face image gave no template.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(
        "this node has no face models configured (biometrics.face_models): send a \
         FACE_EMBEDDING_F32 template instead"
    )]
    NoModels,
    #[error(transparent)]
    Extract(#[from] ExtractError),
    #[error("face extraction stopped: {0}")]
    Failed(String),
}

/// Validates templates, extracts face images, and matches probes.
pub struct Biometrics {
    thresholds: BiometricsConfig,
    matcher: Matcher,
    /// YuNet + SFace, if face models are configured.
    extractor: Option<FaceExtractor>,
    /// Extractions running at once: one per core, so images cannot starve the node.
    extracting: Semaphore,
    /// Every enrolled face and finger, kept in step with the applied state by the state
    /// machine.
    pub index: Arc<DedupIndex>,
}

impl Biometrics {
    /// Loads the face models if `config` names them, and refuses to start if they are missing
    /// or unusable.
    pub fn new(
        config: BiometricsConfig,
        index: Arc<DedupIndex>,
    ) -> Result<Biometrics, ExtractError> {
        let limits = Limits {
            max_encoded_bytes: MAX_FACE_IMAGE_BYTES,
            ..Limits::default()
        };
        let extractor = match &config.face_models {
            None => None,
            Some(dir) => Some(FaceExtractor::load_files(
                &dir.join(YUNET_FILE),
                &dir.join(SFACE_FILE),
                DetectorConfig::default(),
                limits,
            )?),
        };
        Ok(Biometrics {
            thresholds: config,
            matcher: Matcher::default(),
            extractor,
            extracting: Semaphore::new(
                std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            ),
            index,
        })
    }

    /// The template of a face photograph: the embedding of its best face, as a
    /// FACE_EMBEDDING_F32 template of the extractor's model. Extraction takes tens of
    /// milliseconds of CPU; it runs on a blocking thread, one per core at most.
    pub async fn face_from_image(self: &Arc<Self>, image: Vec<u8>) -> Result<Template, ImageError> {
        if self.extractor.is_none() {
            return Err(ImageError::NoModels);
        }
        let _permit = self
            .extracting
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.extract_face(&image))
            .await
            .map_err(|e| ImageError::Failed(e.to_string()))?
    }

    fn extract_face(&self, image: &[u8]) -> Result<Template, ImageError> {
        let extractor = self.extractor.as_ref().ok_or(ImageError::NoModels)?;
        let embedding = extractor.extract(image)?.embedding;
        Ok(Template {
            format: TemplateFormat::FaceEmbeddingF32,
            model_id: embedding.model().name().to_string(),
            data: embedding
                .values()
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        })
    }

    /// 1:N de-dup: does an enrolling face or finger match one enrolled in `index` (the
    /// leader's check against a batch's earlier enrollments)? Says which rule matched. The
    /// threshold is that of a search of the node's index and `index` together.
    pub fn duplicate(&self, templates: &[Template], index: &DedupIndex) -> Option<Modality> {
        let thresholds = DedupThresholds {
            elsewhere: (self.index.faces(), self.index.fingers()),
            ..self.dedup_thresholds()
        };
        index.find_match(templates, thresholds)
    }

    pub fn dedup_thresholds(&self) -> DedupThresholds {
        self.thresholds.dedup_thresholds()
    }

    /// [`duplicate`](Self::duplicate) against the node's own index for each enrollment of
    /// a batch (`None`: not searched), in one pass over the faces.
    pub fn duplicates(&self, batch: &[Option<Vec<Template>>]) -> Vec<Option<Modality>> {
        self.index.find_matches(batch, self.dedup_thresholds())
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
                let probe_fingers =
                    finger_views(&self.matcher, probe).map_err(ProbeError::Invalid)?;
                let stored: Vec<(u8, MccTemplate)> = candidates
                    .into_iter()
                    .filter_map(|t| finger_views(&self.matcher, t).ok())
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
                            .filter(move |(s, _)| same_finger(*pos, *s))
                            .map(move |(_, s)| self.matcher.compare(p, s))
                    })
                    .fold(0.0f32, f32::max);
                Ok(best >= self.thresholds.fingerprint)
            }
        }
    }
}

/// `f` of every item, in order, the items split over the cores (one thread for one item).
pub(crate) fn on_every_core<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    if items.len() <= 1 || threads == 1 {
        return items.iter().map(&f).collect();
    }
    let f = &f;
    std::thread::scope(|s| {
        let parts: Vec<_> = items
            .chunks(items.len().div_ceil(threads))
            .map(|part| s.spawn(move || part.iter().map(f).collect::<Vec<R>>()))
            .collect();
        parts
            .into_iter()
            .flat_map(|p| p.join().expect("a biometrics thread panicked"))
            .collect()
    })
}

/// The finger views of a fingerprint template, each as `(ISO position, MCC template)`.
pub(crate) fn finger_views(
    matcher: &Matcher,
    template: &Template,
) -> Result<Vec<(u8, MccTemplate)>, String> {
    let record = finger_record(template)?;
    Ok(record
        .views
        .iter()
        .map(|view| (view.position, matcher.template_from_view(&record, view)))
        .collect())
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
        let b = Biometrics::new(BiometricsConfig::default(), Default::default()).unwrap();
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
        let b = Biometrics::new(BiometricsConfig::default(), Default::default()).unwrap();
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

    #[test]
    fn the_dedup_threshold_rises_with_the_gallery() {
        let rules = BiometricsConfig::default().dedup_thresholds();
        assert_eq!(rules.face_for(1), rules.face);
        assert_eq!(rules.fingerprint_for(1), rules.fingerprint);
        let mut last = rules.face;
        for n in [10_000, 100_000, 1_000_000] {
            assert!(rules.face_for(n) > last, "{n}");
            last = rules.face_for(n);
        }
        assert!(rules.fingerprint_for(100_000) > rules.fingerprint);
        let bad = BiometricsConfig {
            dedup_fpir: 1.5,
            ..BiometricsConfig::default()
        };
        assert!(bad.check().unwrap_err().contains("dedup_fpir"));
        assert!(BiometricsConfig::default().check().is_ok());
    }

    /// A face scoring 0.5 against an enrolled one (above the floor, 0.438) refuses an
    /// enrollment while the gallery is small; among 50,000 other faces the threshold has risen
    /// past it (to hold the share of newcomers refused), and the same face is let through.
    #[test]
    fn a_near_face_refused_in_a_small_gallery_passes_in_a_large_one() {
        use quorumid_biometrics::synthetic::Rng;
        let dim = 128;
        let mut rng = Rng::new(11);
        let unit = |rng: &mut Rng| -> Vec<f32> {
            rng.unit_vector(dim).into_iter().map(|v| v as f32).collect()
        };
        let probe = unit(&mut rng);
        // `near` = 0.5 probe + sqrt(0.75) q, with q a unit vector orthogonal to the probe.
        let other = unit(&mut rng);
        let along: f32 = other.iter().zip(&probe).map(|(o, p)| o * p).sum();
        let q: Vec<f32> = other
            .iter()
            .zip(&probe)
            .map(|(o, p)| o - along * p)
            .collect();
        let norm = q.iter().map(|v| v * v).sum::<f32>().sqrt();
        let near: Vec<f32> = probe
            .iter()
            .zip(&q)
            .map(|(p, q)| 0.5 * p + 0.75f32.sqrt() * q / norm)
            .collect();
        let index = Arc::new(DedupIndex::default());
        let b = Biometrics::new(BiometricsConfig::default(), index.clone()).unwrap();
        let id = |n: u64| {
            let mut bits = [0u8; 10];
            bits[..8].copy_from_slice(&n.to_be_bytes());
            crate::registry::IdentityId::from_random(bits)
        };
        index.insert(&id(0), &[face_template("sface", &near)]);
        let enrolling = vec![Some(vec![face_template("sface", &probe)])];
        assert_eq!(b.duplicates(&enrolling), vec![Some(Modality::Face)]);
        for n in 1..50_000 {
            index.insert(&id(n), &[face_template("sface", &unit(&mut rng))]);
        }
        assert!(b.thresholds.dedup_thresholds().face_for(index.faces()) > 0.55);
        assert_eq!(b.duplicates(&enrolling), vec![None]);
        // A re-enrolment of the same face still scores far above it.
        let again = vec![Some(vec![face_template("sface", &near)])];
        assert_eq!(b.duplicates(&again), vec![Some(Modality::Face)]);
        // Checked against a batch's earlier enrollment, the near face takes the same
        // threshold: the node's 50,000 faces count towards its comparisons.
        let earlier = DedupIndex::default();
        earlier.insert(&id(0), &[face_template("sface", &near)]);
        assert_eq!(
            b.duplicate(&[face_template("sface", &probe)], &earlier),
            None
        );
        assert_eq!(
            b.duplicate(&[face_template("sface", &near)], &earlier),
            Some(Modality::Face)
        );
    }
}
