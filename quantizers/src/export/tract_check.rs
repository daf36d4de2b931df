//! Runs an exported model in tract-onnx and compares it with [`crate::QExecutor`].
//!
//! **Tolerance policy** (what [`TractCheck::passes`] asserts), on the dequantized outputs
//! in units of the output scale (LSB):
//!
//! - QOperator: Linear layers are exported as MatMulInteger + the executor's own rescale
//!   (same f32 multiplier, same rounding), so they are exact given equal inputs.
//!   QLinearConv is requantized by tract's own code (its multiplier is a fixed-point
//!   approximation of `sa·sw/so`, its rounding not necessarily half to even), so a conv
//!   output may differ by 1 LSB where `(acc + bias)·M` lies within that error of a .5;
//!   float-routed ops (ReLU, Add, average pools: DequantizeLinear → op → QuantizeLinear)
//!   may also differ by 1 LSB from our integer kernels. A 1-LSB change in an early layer
//!   moves later accumulators by a few LSB of theirs, so the output may differ by more
//!   than 1 LSB on a few elements. The policy: every output element within
//!   [`QOP_MAX_LSB`] output LSB, at most [`QOP_MAX_DIFF_FRACTION`] of the output elements
//!   differing at all, and argmax agreement on at least [`MIN_ARGMAX_AGREEMENT`] of the rows
//!   (a row whose top two logits are within a few LSB may flip).
//! - QDQ: tract may fold QuantizeLinear/DequantizeLinear into float arithmetic, so it
//!   computes the fake-quantized float network; the bound is stated in the same units by
//!   [`QDQ_MAX_LSB`].
//! - Dynamic models (the activation quantized in plain ops + MatMulInteger /
//!   ConvInteger + the same f32 dequantization) and fp16 models (f16 weights cast to
//!   float) are held to the QOperator numbers. Their outputs are f32, so the unit is the
//!   fallback one below. Dynamic layers compute what the executor computes given equal
//!   inputs; an fp32 node before them (digit-cnn's convs) can move an activation across
//!   a rounding boundary, which is a small fraction of an LSB at the output.
//! - An output that an fp32 fallback node computes has no qparams: its LSB is taken as
//!   max|tract output| / 127.5 (the step of a u8 grid over that range).
//!
//! Measured on the zoo (`tests/export_zoo.rs`, figures in docs/quantization.md): every model and
//! scheme bit-exact in QOperator form except resnet-fashion static, within 1 LSB on 4–8 %
//! of the output elements; the bounds below are twice that, so a real regression (a wrong
//! scale or bias moves many elements by many LSB) still fails. Every static model's QDQ
//! form is within 1 LSB too (resnet-fashion on 4–8 % of the elements, digit-cnn/vnni on
//! one logit in 2,000), well inside [`QDQ_MAX_LSB`].

use tract_onnx::pb;
use tract_onnx::prelude::*;

use qbench_models::tensor::Tensor as QTensor;

use crate::error::{QuantError, Result};
use crate::model::{Method, QuantizedModel};
use crate::runtime::QExecutor;

use super::Form;

/// Largest per-element difference for QOperator, in output LSB.
pub const QOP_MAX_LSB: f32 = 2.0;
/// Largest fraction of QOperator output elements that may differ at all.
pub const QOP_MAX_DIFF_FRACTION: f32 = 0.15;
/// Largest per-element difference for QDQ, in output LSB.
pub const QDQ_MAX_LSB: f32 = 8.0;
/// Smallest fraction of rows whose argmax must agree.
pub const MIN_ARGMAX_AGREEMENT: f32 = 0.99;

/// What the comparison found.
#[derive(Clone, Debug, PartialEq)]
pub struct TractCheck {
    pub form: Form,
    /// The method of the model compared ([`compare`] alone assumes static).
    pub method: Method,
    /// The output scale the LSB figures are in.
    pub out_scale: f32,
    /// max |ours − tract| / out_scale.
    pub max_lsb: f32,
    /// Fraction of output elements that differ by more than a tenth of an LSB.
    pub diff_fraction: f32,
    /// Fraction of rows with the same argmax.
    pub argmax_agreement: f32,
    pub rows: usize,
}

impl TractCheck {
    pub fn passes(&self) -> bool {
        let (lsb, frac) = match self.form {
            Form::QOperator => (QOP_MAX_LSB, QOP_MAX_DIFF_FRACTION),
            Form::Qdq => (QDQ_MAX_LSB, 1.0),
        };
        self.max_lsb <= lsb
            && self.diff_fraction <= frac
            && self.argmax_agreement >= MIN_ARGMAX_AGREEMENT
    }
}

fn terr(what: &str) -> impl Fn(TractError) -> QuantError + '_ {
    move |e| QuantError::Config {
        key: format!("tract ({what})"),
        msg: format!("{e:?}"),
    }
}

/// Runs a `ModelProto` in tract (optimised) on f32 inputs; `what` names it in errors.
pub fn run_tract(proto: &pb::ModelProto, inputs: &[QTensor], what: &str) -> Result<Vec<QTensor>> {
    let e = terr(what);
    let mut model = tract_onnx::onnx()
        .model_for_proto_model(proto)
        .map_err(&e)?;
    for (i, t) in inputs.iter().enumerate() {
        model = model
            .with_input_fact(i, f32::fact(t.shape()).into())
            .map_err(&e)?;
    }
    let plan = model
        .into_optimized()
        .map_err(&e)?
        .into_runnable()
        .map_err(&e)?;
    let mut tv: TVec<TValue> = TVec::new();
    for t in inputs {
        let data = t.f32s()?;
        tv.push(
            tract_onnx::prelude::Tensor::from_shape(t.shape(), data)
                .map_err(&e)?
                .into(),
        );
    }
    let outs = plan.run(tv).map_err(&e)?;
    outs.iter()
        .map(|o| {
            let o = o.cast_to::<f32>().map_err(&e)?;
            let v = o.to_plain_array_view::<f32>().map_err(&e)?;
            Ok(QTensor::new(
                v.shape().to_vec(),
                v.iter().copied().collect(),
            )?)
        })
        .collect()
}

/// Exports `model` in `form`, runs it in tract and the executor on `inputs`, compares.
pub fn check(model: &QuantizedModel, form: Form, inputs: &[QTensor]) -> Result<TractCheck> {
    let proto = super::to_model_proto(model, form)?;
    let ours = QExecutor::new(model)?.run(inputs)?;
    let what = format!("{form:?} export of {}", model.graph.name);
    let theirs = run_tract(&proto, inputs, &what)?;
    let out_name = &model.graph.outputs[0].name;
    // An output computed in fp32 (a fallback last layer) has no u8 form: its LSB is then
    // that of a u8 grid over tract's output range, max|y| / 127.5.
    let u8_out = match model.recipe.method {
        Method::Static | Method::Qat => super::qoperator::build(model)?.1.remove(out_name),
        Method::Fp32 | Method::Dynamic | Method::Fp16 => None,
    };
    let out_scale = match u8_out {
        Some(q) => q.scales[0],
        None => {
            let m = theirs[0].f32s()?.iter().fold(0f32, |m, v| m.max(v.abs()));
            (m / 127.5).max(f32::MIN_POSITIVE)
        }
    };
    let mut r = compare(form, out_scale, &ours[0], &theirs[0])
        .map_err(|msg| QuantError::Config { key: what, msg })?;
    r.method = model.recipe.method;
    Ok(r)
}

/// Compares the first output of both sides (see the module docs for the units).
pub fn compare(
    form: Form,
    out_scale: f32,
    ours: &QTensor,
    theirs: &QTensor,
) -> std::result::Result<TractCheck, String> {
    if ours.shape() != theirs.shape() {
        return Err(format!(
            "output shape {:?} vs tract's {:?}",
            ours.shape(),
            theirs.shape()
        ));
    }
    let (a, b) = (
        ours.f32s().map_err(|e| e.to_string())?,
        theirs.f32s().map_err(|e| e.to_string())?,
    );
    let mut max_lsb = 0f32;
    let mut differ = 0usize;
    for (&x, &y) in a.iter().zip(b) {
        let d = (x - y).abs() / out_scale;
        let d = if d.is_nan() { f32::INFINITY } else { d };
        max_lsb = max_lsb.max(d);
        differ += (d > 0.1) as usize;
    }
    let ra = ours.argmax_rows().map_err(|e| e.to_string())?;
    let rb = theirs.argmax_rows().map_err(|e| e.to_string())?;
    let agree = ra.iter().zip(&rb).filter(|(x, y)| x == y).count();
    Ok(TractCheck {
        form,
        method: Method::Static,
        out_scale,
        max_lsb,
        diff_fraction: differ as f32 / a.len().max(1) as f32,
        argmax_agreement: agree as f32 / ra.len().max(1) as f32,
        rows: ra.len(),
    })
}
