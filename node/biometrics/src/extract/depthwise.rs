//! A 3x3 depthwise convolution over NCHW `f32` tensors, put in the place of tract's own in
//! the decluttered model, before tract optimises it (YuNet has 20 of them, SFace 13).
//!
//! tract 0.23 has no vectorised depthwise kernel for x86-64: it walks every output point tap
//! by tap through a generic loop, and that was half of YuNet's time. Here each channel is
//! first copied into a zero-padded scratch plane whose rows are split by phase of the column
//! stride (even columns, then odd ones, for stride 2), so that every tap of an output row is a
//! contiguous slice: an output row is then nine multiply-adds over slices, which the compiler
//! vectorises (SSE2 on baseline x86-64; an AVX2 copy is picked at run time when the processor
//! has it).
//!
//! Each output is summed as tract sums it: the bias, then the taps row by row, each a multiply
//! then an add (no fused multiply-add). The padding adds exact zeros where tract skips the
//! taps, so the results are tract's, bit for bit (the tests check it on random inputs).

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat};
use tract_onnx::tract_core::ops::nn::DataFormat;

/// Taps of a 3x3 kernel.
const TAPS: usize = 9;

/// Where one channel's output points read: sizes, strides and padding of the two spatial axes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Geometry {
    /// Input rows and columns.
    input: [usize; 2],
    /// Output rows and columns.
    output: [usize; 2],
    strides: [usize; 2],
    /// Padding before the first row and the first column (what lies past the input's end is
    /// read as zero too).
    pad: [usize; 2],
}

impl Geometry {
    /// Padded rows and columns the output reads.
    fn padded(&self) -> [usize; 2] {
        [0, 1].map(|a| (self.output[a] - 1) * self.strides[a] + 3)
    }

    /// Rows and columns of one phase plane (the padded points of one remainder modulo the
    /// strides).
    fn phase_dims(&self) -> [usize; 2] {
        let padded = self.padded();
        [0, 1].map(|a| padded[a].div_ceil(self.strides[a]))
    }

    fn scratch_len(&self) -> usize {
        let [rows, cols] = self.phase_dims();
        self.strides[0] * self.strides[1] * rows * cols
    }

    /// Points of the single run that computes a plane of short rows.
    fn short_len(&self) -> usize {
        (self.output[0] - 1) * self.phase_dims()[1] + self.output[1]
    }
}

/// The operator tract runs in the place of a depthwise `Conv`.
#[derive(Debug, Clone)]
pub(crate) struct Depthwise3x3 {
    geometry: Geometry,
    channels: usize,
    input_shape: TVec<usize>,
    output_shape: TVec<usize>,
    /// Nine taps a channel, row by row.
    kernel: Vec<f32>,
    /// One a channel.
    bias: Vec<f32>,
}

/// Equal when the weights are the same bits (tract compares operators to merge duplicates).
impl PartialEq for Depthwise3x3 {
    fn eq(&self, other: &Self) -> bool {
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        self.geometry == other.geometry
            && self.channels == other.channels
            && self.input_shape == other.input_shape
            && self.output_shape == other.output_shape
            && bits(&self.kernel) == bits(&other.kernel)
            && bits(&self.bias) == bits(&other.bias)
    }
}

impl Eq for Depthwise3x3 {}

impl Depthwise3x3 {
    /// The replacement for `conv`, or `None` when it is not a float 3x3 depthwise convolution
    /// over a concrete NCHW (or CHW) shape with constant weights.
    fn for_conv(model: &TypedModel, node: &TypedNode, conv: &Conv) -> TractResult<Option<Self>> {
        let spec = &conv.pool_spec;
        let channels = spec.input_channels;
        if conv.q_params.is_some()
            || conv.group != channels
            || spec.output_channels != channels
            || channels < 2
            || conv.kernel_fmt != KernelFormat::OIHW
            || !matches!(spec.data_format, DataFormat::NCHW | DataFormat::CHW)
            || spec.kernel_shape.as_slice() != [3, 3]
            || spec.dilations().iter().any(|&d| d != 1)
            || spec.strides().iter().any(|&s| s == 0 || s > 2)
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
            || kernel.shape() != [channels, 1, 3, 3]
            || !(bias.len() == channels || bias.len() == 1)
        {
            return Ok(None);
        }
        let shape = spec.data_format.shape(input_shape)?;
        if *shape.c() != channels || shape.n().is_some_and(|&n| n != 1) {
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
        output_shape[rank - 2..].copy_from_slice(&geometry.output);
        if node.outputs[0].fact.shape.as_concrete() != Some(&output_shape[..]) {
            return Ok(None);
        }
        let bias = bias.try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
        Ok(Some(Depthwise3x3 {
            geometry,
            channels,
            input_shape: input_shape.into(),
            output_shape,
            kernel: kernel.try_as_plain_ram()?.as_slice::<f32>()?.to_vec(),
            bias: if bias.len() == 1 {
                vec![bias[0]; channels]
            } else {
                bias
            },
        }))
    }

    fn run(&self, input: &[f32], output: &mut [f32]) {
        let g = &self.geometry;
        let (plane_in, plane_out) = (g.input[0] * g.input[1], g.output[0] * g.output[1]);
        let mut scratch = vec![0f32; g.scratch_len()];
        let mut short = vec![0f32; g.short_len()];
        let planes = input
            .chunks_exact(plane_in)
            .zip(output.chunks_exact_mut(plane_out));
        for (c, (x, y)) in planes.enumerate().take(self.channels) {
            let taps: &[f32; TAPS] = self.kernel[TAPS * c..TAPS * (c + 1)]
                .try_into()
                .expect("nine taps a channel");
            plane(g, taps, self.bias[c], x, y, &mut scratch, &mut short);
        }
    }
}

/// Replaces every `Conv` of `model` that [`Depthwise3x3`] can run; returns how many.
pub(crate) fn substitute(model: &mut TypedModel) -> TractResult<usize> {
    let mut replaced = 0;
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(conv) = node.op_as::<Conv>() else {
            continue;
        };
        let Some(op) = Depthwise3x3::for_conv(model, node, conv)? else {
            continue;
        };
        let patch = TypedModelPatch::replace_single_op(model, node, &node.inputs[..1], op)?;
        patch.apply(model)?;
        replaced += 1;
    }
    Ok(replaced)
}

impl Op for Depthwise3x3 {
    fn name(&self) -> StaticName {
        "QuorumidDepthwise3x3".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("{:?}", self.geometry)])
    }

    op_as_typed_op!();
}

impl EvalOp for Depthwise3x3 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        ensure!(
            input.shape() == &self.input_shape[..],
            "depthwise convolution planned for {:?}, given {:?}",
            self.input_shape,
            input.shape()
        );
        let view = input.try_as_plain_ram()?;
        let mut output = Tensor::zero::<f32>(&self.output_shape)?;
        self.run(
            view.as_slice::<f32>()?,
            output.try_as_plain_ram_mut()?.as_slice_mut::<f32>()?,
        );
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for Depthwise3x3 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 1 && inputs[0].datum_type == f32::datum_type());
        ensure!(inputs[0].shape.as_concrete() == Some(&self.input_shape[..]));
        Ok(tvec!(f32::fact(&self.output_shape)))
    }

    fn cost(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let points: usize = self.output_shape.iter().product();
        Ok(tvec!((
            Cost::FMA(f32::datum_type()),
            (points * TAPS).into()
        )))
    }

    as_op!();
}

/// Output rows shorter than this are computed as one run over the phase planes' full rows
/// (then copied out without the few columns past the end), not one short run a row.
const SHORT_ROW: usize = 32;

/// One channel: `input` is `geometry.input` (rows x columns), `output` `geometry.output`;
/// `scratch` holds `geometry.scratch_len()` values, `short` `geometry.short_len()`.
fn plane(
    g: &Geometry,
    taps: &[f32; TAPS],
    bias: f32,
    input: &[f32],
    output: &mut [f32],
    scratch: &mut [f32],
    short: &mut [f32],
) {
    let [rows, cols] = g.padded();
    let [sh, sw] = g.strides;
    let [prow, l] = g.phase_dims();
    let plane_size = prow * l;
    let [h, w] = g.input;
    let [pt, pl] = g.pad;
    // The padded plane, split into phase planes: padded row r, column c is at row r / sh,
    // column c / sw of phase plane (r % sh, c % sw). Past the input it is zero.
    scratch.fill(0.0);
    for (iy, src) in input.chunks_exact(w).take(h).enumerate() {
        let r = iy + pt;
        if r >= rows {
            break;
        }
        let base = (r % sh) * sw * plane_size + (r / sh) * l;
        let src = &src[..w.min(cols - pl)];
        if sw == 1 {
            scratch[base + pl..base + pl + src.len()].copy_from_slice(src);
        } else {
            let (even, odd) = scratch[base..].split_at_mut(plane_size);
            deinterleave(src, pl, &mut even[..l], &mut odd[..l]);
        }
    }
    let [oh, ow] = g.output;
    let flat = ow < SHORT_ROW;
    let len = if flat { g.short_len() } else { ow };
    // Where tap (ky, kx) of output row 0 starts; row y starts y * l further.
    let offsets: [usize; TAPS] = std::array::from_fn(|t| {
        let (ky, kx) = (t / 3, t % 3);
        ((ky % sh) * sw + kx % sw) * plane_size + (ky / sh) * l + kx / sw
    });
    let row = |y: usize| offsets.map(|o| &scratch[y * l + o..y * l + o + len]);
    if flat {
        let short = &mut short[..len];
        output_row(short, row(0), taps, bias);
        for (y, out) in output.chunks_exact_mut(ow).take(oh).enumerate() {
            out.copy_from_slice(&short[y * l..y * l + ow]);
        }
    } else {
        for (y, out) in output.chunks_exact_mut(ow).take(oh).enumerate() {
            output_row(out, row(y), taps, bias);
        }
    }
}

/// Columns `pad..` of a padded row of stride 2, from `src`, into its even and odd phases.
fn deinterleave(src: &[f32], pad: usize, even: &mut [f32], odd: &mut [f32]) {
    let mut src = src;
    let mut c = pad;
    if c % 2 == 1
        && let Some((&first, rest)) = src.split_first()
    {
        odd[c / 2] = first;
        src = rest;
        c += 1;
    }
    let j = c / 2;
    let pairs = src.chunks_exact(2);
    let tail = pairs.remainder();
    for ((pair, e), o) in pairs.zip(&mut even[j..]).zip(&mut odd[j..]) {
        *e = pair[0];
        *o = pair[1];
    }
    if let [last] = tail {
        even[j + src.len() / 2] = *last;
    }
}

/// `out[x] = bias + Σ taps[t] * row[t][x]`, the taps in order; every slice `out.len()` long.
fn output_row(out: &mut [f32], row: [&[f32]; TAPS], taps: &[f32; TAPS], bias: f32) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the processor has AVX2, checked just above.
        unsafe { output_row_avx2(out, row, taps, bias) };
        return;
    }
    output_row_body(out, row, taps, bias);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn output_row_avx2(out: &mut [f32], row: [&[f32]; TAPS], taps: &[f32; TAPS], bias: f32) {
    output_row_body(out, row, taps, bias);
}

#[inline(always)]
fn output_row_body(out: &mut [f32], row: [&[f32]; TAPS], taps: &[f32; TAPS], bias: f32) {
    let n = out.len();
    let [a0, a1, a2, a3, a4, a5, a6, a7, a8] = row.map(|s| &s[..n]);
    let [k0, k1, k2, k3, k4, k5, k6, k7, k8] = *taps;
    for x in 0..n {
        let mut s = bias;
        s += k0 * a0[x];
        s += k1 * a1[x];
        s += k2 * a2[x];
        s += k3 * a3[x];
        s += k4 * a4[x];
        s += k5 * a5[x];
        s += k6 * a6[x];
        s += k7 * a7[x];
        s += k8 * a8[x];
        out[x] = s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::tract_core::ops::cnn::{PaddingSpec, PoolSpec};

    /// A small deterministic generator (xorshift), values in [-1, 1).
    struct Random(u64);

    impl Random {
        fn values(&mut self, n: usize) -> Vec<f32> {
            (0..n)
                .map(|_| {
                    self.0 ^= self.0 << 13;
                    self.0 ^= self.0 >> 7;
                    self.0 ^= self.0 << 17;
                    (self.0 >> 40) as f32 / (1u64 << 23) as f32 - 1.0
                })
                .collect()
        }
    }

    /// A model of one depthwise `Conv` of `c` channels over `h x w`, random weights.
    fn conv_model(
        c: usize,
        h: usize,
        w: usize,
        stride: usize,
        pad: [usize; 2],
        random: &mut Random,
    ) -> TypedModel {
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([1, c, h, w])).unwrap();
        let kernel = Tensor::from_shape(&[c, 1, 3, 3], &random.values(9 * c)).unwrap();
        let bias = Tensor::from_shape(&[c], &random.values(c)).unwrap();
        let kernel = model.add_const("kernel", kernel).unwrap();
        let bias = model.add_const("bias", bias).unwrap();
        let conv = Conv {
            pool_spec: PoolSpec {
                data_format: DataFormat::NCHW,
                kernel_shape: tvec![3, 3],
                padding: PaddingSpec::Explicit(tvec![pad[0]; 2], tvec![pad[1]; 2]),
                dilations: None,
                strides: Some(tvec![stride; 2]),
                input_channels: c,
                output_channels: c,
            },
            kernel_fmt: KernelFormat::OIHW,
            group: c,
            q_params: None,
        };
        let y = model.wire_node("conv", conv, &[x, kernel, bias]).unwrap();
        model.select_output_outlets(&y).unwrap();
        model
    }

    fn run(model: TypedModel, input: &Tensor) -> Tensor {
        let plan = model.into_optimized().unwrap().into_runnable().unwrap();
        let out = plan.run(tvec!(input.clone().into_tvalue())).unwrap();
        out[0].clone().into_tensor()
    }

    #[test]
    fn matches_tract_on_random_inputs() {
        let mut random = Random(0x5eed);
        // Odd and even sizes, both strides, the padding the models use and none, sizes
        // shorter than a vector and longer.
        for (c, h, w, stride, pad) in [
            (3, 7, 5, 1, [1, 1]),
            (4, 16, 19, 1, [1, 1]),
            (5, 17, 20, 2, [1, 1]),
            (2, 14, 14, 2, [1, 1]),
            (3, 9, 11, 1, [0, 0]),
            (3, 9, 11, 2, [0, 1]),
            (2, 3, 3, 1, [1, 1]),
            (2, 2, 2, 2, [1, 1]),
            (2, 7, 7, 1, [1, 1]),
            (3, 40, 37, 2, [1, 1]),
            (3, 41, 36, 2, [0, 0]),
            (2, 35, 40, 1, [1, 1]),
            (3, 10, 12, 2, [1, 0]),
            (3, 11, 13, 2, [2, 0]),
        ] {
            let model = conv_model(c, h, w, stride, pad, &mut random);
            let input = Tensor::from_shape(&[1, c, h, w], &random.values(c * h * w)).unwrap();
            let expected = run(model.clone(), &input);
            let mut ours = model.into_decluttered().unwrap();
            assert_eq!(substitute(&mut ours).unwrap(), 1, "{c}x{h}x{w} s{stride}");
            let ours = ours.into_decluttered().unwrap();
            assert!(
                ours.nodes.iter().any(|n| n.op_is::<Depthwise3x3>()),
                "substituted"
            );
            let got = run(ours, &input);
            assert_eq!(got.shape(), expected.shape(), "{c}x{h}x{w} s{stride}");
            let (got, expected) = (
                got.try_as_plain_ram()
                    .unwrap()
                    .as_slice::<f32>()
                    .unwrap()
                    .to_vec(),
                expected
                    .try_as_plain_ram()
                    .unwrap()
                    .as_slice::<f32>()
                    .unwrap()
                    .to_vec(),
            );
            // tract's own order of operations: the same bits.
            assert_eq!(got, expected, "{c}x{h}x{w} stride {stride} pad {pad:?}");
        }
    }

    #[test]
    fn other_convolutions_are_left_to_tract() {
        let mut random = Random(7);
        let mut model = conv_model(4, 8, 8, 1, [1, 1], &mut random);
        // The same convolution with a 5x5 kernel is not ours.
        for node in &mut model.nodes {
            if let Some(conv) = node.op_as_mut::<Conv>() {
                conv.pool_spec.kernel_shape = tvec![5, 5];
            }
        }
        assert_eq!(substitute(&mut model).unwrap(), 0);
    }
}
