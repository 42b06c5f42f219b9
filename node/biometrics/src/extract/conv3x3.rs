//! A 3x3 convolution of stride 1 and a few input channels over NCHW `f32` tensors: SFace's
//! first layer (the three colour planes in, 32 channels out at 112x112), put in the place of
//! tract's own in the decluttered model with the per-channel operations that follow it folded
//! in (as [`super::depthwise`] does).
//!
//! tract runs it as a matrix product over an im2col of the input, 27 deep, a shape its
//! kernels are not made for: a tenth of SFace's time. (YuNet's first layer, of stride 2, is
//! left to tract's direct convolution, which ran it in 0.77 ms of CPU against 1.03 ms here.)
//! Here each input channel is copied once
//! into its zero-padded phase planes (as for the depthwise convolution), then each output row
//! is the bias plus, for each input channel, nine multiply-adds over contiguous slices, then
//! the epilogue. The sums are taken in another order than tract's (and with fused
//! multiply-adds on AVX2 processors): they differ in their last bits.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat};
use tract_onnx::tract_core::ops::nn::DataFormat;

use super::depthwise::{
    Epilogue, Geometry, SHORT_ROW, TAPS, Values, WithEpilogue, accumulate_row, fill_phases,
    post_row, replace,
};
use super::model::{eval_planned, planned_output_facts};

/// The most input channels taken (their phase planes are all kept at once).
const MAX_INPUTS: usize = 4;

/// The operator tract runs in the place of such a `Conv`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Conv3x3 {
    geometry: Geometry,
    inputs: usize,
    outputs: usize,
    input_shape: TVec<usize>,
    output_shape: TVec<usize>,
    /// Output channel, input channel, nine taps row by row.
    kernel: Values,
    /// One an output channel.
    bias: Values,
    epilogue: Epilogue,
}

impl Conv3x3 {
    /// The replacement for `conv`, or `None` when it is not a float 3x3 convolution of stride
    /// 1 and at most [`MAX_INPUTS`] input channels, one group, over a concrete NCHW (or CHW)
    /// shape with constant weights.
    fn for_conv(model: &TypedModel, node: &TypedNode, conv: &Conv) -> TractResult<Option<Self>> {
        let spec = &conv.pool_spec;
        let (inputs, outputs) = (spec.input_channels, spec.output_channels);
        if conv.q_params.is_some()
            || conv.group != 1
            || inputs == 0
            || inputs > MAX_INPUTS
            || outputs == 0
            || conv.kernel_fmt != KernelFormat::OIHW
            || !matches!(spec.data_format, DataFormat::NCHW | DataFormat::CHW)
            || spec.kernel_shape.as_slice() != [3, 3]
            || spec.dilations().iter().any(|&d| d != 1)
            || spec.strides().iter().any(|&s| s != 1)
            || node.inputs.len() != 3
        {
            return Ok(None);
        }
        let [x, kernel, bias] = [0, 1, 2].map(|i| model.outlet_fact(node.inputs[i]));
        let (x, kernel, bias) = (x?, kernel?, bias?);
        let Some(input_shape) = x.shape.as_concrete() else {
            return Ok(None);
        };
        let (Some(kernel), Some(bias)) = (kernel.konst.as_ref(), bias.konst.as_ref()) else {
            return Ok(None);
        };
        if x.datum_type != f32::datum_type()
            || kernel.datum_type() != f32::datum_type()
            || bias.datum_type() != f32::datum_type()
            || kernel.shape() != [outputs, inputs, 3, 3]
            || !(bias.len() == outputs || bias.len() == 1)
        {
            return Ok(None);
        }
        let shape = spec.data_format.shape(input_shape)?;
        if *shape.c() != inputs || shape.n().is_some_and(|&n| n != 1) {
            return Ok(None);
        }
        let [h, w] = match shape.hw_dims() {
            &[h, w] => [h, w],
            _ => return Ok(None),
        };
        let padding = spec.computed_padding(&[h, w]);
        let geometry = Geometry {
            input: [h, w],
            output: [padding[0].convoluted, padding[1].convoluted],
            strides: [spec.stride(0), spec.stride(1)],
            pad: [padding[0].pad_before, padding[1].pad_before],
        };
        if geometry.output.contains(&0) || geometry.pad.iter().any(|&p| p > 2) {
            return Ok(None);
        }
        let mut output_shape: TVec<usize> = input_shape.into();
        let rank = output_shape.len();
        output_shape[rank - 3] = outputs;
        output_shape[rank - 2..].copy_from_slice(&geometry.output);
        if node.outputs[0].fact.shape.as_concrete() != Some(&output_shape[..]) {
            return Ok(None);
        }
        let bias = bias.try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
        Ok(Some(Conv3x3 {
            geometry,
            inputs,
            outputs,
            input_shape: input_shape.into(),
            output_shape,
            kernel: Values(kernel.try_as_plain_ram()?.as_slice::<f32>()?.to_vec()),
            bias: Values(if bias.len() == 1 {
                vec![bias[0]; outputs]
            } else {
                bias
            }),
            epilogue: Epilogue::default(),
        }))
    }

    fn run(&self, input: &[f32], output: &mut [f32]) {
        let g = &self.geometry;
        let (plane_in, plane_out) = (g.input[0] * g.input[1], g.output[0] * g.output[1]);
        let phases = g.scratch_len();
        let mut scratch = vec![0f32; phases * self.inputs];
        for (x, s) in input
            .chunks_exact(plane_in)
            .zip(scratch.chunks_exact_mut(phases))
        {
            fill_phases(g, x, s);
        }
        let offsets = g.tap_offsets();
        let l = g.phase_dims()[1];
        let [oh, ow] = g.output;
        let flat = ow < SHORT_ROW;
        let len = if flat { g.short_len() } else { ow };
        // Output channel o's sums for `len` points from output row y on, into `out`.
        let sums = |o: usize, y: usize, out: &mut [f32]| {
            out.fill(self.bias.0[o]);
            for i in 0..self.inputs {
                let at = (o * self.inputs + i) * TAPS;
                let taps: &[f32; TAPS] =
                    self.kernel.0[at..at + TAPS].try_into().expect("nine taps");
                let base = i * phases + y * l;
                let row = offsets.map(|t| &scratch[base + t..base + t + len]);
                accumulate_row(out, row, taps);
            }
            post_row(out, self.epilogue.channel(o));
        };
        let planes = output.chunks_exact_mut(plane_out).take(self.outputs);
        if flat {
            let mut short = vec![0f32; len];
            for (o, plane) in planes.enumerate() {
                sums(o, 0, &mut short);
                for (y, out) in plane.chunks_exact_mut(ow).take(oh).enumerate() {
                    out.copy_from_slice(&short[y * l..y * l + ow]);
                }
            }
        } else {
            for (o, plane) in planes.enumerate() {
                for (y, out) in plane.chunks_exact_mut(ow).take(oh).enumerate() {
                    sums(o, y, out);
                }
            }
        }
    }
}

/// Replaces every `Conv` of `model` that [`Conv3x3`] can run, with the per-channel operations
/// that follow it; returns how many.
pub(crate) fn substitute(model: &mut TypedModel) -> TractResult<usize> {
    let mut replaced = 0;
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(conv) = node.op_as::<Conv>() else {
            continue;
        };
        if let Some(op) = Conv3x3::for_conv(model, node, conv)? {
            replace(model, id, op)?;
            replaced += 1;
        }
    }
    Ok(replaced)
}

impl WithEpilogue for Conv3x3 {
    fn epilogue(&mut self) -> (&mut Epilogue, [usize; 3]) {
        let rank = self.output_shape.len();
        (&mut self.epilogue, [rank, rank - 3, self.outputs])
    }
}

impl Op for Conv3x3 {
    fn name(&self) -> StaticName {
        "QuorumidConv3x3".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![
            format!("{:?}", self.geometry),
            format!(
                "{} -> {} channels; {}",
                self.inputs,
                self.outputs,
                self.epilogue.describe()
            ),
        ])
    }

    op_as_typed_op!();
}

impl EvalOp for Conv3x3 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (input, output) = (&self.input_shape, &self.output_shape);
        eval_planned("convolution", input, output, inputs, |i, o| self.run(i, o))
    }
}

impl TypedOp for Conv3x3 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        planned_output_facts("convolution", &self.input_shape, &self.output_shape, inputs)
    }

    fn cost(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let points: usize = self.output_shape.iter().product();
        Ok(tvec!((
            Cost::FMA(f32::datum_type()),
            (points * self.inputs * TAPS).into()
        )))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::prelu::PRelu;
    use crate::extract::random_values;
    use tract_onnx::tract_core::ops::cnn::{PaddingSpec, PoolSpec};
    use tract_onnx::tract_core::ops::math;

    #[test]
    fn matches_tract_on_random_inputs() {
        let mut seed = 0x5eed;
        // (in, out, h, w, stride, then): 0 nothing, 1 Relu, 2 PRelu.
        for (i, o, h, w, stride, then) in [
            (3, 32, 40, 36, 1, 2),
            (3, 16, 64, 72, 1, 1),
            (1, 4, 9, 7, 1, 0),
            (2, 5, 17, 13, 1, 0),
            (4, 3, 12, 40, 1, 1),
        ] {
            let label = format!("{i}->{o} {h}x{w} stride {stride} then {then}");
            let mut model = TypedModel::default();
            let x = model.add_source("x", f32::fact([1, i, h, w])).unwrap();
            let kernel =
                Tensor::from_shape(&[o, i, 3, 3], &random_values(&mut seed, o * i * 9)).unwrap();
            let bias = Tensor::from_shape(&[o], &random_values(&mut seed, o)).unwrap();
            let kernel = model.add_const("kernel", kernel).unwrap();
            let bias = model.add_const("bias", bias).unwrap();
            let conv = Conv {
                pool_spec: PoolSpec {
                    data_format: DataFormat::NCHW,
                    kernel_shape: tvec![3, 3],
                    padding: PaddingSpec::Explicit(tvec![1, 1], tvec![1, 1]),
                    dilations: None,
                    strides: Some(tvec![stride, stride]),
                    input_channels: i,
                    output_channels: o,
                },
                kernel_fmt: KernelFormat::OIHW,
                group: 1,
                q_params: None,
            };
            let mut y = model.wire_node("conv", conv, &[x, kernel, bias]).unwrap()[0];
            if then == 1 {
                let zero = tensor0(0f32).broadcast_into_rank(4).unwrap();
                let zero = model.add_const("zero", zero).unwrap();
                y = model.wire_node("relu", math::max(), &[y, zero]).unwrap()[0];
            } else if then == 2 {
                let slopes = Tensor::from_shape(&[o, 1, 1], &random_values(&mut seed, o)).unwrap();
                let fact = model.outlet_fact(y).unwrap().clone();
                let slopes = TypedFact::try_from(slopes).unwrap();
                let prelu = PRelu::for_facts(&fact, &slopes).unwrap().unwrap();
                y = model.wire_node("prelu", prelu, &[y]).unwrap()[0];
            }
            model.select_output_outlets(&[y]).unwrap();
            let input =
                Tensor::from_shape(&[1, i, h, w], &random_values(&mut seed, i * h * w)).unwrap();
            let run = |model: TypedModel| {
                let plan = model.into_optimized().unwrap().into_runnable().unwrap();
                let out = plan.run(tvec!(input.clone().into_tvalue())).unwrap();
                let out = out[0].clone().into_tensor();
                let values = out
                    .try_as_plain_ram()
                    .unwrap()
                    .as_slice::<f32>()
                    .unwrap()
                    .to_vec();
                (out.shape().to_vec(), values)
            };
            // The same with stride 2 is left to tract.
            let mut strided = model.clone();
            for node in &mut strided.nodes {
                if let Some(conv) = node.op_as_mut::<Conv>() {
                    conv.pool_spec.strides = Some(tvec![2, 2]);
                }
            }
            assert_eq!(substitute(&mut strided).unwrap(), 0, "{label}");
            let expected = run(model.clone());
            let mut ours = model.into_decluttered().unwrap();
            assert_eq!(substitute(&mut ours).unwrap(), 1, "{label}");
            let ours = ours.into_decluttered().unwrap();
            let ops: Vec<_> = ours
                .nodes
                .iter()
                .map(|n| n.op().name())
                .filter(|n| n != "Const")
                .collect();
            assert_eq!(ops, ["Source", "QuorumidConv3x3"], "{label}");

            let (shape, got) = run(ours);
            assert_eq!(shape, expected.0, "{label}");
            // Summed in another order than tract's: the last bits differ.
            for (a, b) in got.iter().zip(&expected.1) {
                assert!(
                    (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                    "{label}: {a} vs {b}"
                );
            }
        }
    }
}
