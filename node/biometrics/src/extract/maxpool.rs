//! 2x2 max pooling of stride 2 over NCHW `f32` tensors, put in the place of tract's in the
//! decluttered model (YuNet has four). tract's pooling walks a generic patch per output
//! point; these took a sixth of YuNet's time. Here each output row is the maximum of two
//! input rows' pairs, a loop the compiler vectorises. The maximum of four values does not
//! depend on the order it is taken in: the results are tract's.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::{MaxPool, PaddingSpec};
use tract_onnx::tract_core::ops::nn::DataFormat;

use super::model::{eval_planned, planned_output_facts};

/// The operator tract runs in the place of a 2x2, stride 2 `MaxPool`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MaxPool2x2 {
    input_shape: TVec<usize>,
    output_shape: TVec<usize>,
}

impl MaxPool2x2 {
    /// The replacement for `pool`, or `None` when it is not that pooling over a concrete
    /// NCHW (or CHW) `f32` shape.
    fn for_pool(model: &TypedModel, node: &TypedNode, pool: &MaxPool) -> TractResult<Option<Self>> {
        let spec = &pool.pool_spec;
        if pool.with_index_outputs.is_some()
            || !matches!(spec.data_format, DataFormat::NCHW | DataFormat::CHW)
            || spec.kernel_shape.as_slice() != [2, 2]
            || spec.strides().as_ref() != [2, 2]
            || spec.dilations().iter().any(|&d| d != 1)
            || !matches!(spec.padding, PaddingSpec::Valid)
            || node.inputs.len() != 1
            || node.outputs.len() != 1
        {
            return Ok(None);
        }
        let x = model.outlet_fact(node.inputs[0])?;
        let Some(input_shape) = x.shape.as_concrete() else {
            return Ok(None);
        };
        let rank = input_shape.len();
        if x.datum_type != f32::datum_type() || rank < 3 {
            return Ok(None);
        }
        let mut output_shape: TVec<usize> = input_shape.into();
        output_shape[rank - 2] /= 2;
        output_shape[rank - 1] /= 2;
        if output_shape.contains(&0)
            || node.outputs[0].fact.shape.as_concrete() != Some(&output_shape[..])
        {
            return Ok(None);
        }
        Ok(Some(MaxPool2x2 {
            input_shape: input_shape.into(),
            output_shape,
        }))
    }
}

/// Replaces every `MaxPool` of `model` that [`MaxPool2x2`] can run; returns how many.
pub(crate) fn substitute(model: &mut TypedModel) -> TractResult<usize> {
    let mut replaced = 0;
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(pool) = node.op_as::<MaxPool>() else {
            continue;
        };
        let Some(op) = MaxPool2x2::for_pool(model, node, pool)? else {
            continue;
        };
        let patch = TypedModelPatch::replace_single_op(model, node, &node.inputs, op)?;
        patch.apply(model)?;
        replaced += 1;
    }
    Ok(replaced)
}

impl Op for MaxPool2x2 {
    fn name(&self) -> StaticName {
        "QuorumidMaxPool2x2".into()
    }

    op_as_typed_op!();
}

impl EvalOp for MaxPool2x2 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (input, output) = (&self.input_shape, &self.output_shape);
        let plane = [input[input.len() - 2], input[input.len() - 1]];
        eval_planned("max pooling", input, output, inputs, |i, o| {
            pool(i, plane, o)
        })
    }
}

impl TypedOp for MaxPool2x2 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        planned_output_facts("max pooling", &self.input_shape, &self.output_shape, inputs)
    }

    as_op!();
}

/// Pools every `h x w` plane of `input` into `output`.
fn pool(input: &[f32], [h, w]: [usize; 2], output: &mut [f32]) {
    let (oh, ow) = (h / 2, w / 2);
    for (x, y) in input
        .chunks_exact(h * w)
        .zip(output.chunks_exact_mut(oh * ow))
    {
        for (r, out) in y.chunks_exact_mut(ow).enumerate() {
            let a = &x[2 * r * w..2 * r * w + 2 * ow];
            let b = &x[(2 * r + 1) * w..(2 * r + 1) * w + 2 * ow];
            for ((o, a), b) in out.iter_mut().zip(a.chunks_exact(2)).zip(b.chunks_exact(2)) {
                *o = a[0].max(a[1]).max(b[0].max(b[1]));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::tract_core::ops::cnn::PoolSpec;

    #[test]
    fn matches_tract_on_random_inputs() {
        let mut seed = 0x5eedu64;
        for (c, h, w) in [(3, 8, 6), (2, 7, 9), (16, 32, 36), (1, 2, 2)] {
            let mut model = TypedModel::default();
            let x = model.add_source("x", f32::fact([1, c, h, w])).unwrap();
            let spec = PoolSpec {
                data_format: DataFormat::NCHW,
                kernel_shape: tvec![2, 2],
                padding: PaddingSpec::Valid,
                dilations: None,
                strides: Some(tvec![2, 2]),
                input_channels: c,
                output_channels: c,
            };
            let op = MaxPool {
                pool_spec: spec,
                with_index_outputs: None,
            };
            let y = model.wire_node("pool", op, &[x]).unwrap();
            model.select_output_outlets(&y).unwrap();
            let values: Vec<f32> = (0..c * h * w)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    (seed >> 40) as f32 / (1u64 << 23) as f32 - 1.0
                })
                .collect();
            let input = Tensor::from_shape(&[1, c, h, w], &values).unwrap();
            let run = |model: TypedModel| {
                let plan = model.into_optimized().unwrap().into_runnable().unwrap();
                let out = plan.run(tvec!(input.clone().into_tvalue())).unwrap();
                let out = out[0].clone().into_tensor();
                (
                    out.shape().to_vec(),
                    out.try_as_plain_ram()
                        .unwrap()
                        .as_slice::<f32>()
                        .unwrap()
                        .to_vec(),
                )
            };
            let expected = run(model.clone());
            let mut ours = model.into_decluttered().unwrap();
            assert_eq!(substitute(&mut ours).unwrap(), 1, "{c}x{h}x{w}");
            assert_eq!(run(ours), expected, "{c}x{h}x{w}");
        }
    }
}
