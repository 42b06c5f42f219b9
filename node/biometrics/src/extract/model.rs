//! Reading the ONNX files into tract, and planning them: a size-checked read, the recorded
//! intermediate shapes dropped (YuNet's file records them for 640x640; tract infers them for
//! the size it is given), `PRelu` parsed into [`prelu`]'s operator, and the 3x3 depthwise
//! convolutions, the first 3x3 convolution and 2x2 max pooling handed to [`depthwise`],
//! [`conv3x3`] and [`maxpool`] before tract optimises the rest.

use std::path::Path;
use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;

use super::ExtractError;
use super::{conv3x3, depthwise, maxpool, prelu};

/// Largest model file read (SFace is 37 MiB).
const MAX_MODEL_BYTES: u64 = 256 << 20;

pub(crate) fn load(path: &Path) -> Result<InferenceModel, ExtractError> {
    let invalid = |reason: String| ExtractError::InvalidModel {
        path: path.to_path_buf(),
        reason,
    };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ExtractError::ModelMissing {
                path: path.to_path_buf(),
            });
        }
        Err(e) => return Err(invalid(e.to_string())),
    };
    if !meta.is_file() || meta.len() > MAX_MODEL_BYTES {
        return Err(invalid(format!(
            "not a file of at most {MAX_MODEL_BYTES} bytes"
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| invalid(e.to_string()))?;
    let mut onnx = tract_onnx::onnx()
        .with_ignore_value_info(true)
        .with_ignore_output_shapes(true);
    prelu::register(&mut onnx);
    onnx.model_for_read(&mut bytes.as_slice())
        .map_err(|e| invalid(format!("{e:#}")))
}

/// The runnable plan of `model` for one concrete input: typed and decluttered by tract, its
/// 3x3 depthwise convolutions handed to [`depthwise`], its first 3x3 convolution to
/// [`conv3x3`] and its 2x2 max pooling to [`maxpool`], then optimised by tract.
pub(crate) fn optimise(
    model: InferenceModel,
    input: TypedFact,
) -> TractResult<Arc<TypedRunnableModel>> {
    let mut typed = model
        .with_input_fact(0, input.into())?
        .into_typed()?
        .into_decluttered()?;
    depthwise::substitute(&mut typed)?;
    conv3x3::substitute(&mut typed)?;
    maxpool::substitute(&mut typed)?;
    typed.into_optimized()?.into_runnable()
}

/// `EvalOp::eval` of our operators that turn one f32 tensor of the planned shape into a new
/// one of theirs: checks the input's shape, then `run` fills the zeroed output.
pub(super) fn eval_planned(
    what: &str,
    input_shape: &[usize],
    output_shape: &[usize],
    inputs: TVec<TValue>,
    run: impl FnOnce(&[f32], &mut [f32]),
) -> TractResult<TVec<TValue>> {
    let input = args_1!(inputs);
    ensure!(
        input.shape() == input_shape,
        "{what} planned for {input_shape:?}, given {:?}",
        input.shape()
    );
    let view = input.try_as_plain_ram()?;
    let mut output = Tensor::zero::<f32>(output_shape)?;
    run(
        view.as_slice::<f32>()?,
        output.try_as_plain_ram_mut()?.as_slice_mut::<f32>()?,
    );
    Ok(tvec!(output.into_tvalue()))
}

/// `TypedOp::output_facts` of the same operators: one f32 input of the planned shape.
pub(super) fn planned_output_facts(
    what: &str,
    input_shape: &[usize],
    output_shape: &[usize],
    inputs: &[&TypedFact],
) -> TractResult<TVec<TypedFact>> {
    ensure!(
        inputs.len() == 1 && inputs[0].datum_type == f32::datum_type(),
        "the {what} takes one f32 tensor"
    );
    ensure!(
        inputs[0].shape.as_concrete() == Some(input_shape),
        "the {what} is planned for {input_shape:?}, given {:?}",
        inputs[0].shape
    );
    Ok(tvec!(f32::fact(output_shape)))
}
