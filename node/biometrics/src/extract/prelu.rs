//! ONNX `PRelu` (SFace has 27) as one pass over the tensor, in place.
//!
//! tract expands `PRelu(x, s)` into `x > 0 ? x : x * s` (a comparison and a select) and runs it
//! element by element. Rewritten as `Relu(x) + Min(x, 0) * s` it became two chains of
//! vectorised operations, but still four passes over memory and two new tensors: a quarter of
//! SFace's time. Here, when the slopes are constant and vary along at most one axis (one a
//! channel), `PRelu` is one operator that multiplies the negative values by their channel's
//! slope in the input's own buffer. It gives the same values as both forms (one of `x` and
//! `x * s`, picked by the sign of `x`).
//!
//! Other slopes (not constant, or varying along several axes) keep the `Relu + Min * s` form.

use tract_onnx::pb::NodeProto;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::math;
use tract_onnx::tract_hir::infer::{InferenceOp, InferenceResult, Solver, TensorProxy};
use tract_onnx::tract_hir::infer::{check_input_arity, check_output_arity};
use tract_onnx::tract_hir::ops::expandable::{Expansion, expand};

/// Registers this `PRelu` with the ONNX parser, in the place of tract's.
pub(crate) fn register(onnx: &mut tract_onnx::model::Onnx) {
    onnx.op_register.insert("PRelu", parse);
}

fn parse(
    _ctx: &tract_onnx::model::ParsingContext,
    _node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    Ok((expand(PReluExpansion), vec![]))
}

/// The `PRelu` node of the ONNX graph, before types are known.
#[derive(Debug, Clone)]
struct PReluExpansion;

impl Expansion for PReluExpansion {
    fn name(&self) -> StaticName {
        "PRelu".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 2)?;
        check_output_arity(outputs, 1)?;
        s.equals(&inputs[0].datum_type, &outputs[0].datum_type)?;
        s.equals(&inputs[0].shape, &outputs[0].shape)?;
        Ok(())
    }

    fn wire(
        &self,
        name: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let &[x, slope] = inputs else {
            bail!("PRelu takes two inputs, given {}", inputs.len());
        };
        let (x_fact, slope_fact) = (model.outlet_fact(x)?, model.outlet_fact(slope)?);
        if let Some(op) = PRelu::for_facts(x_fact, slope_fact)? {
            return model.wire_node(name, op, &[x]);
        }
        wire_relu_min(name, model, x, slope)
    }
}

/// `Relu(x) + Min(x, 0) * s`, in tract's own operators.
fn wire_relu_min(
    name: &str,
    model: &mut TypedModel,
    x: OutletId,
    mut slope: OutletId,
) -> TractResult<TVec<OutletId>> {
    let x_fact = model.outlet_fact(x)?.clone();
    let rank = x_fact.rank();
    while model.outlet_fact(slope)?.rank() < rank {
        let r = model.outlet_fact(slope)?.rank();
        slope = model.wire_node(format!("{name}.slope.axis{r}"), AxisOp::Add(0), &[slope])?[0];
    }
    let zero = tensor0(0f32)
        .cast_to_dt(x_fact.datum_type)?
        .into_owned()
        .broadcast_into_rank(rank)?;
    let zero = model.add_const(format!("{name}.zero"), zero)?;
    let positive = model.wire_node(format!("{name}.relu"), math::max(), &[x, zero])?[0];
    let negative = model.wire_node(format!("{name}.min"), math::min(), &[x, zero])?[0];
    let scaled = model.wire_node(format!("{name}.mul"), math::mul(), &[negative, slope])?[0];
    model.wire_node(name, math::add(), &[positive, scaled])
}

/// `PRelu` with constant slopes along one axis of an `f32` tensor, in place.
#[derive(Debug, Clone)]
pub(crate) struct PRelu {
    /// The axis the slopes run along (any, with one slope).
    axis: usize,
    slopes: Vec<f32>,
}

/// Equal when the slopes are the same bits (tract compares operators to merge duplicates).
impl PartialEq for PRelu {
    fn eq(&self, other: &Self) -> bool {
        self.axis == other.axis
            && self.slopes.len() == other.slopes.len()
            && self
                .slopes
                .iter()
                .zip(&other.slopes)
                .all(|(a, b)| a.to_bits() == b.to_bits())
    }
}

impl Eq for PRelu {}

impl PRelu {
    /// The operator for `PRelu(x, slope)`, or `None` when the slopes are not constant `f32`
    /// values along at most one of `x`'s axes (ONNX broadcasting: aligned on the last axis).
    pub(crate) fn for_facts(x: &TypedFact, slope: &TypedFact) -> TractResult<Option<Self>> {
        let Some(values) = slope.konst.as_ref() else {
            return Ok(None);
        };
        if x.datum_type != f32::datum_type()
            || values.datum_type() != f32::datum_type()
            || values.rank() > x.rank()
        {
            return Ok(None);
        }
        let offset = x.rank() - values.rank();
        let mut varying = values
            .shape()
            .iter()
            .enumerate()
            .filter(|&(_, &d)| d != 1)
            .map(|(i, &d)| (i + offset, d));
        let axis = match (varying.next(), varying.next()) {
            (None, _) => 0,
            (Some((axis, d)), None) if x.shape[axis] == d.to_dim() => axis,
            _ => return Ok(None),
        };
        let slopes = values.try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
        if slopes.is_empty() {
            return Ok(None);
        }
        Ok(Some(PRelu { axis, slopes }))
    }
}

impl PRelu {
    /// One slope a channel, for a tensor whose `channels` channels run along `axis`; `None`
    /// when the slopes run along another axis.
    pub(crate) fn slopes_along(&self, axis: usize, channels: usize) -> Option<Vec<f32>> {
        match self.slopes.len() {
            1 => Some(vec![self.slopes[0]; channels]),
            n if n == channels && self.axis == axis => Some(self.slopes.clone()),
            _ => None,
        }
    }
}

impl Op for PRelu {
    fn name(&self) -> StaticName {
        "QuorumidPRelu".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{} slopes along axis {}",
            self.slopes.len(),
            self.axis
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for PRelu {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        // The input's own buffer when this node is its last reader (tract drops its other
        // references first), else a copy.
        let mut tensor = input.into_tensor();
        let shape = tensor.shape();
        let inner = if self.slopes.len() == 1 {
            tensor.len()
        } else {
            ensure!(
                shape.get(self.axis) == Some(&self.slopes.len()),
                "PRelu has {} slopes along axis {}, the input is {:?}",
                self.slopes.len(),
                self.axis,
                shape
            );
            shape[self.axis + 1..].iter().product()
        };
        let mut view = tensor.try_as_plain_ram_mut()?;
        apply(view.as_slice_mut::<f32>()?, &self.slopes, inner);
        Ok(tvec!(tensor.into_tvalue()))
    }
}

impl TypedOp for PRelu {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(
            inputs.len() == 1 && inputs[0].datum_type == f32::datum_type(),
            "PRelu takes one f32 tensor"
        );
        Ok(tvec!(f32::fact(inputs[0].shape.clone())))
    }

    fn change_axes(
        &self,
        model: &TypedModel,
        node: &TypedNode,
        _io: InOut,
        change: &AxisOp,
    ) -> TractResult<Option<AxisChangeConsequence>> {
        // Element-wise: any change of layout is the same on both sides, and the slopes follow
        // their axis (removed only when it holds a single slope).
        let axis = if self.slopes.len() == 1 {
            Some(0)
        } else {
            change.transform_axis(self.axis)
        };
        Ok(axis.map(|axis| {
            let op = PRelu {
                axis,
                slopes: self.slopes.clone(),
            };
            AxisChangeConsequence::new(model, node, Some(Box::new(op)), change)
        }))
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        Ok(tvec!((
            Cost::FMA(f32::datum_type()),
            inputs[0].shape.volume()
        )))
    }

    as_op!();
}

/// `v = v < 0 ? v * slope : v` for every value, the slopes cycling every `inner` values.
fn apply(values: &mut [f32], slopes: &[f32], inner: usize) {
    for (run, &slope) in values.chunks_mut(inner.max(1)).zip(slopes.iter().cycle()) {
        apply_run(run, slope);
    }
}

/// `v = v < 0 ? v * slope : v` for every value of `run`.
pub(crate) fn apply_run(run: &mut [f32], slope: f32) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the processor has AVX2, checked just above.
        unsafe { apply_run_avx2(run, slope) };
        return;
    }
    apply_run_body(run, slope);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn apply_run_avx2(run: &mut [f32], slope: f32) {
    apply_run_body(run, slope);
}

#[inline(always)]
fn apply_run_body(run: &mut [f32], slope: f32) {
    for v in run {
        *v = if *v < 0.0 { *v * slope } else { *v };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::random_values;

    fn slope_fact(shape: &[usize], values: &[f32]) -> TypedFact {
        TypedFact::try_from(Tensor::from_shape(shape, values).unwrap()).unwrap()
    }

    #[test]
    fn per_channel_slopes_scale_negative_values() {
        let x = f32::fact([1, 2, 2, 2]);
        let op = PRelu::for_facts(&x, &slope_fact(&[2, 1, 1], &[0.5, 2.0]))
            .unwrap()
            .expect("one axis of slopes");
        assert_eq!(op.axis, 1);
        let input = [-1.0f32, 2.0, -3.0, 0.0, -1.0, 2.0, -3.0, 4.0];
        let input = Tensor::from_shape(&[1, 2, 2, 2], &input).unwrap();
        let out = op
            .eval_out_of_plan(tvec!(input.into_tvalue()))
            .unwrap()
            .unwrap();
        let got = out[0]
            .try_as_plain_ram()
            .unwrap()
            .as_slice::<f32>()
            .unwrap()
            .to_vec();
        assert_eq!(got, [-0.5, 2.0, -1.5, 0.0, -2.0, 2.0, -6.0, 4.0]);
    }

    #[test]
    fn matches_tracts_relu_min_form_on_random_inputs() {
        let mut seed = 0x5eed;
        for (c, h, w) in [(3, 5, 7), (16, 12, 12), (64, 9, 30)] {
            let mut slopes = random_values(&mut seed, c);
            slopes[0] = 0.0;
            slopes[1] = -0.7;
            let mut model = TypedModel::default();
            let x = model.add_source("x", f32::fact([1, c, h, w])).unwrap();
            let s = Tensor::from_shape(&[c, 1, 1], &slopes).unwrap();
            let s = model.add_const("slope", s).unwrap();
            let y = wire_relu_min("prelu", &mut model, x, s).unwrap();
            model.select_output_outlets(&y).unwrap();
            let plan = model.into_optimized().unwrap().into_runnable().unwrap();
            let mut values = random_values(&mut seed, c * h * w);
            values[0] = 0.0;
            values[1] = -0.0;
            let input = Tensor::from_shape(&[1, c, h, w], &values).unwrap();
            let expected = plan.run(tvec!(input.clone().into_tvalue())).unwrap();
            let op = PRelu::for_facts(&f32::fact([1, c, h, w]), &slope_fact(&[c, 1, 1], &slopes))
                .unwrap()
                .expect("one axis of slopes");
            let got = op
                .eval_out_of_plan(tvec!(input.into_tvalue()))
                .unwrap()
                .unwrap();
            let [expected, got] = [&expected[0], &got[0]].map(|t| {
                t.try_as_plain_ram()
                    .unwrap()
                    .as_slice::<f32>()
                    .unwrap()
                    .to_vec()
            });
            // The same values (a zero's sign aside: both are zero).
            assert_eq!(got, expected, "{c}x{h}x{w}");
        }
    }

    #[test]
    fn slopes_varying_along_two_axes_are_left_to_tract() {
        let x = f32::fact([1, 2, 2, 2]);
        let slopes = slope_fact(&[2, 2, 1], &[0.1, 0.2, 0.3, 0.4]);
        assert!(PRelu::for_facts(&x, &slopes).unwrap().is_none());
        // Not constant: left to tract too.
        assert!(
            PRelu::for_facts(&x, &f32::fact([2, 1, 1]))
                .unwrap()
                .is_none()
        );
    }
}
