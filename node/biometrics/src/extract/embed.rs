//! Face embedding with SFace (`face_recognition_sface_2021dec.onnx`), as OpenCV's
//! `FaceRecognizerSF::feature`: the 112x112 aligned crop as a `1x3x112x112` float blob of
//! RGB planes in 0..=255 (`blobFromImage` with scale 1, no mean, `swapRB`), 128 values out.

use std::sync::Arc;

use tract_onnx::prelude::*;

use super::align::CROP;
use super::{BgrImage, ExtractError};
use crate::face::{Embedding, ModelId};

/// SFace's embedding size.
pub const DIMENSION: usize = 128;
/// The model name templates made here carry (as in the ORL data and the node's defaults).
pub const MODEL_NAME: &str = "sface-2021dec";

/// The model id of SFace templates: `sface-2021dec`, 128 dimensions.
pub fn sface_model() -> ModelId {
    // A non-empty name and a dimension in range.
    ModelId::new(MODEL_NAME, DIMENSION).expect("valid model id")
}

pub(crate) struct Embedder {
    plan: Arc<TypedRunnableModel>,
    model: ModelId,
}

impl Embedder {
    pub(crate) fn new(model: InferenceModel) -> TractResult<Self> {
        let plan = super::model::optimise(model, f32::fact([1, 3, CROP, CROP]))?;
        Ok(Embedder {
            plan,
            model: sface_model(),
        })
    }

    /// Checks the model outputs one vector of [`DIMENSION`] values.
    pub(crate) fn check(&self) -> TractResult<()> {
        let black = BgrImage::from_bgr(CROP, CROP, vec![0; CROP * CROP * 3])
            .ok_or_else(|| TractError::msg("crop size"))?;
        let out = self.raw(&black)?;
        match out.len() {
            DIMENSION => Ok(()),
            n => Err(TractError::msg(format!(
                "SFace outputs {DIMENSION} values, this model {n}"
            ))),
        }
    }

    /// The plan and a crop's input blob (for profiling).
    pub(crate) fn plan_and_blob(
        &self,
        crop: &BgrImage,
    ) -> TractResult<(Arc<TypedRunnableModel>, Tensor)> {
        Ok((self.plan.clone(), blob(crop)?))
    }

    fn raw(&self, crop: &BgrImage) -> TractResult<Vec<f32>> {
        let blob = blob(crop)?;
        let out = self.plan.run(tvec!(blob.into_tvalue()))?;
        let first = out
            .first()
            .ok_or_else(|| TractError::msg("SFace gave no output"))?;
        Ok(first.try_as_plain_ram()?.as_slice::<f32>()?.to_vec())
    }

    /// The L2-normalised embedding of an aligned 112x112 crop.
    pub(crate) fn embed(&self, crop: &BgrImage) -> Result<Embedding, ExtractError> {
        if (crop.width(), crop.height()) != (CROP, CROP) {
            return Err(ExtractError::Inference(format!(
                "SFace takes a {CROP}x{CROP} crop, not {}x{}",
                crop.width(),
                crop.height()
            )));
        }
        let values = self.raw(crop).map_err(ExtractError::inference)?;
        Embedding::new(self.model.clone(), values)
            .map_err(|e| ExtractError::Inference(format!("SFace output: {e}")))
    }
}

/// A 112x112 crop as SFace's `1x3x112x112` blob of R, G, B planes (`swapRB`).
fn blob(crop: &BgrImage) -> TractResult<Tensor> {
    let plane = CROP * CROP;
    let mut values = vec![0f32; 3 * plane];
    for (i, px) in crop.data().chunks_exact(3).take(plane).enumerate() {
        values[i] = f32::from(px[2]);
        values[plane + i] = f32::from(px[1]);
        values[2 * plane + i] = f32::from(px[0]);
    }
    Tensor::from_shape(&[1, 3, CROP, CROP], &values)
}
