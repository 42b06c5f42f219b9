//! A 3x3 depthwise convolution over `f32` tensors, put in the place of tract's own in the
//! decluttered model, before tract optimises it (YuNet has 26 of them, SFace 13), with the
//! per-channel operations that follow it folded in.
//!
//! tract 0.23 has no vectorised depthwise kernel for x86-64: it walks every output point tap
//! by tap through a generic loop, and that was half of YuNet's time. Here each channel is
//! first copied into zero-padded scratch planes, one per phase of the strides (for stride 2:
//! even rows and columns, even rows and odd columns, ...), so that every tap of an output row
//! is a contiguous slice: an output row is then nine multiply-adds over slices, which the
//! compiler vectorises (SSE2 on baseline x86-64; an AVX2 copy is picked at run time when the
//! processor has it). Channels-last tensors (YuNet's heads) are gathered a channel at a time.
//!
//! Each output is summed as tract sums it: the bias, then the taps row by row. Without FMA
//! each tap is a multiply then an add, and the padding adds exact zeros where tract skips the
//! taps, so the results are tract's bit for bit; with FMA (AVX2 processors) each tap rounds
//! once instead of twice, and the last bits differ (the tests check both on random inputs).
//! Stride 1 with padding 1 (most of them) reads the input in place, without the scratch copy.
//!
//! What follows the convolution on its only path, per channel, is applied to each sum while it
//! is in a register, in the same operations tract would run: a multiplication and an addition
//! by constants (SFace's batch normalisation), then `Relu` (`Max(x, 0)`, YuNet) or [`PRelu`]
//! (SFace). [`super::conv3x3`] shares the phase planes, the epilogue and the row kernels.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat};

use super::model::{eval_planned, planned_output_facts};

use super::prelu::PRelu;

/// Taps of a 3x3 kernel.
pub(super) const TAPS: usize = 9;

/// Where one channel's output points read: sizes, strides and padding of the two spatial axes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Geometry {
    /// Input rows and columns.
    pub(super) input: [usize; 2],
    /// Output rows and columns.
    pub(super) output: [usize; 2],
    pub(super) strides: [usize; 2],
    /// Padding before the first row and the first column (what lies past the input's end is
    /// read as zero too).
    pub(super) pad: [usize; 2],
}

impl Geometry {
    /// Padded rows and columns the output reads.
    pub(super) fn padded(&self) -> [usize; 2] {
        [0, 1].map(|a| (self.output[a] - 1) * self.strides[a] + 3)
    }

    /// Rows and columns of one phase plane (the padded points of one remainder modulo the
    /// strides).
    pub(super) fn phase_dims(&self) -> [usize; 2] {
        let padded = self.padded();
        [0, 1].map(|a| padded[a].div_ceil(self.strides[a]))
    }

    pub(super) fn scratch_len(&self) -> usize {
        let [rows, cols] = self.phase_dims();
        self.strides[0] * self.strides[1] * rows * cols
    }

    /// Where in the phase planes tap (ky, kx) of output row 0 starts; row y starts
    /// `y * phase_dims()[1]` further.
    pub(super) fn tap_offsets(&self) -> [usize; TAPS] {
        let [sh, sw] = self.strides;
        let [prow, l] = self.phase_dims();
        std::array::from_fn(|t| {
            let (ky, kx) = (t / 3, t % 3);
            ((ky % sh) * sw + kx % sw) * prow * l + (ky / sh) * l + kx / sw
        })
    }

    /// Stride 1 and padding 1, the output as large as the input, rows that are not short:
    /// what [`same_size_plane`] computes. (Short rows are better done as one run over the
    /// padded plane.)
    fn same_size(&self) -> bool {
        self.strides == [1, 1]
            && self.pad == [1, 1]
            && self.output == self.input
            && self.input[1] >= SHORT_ROW
    }

    /// Points of the single run that computes a plane of short rows.
    pub(super) fn short_len(&self) -> usize {
        (self.output[0] - 1) * self.phase_dims()[1] + self.output[1]
    }
}

/// Floats compared by their bits (tract compares operators to merge duplicates, which needs
/// `Eq`).
#[derive(Debug, Clone)]
pub(super) struct Values(pub(super) Vec<f32>);

impl PartialEq for Values {
    fn eq(&self, other: &Self) -> bool {
        self.0.len() == other.0.len()
            && self
                .0
                .iter()
                .zip(&other.0)
                .all(|(a, b)| a.to_bits() == b.to_bits())
    }
}

impl Eq for Values {}

/// What is applied to every output after the sum, per channel, in this order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Epilogue {
    scale: Option<Values>,
    shift: Option<Values>,
    activation: Activation,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) enum Activation {
    #[default]
    None,
    /// `Max(x, 0)`.
    Relu,
    /// `x < 0 ? x * slope : x`.
    PRelu(Values),
}

/// The operator tract runs in the place of a depthwise `Conv`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Depthwise3x3 {
    geometry: Geometry,
    channels: usize,
    /// Channels-last (NHWC or HWC) rather than NCHW or CHW.
    channels_last: bool,
    input_shape: TVec<usize>,
    output_shape: TVec<usize>,
    /// Nine taps a channel, row by row.
    kernel: Values,
    /// One a channel.
    bias: Values,
    epilogue: Epilogue,
}

/// `t`'s values when they vary along `axis` alone of a tensor of rank `rank` (ONNX
/// broadcasting: aligned on the last axis), one a channel; `None` otherwise.
fn per_channel(t: &Tensor, rank: usize, axis: usize, channels: usize) -> Option<Vec<f32>> {
    if t.datum_type() != f32::datum_type() || t.rank() > rank {
        return None;
    }
    let offset = rank - t.rank();
    let shape_ok = t
        .shape()
        .iter()
        .enumerate()
        .all(|(i, &d)| d == 1 || (i + offset == axis && d == channels));
    let values = t.try_as_plain_ram().ok()?.as_slice::<f32>().ok()?;
    match values.len() {
        _ if !shape_ok => None,
        1 => Some(vec![values[0]; channels]),
        n if n == channels => Some(values.to_vec()),
        _ => None,
    }
}

impl Depthwise3x3 {
    /// The replacement for `conv`, or `None` when it is not a float 3x3 depthwise convolution
    /// of stride 1 or 2 over a concrete shape of one image (channels first or last) with
    /// constant weights.
    fn for_conv(model: &TypedModel, node: &TypedNode, conv: &Conv) -> TractResult<Option<Self>> {
        let spec = &conv.pool_spec;
        let channels = spec.input_channels;
        if conv.q_params.is_some()
            || conv.group != channels
            || spec.output_channels != channels
            || conv.kernel_fmt != KernelFormat::OIHW
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
        let channels_last = spec.data_format.c_is_last();
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
        let h_axis = if channels_last { rank - 3 } else { rank - 2 };
        output_shape[h_axis..h_axis + 2].copy_from_slice(&geometry.output);
        if node.outputs[0].fact.shape.as_concrete() != Some(&output_shape[..]) {
            return Ok(None);
        }
        let bias = bias.try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
        Ok(Some(Depthwise3x3 {
            geometry,
            channels,
            channels_last,
            input_shape: input_shape.into(),
            output_shape,
            kernel: Values(kernel.try_as_plain_ram()?.as_slice::<f32>()?.to_vec()),
            bias: Values(if bias.len() == 1 {
                vec![bias[0]; channels]
            } else {
                bias
            }),
            epilogue: Epilogue::default(),
        }))
    }

    fn channel_axis(&self) -> usize {
        let rank = self.input_shape.len();
        if self.channels_last {
            rank - 1
        } else {
            rank - 3
        }
    }

    fn run(&self, input: &[f32], output: &mut [f32]) {
        let g = &self.geometry;
        let (plane_in, plane_out) = (g.input[0] * g.input[1], g.output[0] * g.output[1]);
        let same_size = g.same_size();
        let (mut scratch, mut short) = match same_size {
            true => (vec![0f32; g.input[1]], vec![]),
            false => (vec![0f32; g.scratch_len()], vec![0f32; g.short_len()]),
        };
        let channel =
            |c: usize, x: &[f32], y: &mut [f32], scratch: &mut [f32], short: &mut [f32]| {
                let taps: &[f32; TAPS] = self.kernel.0[TAPS * c..TAPS * (c + 1)]
                    .try_into()
                    .expect("nine taps a channel");
                let post = self.epilogue.channel(c);
                if same_size {
                    // The scratch is a row of zeros.
                    same_size_plane(g.input, taps, self.bias.0[c], x, y, scratch, post);
                } else {
                    plane(g, taps, self.bias.0[c], x, y, scratch, short, post);
                }
            };
        if !self.channels_last {
            let planes = input
                .chunks_exact(plane_in)
                .zip(output.chunks_exact_mut(plane_out));
            for (c, (x, y)) in planes.enumerate().take(self.channels) {
                channel(c, x, y, &mut scratch, &mut short);
            }
            return;
        }
        // Channels last: each channel gathered into a plane, and its output scattered back.
        let (mut x, mut y) = (vec![0f32; plane_in], vec![0f32; plane_out]);
        for c in 0..self.channels {
            for (v, i) in x
                .iter_mut()
                .zip(input.iter().skip(c).step_by(self.channels))
            {
                *v = *i;
            }
            channel(c, &x, &mut y, &mut scratch, &mut short);
            for (o, v) in output.iter_mut().skip(c).step_by(self.channels).zip(&y) {
                *o = *v;
            }
        }
    }
}

impl Epilogue {
    /// What it does, for tract's model dumps.
    pub(super) fn describe(&self) -> String {
        format!(
            "then scale: {}, shift: {}, activation: {}",
            self.scale.is_some(),
            self.shift.is_some(),
            match self.activation {
                Activation::None => "none",
                Activation::Relu => "relu",
                Activation::PRelu(_) => "prelu",
            }
        )
    }

    /// Folds `next`, the only reader of `input` (this operator's output so far), into the
    /// epilogue if it is a per-channel operation that can come next; says whether it did.
    /// `[rank, axis, channels]` say where the channels run in the output.
    pub(super) fn absorb(
        &mut self,
        model: &TypedModel,
        next: &TypedNode,
        input: OutletId,
        [rank, axis, channels]: [usize; 3],
    ) -> TractResult<bool> {
        let e = self;
        if next.outputs.len() != 1 || e.activation != Activation::None {
            return Ok(false);
        }
        if let Some(prelu) = next.op_as::<PRelu>() {
            let Some(slopes) = prelu.slopes_along(axis, channels) else {
                return Ok(false);
            };
            e.activation = Activation::PRelu(Values(slopes));
            return Ok(true);
        }
        let Some(bin) = next.op_as::<TypedBinOp>() else {
            return Ok(false);
        };
        let other = match *next.inputs.as_slice() {
            [a, b] if a == input && b != input => b,
            [a, b] if b == input && a != input => a,
            _ => return Ok(false),
        };
        let Some(values) = model
            .outlet_fact(other)?
            .konst
            .as_ref()
            .and_then(|t| per_channel(t, rank, axis, channels))
        else {
            return Ok(false);
        };
        if bin.1.is_some()
            || model.outlet_fact(OutletId::new(next.id, 0))?.datum_type != f32::datum_type()
        {
            return Ok(false);
        }
        match bin.0.name() {
            "Mul" if e.scale.is_none() && e.shift.is_none() => e.scale = Some(Values(values)),
            "Add" if e.shift.is_none() => e.shift = Some(Values(values)),
            "Max" if values.iter().all(|&v| v == 0.0) => e.activation = Activation::Relu,
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Channel `c`'s operations.
    pub(super) fn channel(&self, c: usize) -> Post {
        let at = |v: &Option<Values>, none: f32| v.as_ref().map_or(none, |v| v.0[c]);
        let (relu, slope) = match &self.activation {
            Activation::None => (false, 1.0),
            Activation::Relu => (true, 1.0),
            Activation::PRelu(slopes) => (false, slopes.0[c]),
        };
        Post {
            scale: at(&self.scale, 1.0),
            shift: at(&self.shift, 0.0),
            relu,
            slope,
        }
    }
}

/// One channel's [`Epilogue`], applied to each sum in registers. What is absent is the
/// identity: a scale of 1, a shift of 0 (exact, but for the sign of a zero sum) and a slope of 1.
#[derive(Debug, Clone, Copy)]
pub(super) struct Post {
    scale: f32,
    shift: f32,
    /// `Max(x, 0)`, else `x < 0 ? x * slope : x`.
    relu: bool,
    slope: f32,
}

impl Post {
    fn apply_any(self, v: f32) -> f32 {
        if self.relu {
            self.apply::<true>(v)
        } else {
            self.apply::<false>(v)
        }
    }

    #[inline(always)]
    fn apply<const RELU: bool>(self, v: f32) -> f32 {
        let v = v * self.scale + self.shift;
        if RELU {
            v.max(0.0)
        } else if v < 0.0 {
            v * self.slope
        } else {
            v
        }
    }
}

/// Replaces every `Conv` of `model` that [`Depthwise3x3`] can run, with the per-channel
/// operations that follow it; returns how many.
pub(crate) fn substitute(model: &mut TypedModel) -> TractResult<usize> {
    let mut replaced = 0;
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(conv) = node.op_as::<Conv>() else {
            continue;
        };
        if let Some(op) = Depthwise3x3::for_conv(model, node, conv)? {
            replace(model, id, op)?;
            replaced += 1;
        }
    }
    Ok(replaced)
}

/// An operator of ours that can take in the per-channel operations after it.
pub(super) trait WithEpilogue: TypedOp + Sized {
    /// Its epilogue, and where the channels run in its output: `[rank, axis, channels]`.
    fn epilogue(&mut self) -> (&mut Epilogue, [usize; 3]);
}

/// Puts `op` in the place of node `id` (on its first input) and of the per-channel operations
/// after it that its epilogue can take in.
pub(super) fn replace<O: WithEpilogue>(
    model: &mut TypedModel,
    id: usize,
    mut op: O,
) -> TractResult<()> {
    // Follow the output while it has one reader that can be folded in.
    let mut last = OutletId::new(id, 0);
    loop {
        let readers = &model.node(last.node).outputs[last.slot].successors;
        if readers.len() != 1 || model.outputs.contains(&last) {
            break;
        }
        let next = model.node(readers[0].node);
        let (epilogue, channels) = op.epilogue();
        if !epilogue.absorb(model, next, last, channels)? {
            break;
        }
        last = OutletId::new(next.id, 0);
    }
    let node = model.node(id);
    let mut patch = TypedModelPatch::default();
    let x = patch.tap_model(model, node.inputs[0])?;
    let y = patch.wire_node(&node.name, op, &[x])?[0];
    patch.shunt_outside(model, last, y)?;
    patch.apply(model)
}

impl WithEpilogue for Depthwise3x3 {
    fn epilogue(&mut self) -> (&mut Epilogue, [usize; 3]) {
        let where_ = [self.input_shape.len(), self.channel_axis(), self.channels];
        (&mut self.epilogue, where_)
    }
}

impl Op for Depthwise3x3 {
    fn name(&self) -> StaticName {
        "QuorumidDepthwise3x3".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![
            format!("{:?}", self.geometry),
            format!(
                "channels last: {}; {}",
                self.channels_last,
                self.epilogue.describe()
            ),
        ])
    }

    op_as_typed_op!();
}

impl EvalOp for Depthwise3x3 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (input, output) = (&self.input_shape, &self.output_shape);
        eval_planned("depthwise convolution", input, output, inputs, |i, o| {
            self.run(i, o)
        })
    }
}

impl TypedOp for Depthwise3x3 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        planned_output_facts(
            "depthwise convolution",
            &self.input_shape,
            &self.output_shape,
            inputs,
        )
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
pub(super) const SHORT_ROW: usize = 32;

/// One channel: `input` is `geometry.input` (rows x columns), `output` `geometry.output`;
/// `scratch` holds `geometry.scratch_len()` values, zero or as the last call left them,
/// `short` `geometry.short_len()`. `post` is applied to each sum.
#[allow(clippy::too_many_arguments)]
fn plane(
    g: &Geometry,
    taps: &[f32; TAPS],
    bias: f32,
    input: &[f32],
    output: &mut [f32],
    scratch: &mut [f32],
    short: &mut [f32],
    post: Post,
) {
    fill_phases(g, input, scratch);
    let l = g.phase_dims()[1];
    let [oh, ow] = g.output;
    let flat = ow < SHORT_ROW;
    let len = if flat { g.short_len() } else { ow };
    let offsets = g.tap_offsets();
    let row = |y: usize| offsets.map(|o| &scratch[y * l + o..y * l + o + len]);
    if flat {
        let short = &mut short[..len];
        output_row(short, row(0), taps, bias, post);
        for (y, out) in output.chunks_exact_mut(ow).take(oh).enumerate() {
            out.copy_from_slice(&short[y * l..y * l + ow]);
        }
    } else {
        for (y, out) in output.chunks_exact_mut(ow).take(oh).enumerate() {
            output_row(out, row(y), taps, bias, post);
        }
    }
}

/// [`plane`] for stride 1 and padding 1 (output as large as the input), read straight from
/// the input: the interior columns of each output row are nine slices of three input rows,
/// the first and last columns are summed apart. `zeros` is a row of zeros (above the first
/// row and below the last).
fn same_size_plane(
    [h, w]: [usize; 2],
    taps: &[f32; TAPS],
    bias: f32,
    input: &[f32],
    output: &mut [f32],
    zeros: &[f32],
    post: Post,
) {
    for (y, out) in output.chunks_exact_mut(w).take(h).enumerate() {
        let at = |iy: Option<usize>| match iy {
            Some(iy) if iy < h => &input[iy * w..(iy + 1) * w],
            _ => &zeros[..w],
        };
        let rows = [at(y.checked_sub(1)), at(Some(y)), at(Some(y + 1))];
        let n = w - 2;
        let [r0, r1, r2] = rows;
        let slices = [
            &r0[..n],
            &r0[1..n + 1],
            &r0[2..],
            &r1[..n],
            &r1[1..n + 1],
            &r1[2..],
            &r2[..n],
            &r2[1..n + 1],
            &r2[2..],
        ];
        output_row(&mut out[1..w - 1], slices, taps, bias, post);
        // The edge columns: the taps past the edge are left out (they would add zero), the
        // others summed in order, as tract does.
        let [k0, k1, k2, k3, k4, k5, k6, k7, k8] = *taps;
        let mut left = bias;
        for (k, v) in [(k1, r0[0]), (k2, r0[1]), (k4, r1[0]), (k5, r1[1])] {
            left += k * v;
        }
        out[0] = post.apply_any(left + k7 * r2[0] + k8 * r2[1]);
        let (a, b) = (w - 2, w - 1);
        let mut right = bias;
        for (k, v) in [(k0, r0[a]), (k1, r0[b]), (k3, r1[a]), (k4, r1[b])] {
            right += k * v;
        }
        out[b] = post.apply_any(right + k6 * r2[a] + k7 * r2[b]);
    }
}

/// Fills `scratch` (`g.scratch_len()` values) with the padded plane of `input`, split into
/// phase planes: padded row r, column c is at row r / sh, column c / sw of phase plane
/// (r % sh, c % sw). Only the input's points are written: `scratch` must come zeroed, or
/// hold an earlier fill of the same geometry (the padding is then still zero).
pub(super) fn fill_phases(g: &Geometry, input: &[f32], scratch: &mut [f32]) {
    let [rows, cols] = g.padded();
    let [sh, sw] = g.strides;
    let [prow, l] = g.phase_dims();
    let plane_size = prow * l;
    let [h, w] = g.input;
    let [pt, pl] = g.pad;
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

/// `out[x] = post(bias + Σ taps[t] * row[t][x])`, the taps in order; every slice `out.len()`
/// long.
fn output_row(out: &mut [f32], row: [&[f32]; TAPS], taps: &[f32; TAPS], bias: f32, post: Post) {
    #[cfg(target_arch = "x86_64")]
    if fused_multiply_add() {
        // SAFETY: the processor has AVX2 and FMA, checked just above.
        unsafe {
            match post.relu {
                true => output_row_fma::<true>(out, row, taps, bias, post),
                false => output_row_fma::<false>(out, row, taps, bias, post),
            }
        }
        return;
    }
    match post.relu {
        true => output_row_body::<false, true>(out, row, taps, bias, post),
        false => output_row_body::<false, false>(out, row, taps, bias, post),
    }
}

/// `out[x] += Σ taps[t] * row[t][x]`, the taps in order; every slice `out.len()` long.
pub(super) fn accumulate_row(out: &mut [f32], row: [&[f32]; TAPS], taps: &[f32; TAPS]) {
    #[cfg(target_arch = "x86_64")]
    if fused_multiply_add() {
        // SAFETY: the processor has AVX2 and FMA, checked just above.
        unsafe { accumulate_row_fma(out, row, taps) };
        return;
    }
    accumulate_row_body::<false>(out, row, taps);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn accumulate_row_fma(out: &mut [f32], row: [&[f32]; TAPS], taps: &[f32; TAPS]) {
    accumulate_row_body::<true>(out, row, taps);
}

#[inline(always)]
fn accumulate_row_body<const FMA: bool>(out: &mut [f32], row: [&[f32]; TAPS], taps: &[f32; TAPS]) {
    let n = out.len();
    let [a0, a1, a2, a3, a4, a5, a6, a7, a8] = row.map(|s| &s[..n]);
    let [k0, k1, k2, k3, k4, k5, k6, k7, k8] = *taps;
    let madd = |s: f32, k: f32, a: f32| if FMA { k.mul_add(a, s) } else { s + k * a };
    for x in 0..n {
        let mut s = out[x];
        s = madd(s, k0, a0[x]);
        s = madd(s, k1, a1[x]);
        s = madd(s, k2, a2[x]);
        s = madd(s, k3, a3[x]);
        s = madd(s, k4, a4[x]);
        s = madd(s, k5, a5[x]);
        s = madd(s, k6, a6[x]);
        s = madd(s, k7, a7[x]);
        s = madd(s, k8, a8[x]);
        out[x] = s;
    }
}

/// `post` applied to every value of `out`.
pub(super) fn post_row(out: &mut [f32], post: Post) {
    match post.relu {
        true => out.iter_mut().for_each(|v| *v = post.apply::<true>(*v)),
        false => out.iter_mut().for_each(|v| *v = post.apply::<false>(*v)),
    }
}

/// Whether the AVX2 and FMA copy runs (x86-64 processors since 2013 have both).
pub(super) fn fused_multiply_add() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// The AVX2 copy, with fused multiply-adds: each tap is one rounding, not two (so the sums
/// differ from tract's in their last bits).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn output_row_fma<const RELU: bool>(
    out: &mut [f32],
    row: [&[f32]; TAPS],
    taps: &[f32; TAPS],
    bias: f32,
    post: Post,
) {
    output_row_body::<true, RELU>(out, row, taps, bias, post);
}

#[inline(always)]
fn output_row_body<const FMA: bool, const RELU: bool>(
    out: &mut [f32],
    row: [&[f32]; TAPS],
    taps: &[f32; TAPS],
    bias: f32,
    post: Post,
) {
    let n = out.len();
    let [a0, a1, a2, a3, a4, a5, a6, a7, a8] = row.map(|s| &s[..n]);
    let [k0, k1, k2, k3, k4, k5, k6, k7, k8] = *taps;
    let madd = |s: f32, k: f32, a: f32| if FMA { k.mul_add(a, s) } else { s + k * a };
    for x in 0..n {
        let mut s = bias;
        s = madd(s, k0, a0[x]);
        s = madd(s, k1, a1[x]);
        s = madd(s, k2, a2[x]);
        s = madd(s, k3, a3[x]);
        s = madd(s, k4, a4[x]);
        s = madd(s, k5, a5[x]);
        s = madd(s, k6, a6[x]);
        s = madd(s, k7, a7[x]);
        s = madd(s, k8, a8[x]);
        out[x] = post.apply::<RELU>(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::tract_core::ops::cnn::{PaddingSpec, PoolSpec};
    use tract_onnx::tract_core::ops::math;
    use tract_onnx::tract_core::ops::nn::DataFormat;

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

    /// What the test models put after the convolution.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Then {
        Nothing,
        /// `Max(x, 0)`, as YuNet.
        Relu,
        /// `x * s + t`, then `PRelu`, as SFace.
        NormPRelu,
    }

    struct Case {
        c: usize,
        h: usize,
        w: usize,
        stride: usize,
        /// Padding before and after, both axes.
        pad: [usize; 2],
        channels_last: bool,
        then: Then,
    }

    fn case(c: usize, h: usize, w: usize, stride: usize, pad: [usize; 2]) -> Case {
        Case {
            c,
            h,
            w,
            stride,
            pad,
            channels_last: false,
            then: Then::Nothing,
        }
    }

    /// A model of one depthwise `Conv` and what follows it, random weights.
    fn conv_model(case: &Case, random: &mut Random) -> (TypedModel, Vec<usize>) {
        let Case { c, h, w, .. } = *case;
        let shape = if case.channels_last {
            vec![1, h, w, c]
        } else {
            vec![1, c, h, w]
        };
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact(&shape)).unwrap();
        let kernel = Tensor::from_shape(&[c, 1, 3, 3], &random.values(9 * c)).unwrap();
        let bias = Tensor::from_shape(&[c], &random.values(c)).unwrap();
        let kernel = model.add_const("kernel", kernel).unwrap();
        let bias = model.add_const("bias", bias).unwrap();
        let conv = Conv {
            pool_spec: PoolSpec {
                data_format: if case.channels_last {
                    DataFormat::NHWC
                } else {
                    DataFormat::NCHW
                },
                kernel_shape: tvec![3, 3],
                padding: PaddingSpec::Explicit(tvec![case.pad[0]; 2], tvec![case.pad[1]; 2]),
                dilations: None,
                strides: Some(tvec![case.stride; 2]),
                input_channels: c,
                output_channels: c,
            },
            kernel_fmt: KernelFormat::OIHW,
            group: c,
            q_params: None,
        };
        let mut y = model.wire_node("conv", conv, &[x, kernel, bias]).unwrap()[0];
        let per_channel_shape = if case.channels_last {
            [1, 1, 1, c]
        } else {
            [1, c, 1, 1]
        };
        match case.then {
            Then::Nothing => {}
            Then::Relu => {
                let zero = model
                    .add_const("zero", tensor0(0f32).broadcast_into_rank(4).unwrap())
                    .unwrap();
                y = model.wire_node("relu", math::max(), &[y, zero]).unwrap()[0];
            }
            Then::NormPRelu => {
                let [s, t, slopes] = [0, 1, 2]
                    .map(|_| Tensor::from_shape(&per_channel_shape, &random.values(c)).unwrap());
                let s = model.add_const("s", s).unwrap();
                let t = model.add_const("t", t).unwrap();
                y = model.wire_node("mul", math::mul(), &[y, s]).unwrap()[0];
                y = model.wire_node("add", math::add(), &[y, t]).unwrap()[0];
                let x_fact = model.outlet_fact(y).unwrap().clone();
                let slopes = TypedFact::try_from(slopes).unwrap();
                let prelu = PRelu::for_facts(&x_fact, &slopes).unwrap().unwrap();
                y = model.wire_node("prelu", prelu, &[y]).unwrap()[0];
            }
        }
        model.select_output_outlets(&[y]).unwrap();
        (model, shape)
    }

    fn run(model: TypedModel, input: &Tensor) -> (Vec<usize>, Vec<f32>) {
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
    }

    #[test]
    fn matches_tract_on_random_inputs() {
        let mut random = Random(0x5eed);
        // Odd and even sizes, both strides, the padding the models use and others, sizes
        // shorter than a vector and longer, rows short and long.
        let mut cases = vec![
            case(3, 7, 5, 1, [1, 1]),
            case(4, 16, 19, 1, [1, 1]),
            case(5, 17, 20, 2, [1, 1]),
            case(2, 14, 14, 2, [1, 1]),
            case(3, 9, 11, 1, [0, 0]),
            case(3, 9, 11, 2, [0, 1]),
            case(2, 3, 3, 1, [1, 1]),
            case(2, 2, 2, 2, [1, 1]),
            case(2, 7, 7, 1, [1, 1]),
            case(3, 40, 37, 2, [1, 1]),
            case(3, 41, 36, 2, [0, 0]),
            case(2, 35, 40, 1, [1, 1]),
            case(3, 10, 12, 2, [1, 0]),
            case(3, 11, 13, 2, [2, 0]),
            case(1, 12, 9, 1, [1, 1]),
        ];
        for (c, h, w, stride) in [(4, 10, 9, 1), (1, 20, 18, 1), (10, 9, 40, 2)] {
            cases.push(Case {
                channels_last: true,
                ..case(c, h, w, stride, [1, 1])
            });
        }
        for then in [Then::Relu, Then::NormPRelu] {
            cases.push(Case {
                then,
                ..case(8, 14, 36, 1, [1, 1])
            });
            cases.push(Case {
                then,
                ..case(6, 15, 13, 2, [1, 1])
            });
            cases.push(Case {
                then,
                channels_last: true,
                ..case(4, 9, 10, 1, [1, 1])
            });
        }
        for case in cases {
            let Case {
                c,
                h,
                w,
                stride,
                pad,
                channels_last,
                then,
            } = case;
            let label =
                format!("{c}x{h}x{w} stride {stride} pad {pad:?} last {channels_last} {then:?}");
            let (model, shape) = conv_model(&case, &mut random);
            let input = Tensor::from_shape(&shape, &random.values(c * h * w)).unwrap();
            let expected = run(model.clone(), &input);
            let mut ours = model.into_decluttered().unwrap();
            assert_eq!(substitute(&mut ours).unwrap(), 1, "{label}");
            let ours = ours.into_decluttered().unwrap();
            // The convolution and what follows it are one node.
            let ops: Vec<_> = ours
                .nodes
                .iter()
                .map(|n| n.op().name())
                .filter(|n| n != "Const")
                .collect();
            assert_eq!(ops, ["Source", "QuorumidDepthwise3x3"], "{label}");
            let (shape, got) = run(ours, &input);
            assert_eq!(shape, expected.0, "{label}");
            if c > 1 && !fused_multiply_add() {
                // tract's own order of operations: the same bits.
                assert_eq!(got, expected.1, "{label}");
            } else {
                // Fused multiply-adds round once a tap; one channel is a plain convolution to
                // tract, summed in another order. The last bits differ.
                for (a, b) in got.iter().zip(&expected.1) {
                    assert!(
                        (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                        "{label}: {a} vs {b}"
                    );
                }
            }
        }
    }

    #[test]
    fn other_convolutions_are_left_to_tract() {
        let mut random = Random(7);
        let (mut model, _) = conv_model(&case(4, 8, 8, 1, [1, 1]), &mut random);
        // The same convolution with a 5x5 kernel is not ours.
        for node in &mut model.nodes {
            if let Some(conv) = node.op_as_mut::<Conv>() {
                conv.pool_spec.kernel_shape = tvec![5, 5];
            }
        }
        assert_eq!(substitute(&mut model).unwrap(), 0);
    }
}
