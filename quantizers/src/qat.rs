//! Quantization-aware training, PyTorch's eager-mode recipe: [`prepare_qat`] → train
//! ([`QatModel::train`]) → [`QatModel::convert`].
//!
//! `prepare_qat` runs the static pipeline's `prepare` to learn what the int8 model will
//! be (which layers run in int8, which conv+bn pairs fold, which tensors carry their own
//! qparams), then compiles the fp32 graph for the trainer with
//! - fake quantization of every tensor the int8 executor quantizes with its own qparams
//!   (the input of an int8 layer that arrives in fp32, the output of every int8 layer
//!   after its fused ReLU, the output of every int8 Add), observed by the qconfig's
//!   activation observer (PyTorch's QAT default: moving-average min/max);
//! - fake quantization of the output of int8 average pools with their input's qparams
//!   (the u8 pool keeps them, and rounds; a global pool's rounding reproduces the kernel's
//!   bit for bit, ties included), the shape-only u8 ops (max pool, ReLU, Flatten) being
//!   exact on the grid;
//! - weight fake quantization of every int8 Conv/Gemm per the qconfig's weight spec
//!   (per channel or per tensor), recomputed from the current weights on every pass;
//! - Conv + BatchNorm folded as PyTorch's `ConvBn2d` does: weights scaled by
//!   `γ/√(σ²_running+ε)` before fake quantization, the conv output scaled back, then the
//!   BatchNorm in train mode, so its statistics keep updating until they are frozen.
//!
//! This mirrors the executor's plan (`runtime.rs`) rather than PyTorch's module
//! boundaries, so fake quantization happens exactly where the int8 model rounds.
//! Gradients pass through fake quantization with the straight-through estimator (zero
//! where the value was clamped).
//!
//! `convert` folds the trained BatchNorms into the weights with the static pipeline's own
//! `fold_batch_norms` (the same f32 arithmetic as the QAT forward pass, so the weight
//! qparams are the ones training saw) and takes the activation qparams from the fake
//! quantizers: the result is a static-form [`QuantizedModel`] marked `qat`, which the int8
//! executor, safetensors, ONNX export and the tract check take unchanged.
//!
//! Differences from PyTorch, on purpose: weight ranges follow the current weights exactly
//! (min/max of this step's weights, where PyTorch keeps a moving average) so that the
//! weights' qparams at convert are the ones of the last training step; and eval-mode
//! passes never observe (PyTorch observes whenever the observer is enabled).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use qbench_models::data::Dataset;
use qbench_models::ir::{Graph, Op};
use qbench_models::train::{
    self, EpochReport, FakeQuantizer, FitConfig, Network, OptimizerKind, QatPlan, StepProgress,
};

use crate::calibrate::prepare;
use crate::error::{QuantError, Result};
use crate::fuse::fold_constants;
use crate::layers::sole_relu_reader;
use crate::model::{Method, QuantizedModel};
use crate::observer::{Observer, ObserverKind};
use crate::probe::Probe;
use crate::qconfig::{Backend, ObserverConfig, QConfig, QConfigMap};
use crate::qparams::{quantize_bias, Granularity, QParams, QSpec};
use crate::shapes::probe_shapes;

/// A QAT fine-tuning run: SGD with momentum under the trainer's cosine schedule, and the
/// epochs after which observers and BatchNorm statistics freeze.
#[derive(Clone, Debug, PartialEq)]
pub struct QatConfig {
    pub epochs: usize,
    pub batch: usize,
    /// Peak learning rate (cosine to 0 over the run).
    pub lr: f32,
    pub momentum: f32,
    /// L2 decay of Conv/Gemm weights.
    pub weight_decay: f32,
    /// Seeds the per-epoch shuffles.
    pub seed: u64,
    /// Activation observers stop after this many epochs (`None`: never); the ranges are
    /// then fixed and the weights adapt to them (PyTorch's `disable_observer`).
    pub freeze_observers_after: Option<usize>,
    /// BatchNorm uses and keeps its running statistics after this many epochs (`None`:
    /// never; 0: from the start), PyTorch's `freeze_bn_stats`.
    pub freeze_bn_after: Option<usize>,
}

impl Default for QatConfig {
    /// One epoch at lr 1e-3, batch 64, momentum 0.9, no decay; observers freeze after
    /// the first epoch, BatchNorm statistics from the start: fine-tuning a converged
    /// model at a small rate barely moves them, and the running statistics of the last
    /// few batches (momentum 0.9) are noisier than the pretrained ones (measured on
    /// resnet-fashion: docs/quantization.md, "Quantization-aware training").
    fn default() -> QatConfig {
        QatConfig {
            epochs: 1,
            batch: 64,
            lr: 1e-3,
            momentum: 0.9,
            weight_decay: 0.0,
            seed: 0,
            freeze_observers_after: Some(1),
            freeze_bn_after: Some(0),
        }
    }
}

impl QatConfig {
    /// Checks the numbers; errors name the setting.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, msg: String| {
            Err(QuantError::Config {
                key: key.into(),
                msg,
            })
        };
        if self.epochs == 0 {
            return bad("qat.epochs", "must be at least 1".into());
        }
        if self.batch == 0 {
            return bad("qat.batch", "must be at least 1".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad("qat.lr", format!("{} must be a positive number", self.lr));
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return bad(
                "qat.momentum",
                format!("{} is outside [0, 1)", self.momentum),
            );
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(
                "qat.weight_decay",
                format!("{} must be ≥ 0", self.weight_decay),
            );
        }
        if self.freeze_observers_after == Some(0) {
            return bad(
                "qat.freeze_observers_after",
                "0 would freeze observers before they saw any data; give at least 1".into(),
            );
        }
        Ok(())
    }
}

/// An activation quantizer's observer and its latest qparams, shared between the
/// network (which calls it) and the [`QatModel`] (which reads the qparams at convert).
struct ActState {
    observer: Box<dyn Observer>,
    qparams: Option<QParams>,
    layer: String,
}

/// PyTorch's `FakeQuantize` on an activation.
struct ActFakeQuant(Arc<Mutex<ActState>>);

impl std::fmt::Debug for ActFakeQuant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.lock() {
            Ok(s) => write!(
                f,
                "ActFakeQuant({}, {}, {:?})",
                s.layer,
                s.observer.name(),
                s.qparams
            ),
            Err(_) => write!(f, "ActFakeQuant(poisoned)"),
        }
    }
}

impl FakeQuantizer for ActFakeQuant {
    fn fake_quantize(
        &mut self,
        shape: &[usize],
        x: &[f32],
        observe: bool,
    ) -> std::result::Result<(Vec<f32>, Vec<bool>), String> {
        let mut st = self.0.lock().map_err(|_| "a fake quantizer panicked")?;
        if observe {
            st.observer.observe(shape, x).map_err(|e| e.to_string())?;
            st.qparams = Some(st.observer.qparams().map_err(|e| e.to_string())?);
        }
        let qp = st.qparams.as_ref().ok_or_else(|| {
            format!(
                "layer {:?}: activation fake quantizer has no qparams yet (train with observers enabled first)",
                st.layer
            )
        })?;
        Ok(qp.fake_quantize_with_mask(shape, x))
    }
}

/// The output of an int8 average pool: rounded onto its input's grid (the u8 pool keeps
/// the input's qparams), never observing. For a global average pool over `count` pixels
/// the rounding is the kernel's to the bit: the input lies on the grid, so `x / s · count`
/// is the integer sum `Σ(q − z)` the kernel accumulates, requantized as the kernel does
/// (`round_half_even(acc · s / (count · s)) + z`). Ties are common there (a sum ≡ 8 mod 16
/// over 4x4 pixels), and float averaging would break them at random.
struct PoolFakeQuant {
    source: Arc<Mutex<ActState>>,
    count: Option<usize>,
}

impl std::fmt::Debug for PoolFakeQuant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PoolFakeQuant(count {:?})", self.count)
    }
}

impl FakeQuantizer for PoolFakeQuant {
    fn fake_quantize(
        &mut self,
        shape: &[usize],
        x: &[f32],
        _observe: bool,
    ) -> std::result::Result<(Vec<f32>, Vec<bool>), String> {
        let st = self
            .source
            .lock()
            .map_err(|_| "a fake quantizer panicked")?;
        let qp = st
            .qparams
            .as_ref()
            .ok_or_else(|| format!("layer {:?}: the pool's input has no qparams yet", st.layer))?;
        let Some(count) = self.count else {
            return Ok(qp.fake_quantize_with_mask(shape, x));
        };
        let (s, z) = (qp.scales[0], qp.zero_points[0]);
        let m = s / (count as f32 * s);
        let v = x
            .iter()
            .map(|&v| {
                let acc = (v / s * count as f32).round() as i32;
                let q = ((acc as f32 * m).round_ties_even() as i32 + z).clamp(0, 255);
                qp.dequantize_one(q, 0)
            })
            .collect();
        Ok((v, vec![true; x.len()]))
    }
}

/// Weight fake quantization: the qconfig's weight observer on this pass's weights. It
/// also puts the bias on the int32 grid of the executor (scale: the layer input's scale
/// times the weight scale) for eval-mode passes.
struct WeightFakeQuant {
    observer: ObserverKind,
    spec: QSpec,
    layer: String,
    /// The quantizer whose qparams the layer's input carries in the int8 model.
    input: Option<Arc<Mutex<ActState>>>,
    /// The qparams of the last weights seen.
    last: Option<QParams>,
}

impl std::fmt::Debug for WeightFakeQuant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WeightFakeQuant({}, {:?})", self.layer, self.spec)
    }
}

impl WeightFakeQuant {
    fn qparams(&self, shape: &[usize], w: &[f32]) -> Result<QParams> {
        let mut obs = self.observer.build(self.spec, &self.layer)?;
        obs.observe(shape, w)?;
        obs.qparams()
    }
}

impl FakeQuantizer for WeightFakeQuant {
    fn fake_quantize(
        &mut self,
        shape: &[usize],
        w: &[f32],
        _observe: bool,
    ) -> std::result::Result<(Vec<f32>, Vec<bool>), String> {
        let qp = self.qparams(shape, w).map_err(|e| e.to_string())?;
        let out = qp.fake_quantize_with_mask(shape, w);
        self.last = Some(qp);
        Ok(out)
    }

    fn fake_quantize_bias(&mut self, bias: &[f32]) -> std::result::Result<Vec<f32>, String> {
        let (Some(input), Some(w)) = (&self.input, &self.last) else {
            return Ok(bias.to_vec());
        };
        let st = input.lock().map_err(|_| "a fake quantizer panicked")?;
        let Some(sa) = st.qparams.as_ref().map(|q| q.scales[0]) else {
            return Ok(bias.to_vec());
        };
        let q = quantize_bias(bias, sa, &w.scales);
        Ok(q.iter()
            .enumerate()
            .map(|(c, &v)| {
                let sw = w.scales[if w.scales.len() == 1 { 0 } else { c }];
                (f64::from(v) * f64::from(sa) * f64::from(sw)) as f32
            })
            .collect())
    }
}

/// The current qparams of `tensor`'s activation fake quantizer, if it has any.
fn qparams_of(acts: &[(String, Arc<Mutex<ActState>>)], tensor: &str) -> Option<QParams> {
    let (_, st) = acts.iter().find(|(t, _)| t == tensor)?;
    st.lock().ok()?.qparams.clone()
}

/// A QAT run at the start of an epoch ([`QatModel::train_with`]).
pub struct EpochStart<'a> {
    /// The epoch about to run (1-based).
    pub epoch: usize,
    /// The instrumented network, its switches set for this epoch.
    pub network: &'a Network,
    acts: &'a [(String, Arc<Mutex<ActState>>)],
}

impl EpochStart<'_> {
    /// As [`QatModel::activation_qparams`].
    pub fn activation_qparams(&self, tensor: &str) -> Option<QParams> {
        qparams_of(self.acts, tensor)
    }
}

/// A model prepared for quantization-aware training (module docs).
pub struct QatModel {
    net: Network,
    backend: Backend,
    qconfig: QConfigMap,
    /// The tensors with their own fake quantizer, in graph order.
    acts: Vec<(String, Arc<Mutex<ActState>>)>,
    /// Every tensor the int8 model holds in u8 → the tensor whose qparams it carries.
    carries: BTreeMap<String, String>,
    /// Images the observers have seen.
    samples: usize,
}

/// Fuses and instruments `graph` for QAT under `qconfig` (module docs). Use
/// [`QConfig::qat_preset`] for PyTorch's default QAT qconfig of a backend.
pub fn prepare_qat(graph: &Graph, backend: Backend, qconfig: QConfigMap) -> Result<QatModel> {
    let graph = fold_constants(graph)?;
    let prepared = prepare(&graph, backend, qconfig.clone())?;
    let fg = prepared.graph();
    let observed: HashSet<&str> = prepared.observed().collect();
    let layers: HashMap<&str, (&crate::layers::FloatLayer, &QConfig, Option<&str>)> = prepared
        .planned_layers()
        .map(|(fl, cfg, relu)| (fl.node.as_str(), (fl, cfg, relu)))
        .collect();
    let output_of = |node: &str| -> Option<String> {
        fg.nodes
            .iter()
            .find(|n| n.name == node)
            .and_then(|n| n.outputs.first().cloned())
    };
    // The config of the int8 layer reading `t`, for an Add output with no config of its
    // own that the static pipeline observes as that layer's input.
    let reader_config = |t: &str| -> Option<QConfig> {
        layers
            .values()
            .find(|(fl, ..)| fl.input == t)
            .map(|(_, cfg, _)| **cfg)
    };

    // Walk the fused graph as the executor plans it (runtime.rs `QExecutor::new`): which
    // tensors become u8, and whose qparams each carries.
    let mut own: Vec<(String, ObserverConfig, String)> = Vec::new();
    let mut carries: BTreeMap<String, String> = BTreeMap::new();
    // (pool output, its input's qparams source, pixels of a global pool).
    let mut pools: Vec<(String, String, Option<usize>)> = Vec::new();
    let shapes = probe_shapes(&Probe::new(fg)?, fg)?;
    let mut skip: HashSet<String> = layers
        .values()
        .filter_map(|(_, _, r)| r.map(str::to_string))
        .collect();
    for node in &fg.nodes {
        if skip.contains(&node.name) {
            continue;
        }
        if let Some((fl, cfg, relu)) = layers.get(node.name.as_str()) {
            if !carries.contains_key(&fl.input) {
                own.push((fl.input.clone(), cfg.activation, node.name.clone()));
                carries.insert(fl.input.clone(), fl.input.clone());
            }
            let out = match relu {
                Some(r) => output_of(r).unwrap_or_else(|| fl.output.clone()),
                None => fl.output.clone(),
            };
            own.push((out.clone(), cfg.activation, node.name.clone()));
            carries.insert(out.clone(), out);
            continue;
        }
        let (Some(x), Some(out)) = (node.inputs.first(), node.outputs.first()) else {
            continue;
        };
        let src = carries.get(x).cloned();
        match (&node.op, src) {
            (Op::Add | Op::Sum, _) if node.inputs.len() == 2 => {
                let relu = sole_relu_reader(fg, out);
                let final_out = relu.map_or(out.clone(), |r| r.outputs[0].clone());
                let both_u8 = node.inputs.iter().all(|t| carries.contains_key(t));
                let cfg = qconfig
                    .config_for(&node.name, node.op.onnx_name())
                    .copied()
                    .or_else(|| reader_config(&final_out));
                if let (true, true, Some(cfg)) =
                    (observed.contains(final_out.as_str()), both_u8, cfg)
                {
                    own.push((final_out.clone(), cfg.activation, node.name.clone()));
                    carries.insert(final_out.clone(), final_out);
                    if let Some(r) = relu {
                        skip.insert(r.name.clone());
                    }
                }
            }
            (Op::MaxPool { spatial }, Some(s))
                if !spatial.ceil_mode && spatial.kernel.is_some() =>
            {
                carries.insert(out.clone(), s);
            }
            (Op::Relu | Op::Flatten { .. }, Some(s)) => {
                carries.insert(out.clone(), s);
            }
            (Op::AveragePool { spatial, .. }, Some(s))
                if !spatial.ceil_mode
                    && spatial.kernel.is_some()
                    && spatial.dilations == [1, 1] =>
            {
                pools.push((out.clone(), s.clone(), None));
                carries.insert(out.clone(), s);
            }
            (Op::GlobalAveragePool, Some(s)) => {
                let pixels = shapes.get(x).map(|d| d.iter().skip(2).product());
                pools.push((out.clone(), s.clone(), pixels));
                carries.insert(out.clone(), s);
            }
            _ => {}
        }
    }

    let mut plan = QatPlan::default();
    let mut acts = Vec::new();
    for (t, cfg, layer) in own {
        let state = Arc::new(Mutex::new(ActState {
            observer: cfg.observer.build(cfg.spec, &layer)?,
            qparams: None,
            layer,
        }));
        plan.activations
            .push((t.clone(), Box::new(ActFakeQuant(state.clone()))));
        acts.push((t, state));
    }
    for (t, src, count) in pools {
        let (_, source) = acts
            .iter()
            .find(|(a, _)| *a == src)
            .expect("a pool's source tensor has its own quantizer");
        plan.activations.push((
            t,
            Box::new(PoolFakeQuant {
                source: source.clone(),
                count,
            }),
        ));
    }
    for (fl, cfg, _) in layers.values() {
        let node = fg
            .nodes
            .iter()
            .find(|n| n.name == fl.node)
            .expect("a planned layer is a node of the fused graph");
        // Per channel on the output channel in the graph's own layout: axis 0 for Conv
        // and for Gemm with transB (`[out, in]`), axis 1 for `[in, out]` weights.
        let axis = match node.op {
            Op::Gemm { trans_b: false, .. } | Op::MatMul => 1,
            _ => 0,
        };
        let spec = QSpec {
            granularity: match cfg.weight.spec.granularity {
                Granularity::PerTensor => Granularity::PerTensor,
                Granularity::PerChannel { .. } => Granularity::PerChannel { axis },
            },
            ..cfg.weight.spec
        };
        let input = carries
            .get(&fl.input)
            .and_then(|src| acts.iter().find(|(t, _)| t == src))
            .map(|(_, st)| st.clone());
        plan.weights.push((
            fl.node.clone(),
            Box::new(WeightFakeQuant {
                observer: cfg.weight.observer,
                spec,
                layer: fl.node.clone(),
                input,
                last: None,
            }),
        ));
    }
    plan.weights.sort_by(|a, b| a.0.cmp(&b.0));
    plan.fold_bn = prepared.fused().iter().map(|(c, _)| c.clone()).collect();
    let net = Network::with_qat(&graph, plan)?;
    Ok(QatModel {
        net,
        backend,
        qconfig,
        acts,
        carries,
        samples: 0,
    })
}

impl QatModel {
    /// The instrumented network (its switches are PyTorch's `disable_observer`,
    /// `disable_fake_quant`, `freeze_bn_stats`).
    pub fn network(&self) -> &Network {
        &self.net
    }

    pub fn network_mut(&mut self) -> &mut Network {
        &mut self.net
    }

    /// Tensors with their own fake quantizer, in graph order.
    pub fn fake_quantized_tensors(&self) -> Vec<&str> {
        self.acts.iter().map(|(t, _)| t.as_str()).collect()
    }

    /// The current qparams of a tensor's activation fake quantizer (`None` before it
    /// observed anything, or for a tensor without one).
    pub fn activation_qparams(&self, tensor: &str) -> Option<QParams> {
        qparams_of(&self.acts, tensor)
    }

    /// Fine-tunes on `data` (images as the model takes them). `on_step` after every
    /// optimizer step, `on_epoch` after every epoch; freeze points count from the start
    /// of this call. Deterministic for a seed, whatever the number of threads.
    pub fn train(
        &mut self,
        data: &Dataset,
        cfg: &QatConfig,
        on_step: impl FnMut(&StepProgress),
        on_epoch: impl FnMut(&EpochReport),
    ) -> Result<Vec<EpochReport>> {
        self.train_with(data, cfg, |_| {}, on_step, on_epoch)
    }

    /// [`Self::train`] with one more hook, `at_epoch_start`, called before every epoch once
    /// that epoch's freeze switches are set: for epoch e > 1 it sees the model as epoch
    /// e − 1 left it (observers' qparams, BatchNorm statistics, weights).
    pub fn train_with(
        &mut self,
        data: &Dataset,
        cfg: &QatConfig,
        mut at_epoch_start: impl FnMut(&EpochStart<'_>),
        on_step: impl FnMut(&StepProgress),
        on_epoch: impl FnMut(&EpochReport),
    ) -> Result<Vec<EpochReport>> {
        cfg.validate()?;
        let fit = FitConfig {
            epochs: cfg.epochs,
            batch: cfg.batch,
            lr: cfg.lr,
            weight_decay: cfg.weight_decay,
            optimizer: OptimizerKind::Sgd {
                momentum: cfg.momentum,
            },
            seed: cfg.seed,
        };
        let (obs_after, bn_after) = (cfg.freeze_observers_after, cfg.freeze_bn_after);
        let mut observed_epochs = 0;
        let acts = &self.acts;
        let reports = train::fit_with(
            &mut self.net,
            data,
            &fit,
            |epoch, net| {
                // Epoch e (1-based) runs frozen when e > the freeze point.
                if obs_after.is_some_and(|k| epoch > k) {
                    net.observers_enabled = false;
                }
                if bn_after.is_some_and(|k| epoch > k) {
                    net.bn_frozen = true;
                }
                if net.observers_enabled {
                    observed_epochs += 1;
                }
                at_epoch_start(&EpochStart {
                    epoch,
                    network: net,
                    acts,
                });
            },
            on_step,
            on_epoch,
        )?;
        self.samples += observed_epochs * data.len();
        Ok(reports)
    }

    /// Freezes the activation observers (PyTorch's `disable_observer`).
    pub fn freeze_observers(&mut self) {
        self.net.observers_enabled = false;
    }

    /// Freezes BatchNorm statistics (PyTorch's `freeze_bn_stats`).
    pub fn freeze_bn_stats(&mut self) {
        self.net.bn_frozen = true;
    }

    /// The fake-quantized model's predictions (eval mode: running BatchNorm statistics,
    /// observers untouched).
    pub fn predict(&mut self, data: &Dataset, batch: usize) -> Result<Vec<usize>> {
        Ok(train::predict(&mut self.net, data, batch)?)
    }

    /// The int8 model (module docs): BatchNorms folded into the trained weights, weight
    /// qparams from those weights, activation qparams from the fake quantizers.
    pub fn convert(&self) -> Result<QuantizedModel> {
        let trained = self.net.to_graph();
        let mut prepared = prepare(&trained, self.backend, self.qconfig.clone())?;
        let mut activations = BTreeMap::new();
        for (t, st) in &self.acts {
            let st = st.lock().map_err(|_| QuantError::Config {
                key: t.clone(),
                msg: "a fake quantizer panicked".into(),
            })?;
            let qp = st.qparams.clone().ok_or_else(|| QuantError::NoData {
                layer: st.layer.clone(),
                observer: st.observer.name(),
            })?;
            activations.insert(t.clone(), qp);
        }
        // Tensors the int8 model keeps in u8 on another tensor's qparams (after a pool,
        // ReLU or Flatten) carry those qparams, as the executor uses them.
        let observed: Vec<String> = prepared.observed().map(str::to_string).collect();
        for t in observed {
            if let Some(src) = self.carries.get(&t).filter(|s| **s != t) {
                if let Some(qp) = activations.get(src).cloned() {
                    activations.insert(t, qp);
                }
            }
        }
        prepared.set_method(Method::Qat);
        prepared.convert_with(activations, self.samples)
    }
}
