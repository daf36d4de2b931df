//! Static quantization: `prepare` (fuse, choose the int8 layers, attach observers) →
//! `calibrate` (run fp32 batches, observers watch the activations) → `convert` (weights
//! quantized, activation qparams fixed: a [`QuantizedModel`] whose conv/linear/relu/add/
//! pool/flatten run in u8 with requantization between layers).
//!
//! Observed tensors: the input and output of every int8 layer (the output of a fused
//! ReLU when there is one), and the inputs and output (or fused ReLU output) of every
//! Add. Pools, ReLU, Flatten and Reshape keep their input's qparams, as PyTorch's
//! quantized ops do, so they need no observer.

use std::collections::BTreeMap;

use qbench_models::ir::{Graph, Op};
use qbench_models::tensor::Tensor;

use crate::error::{check_finite, QuantError, Result};
use crate::fuse::fold_batch_norms;
use crate::layers::{float_layer, quantize_layer, sole_relu_reader, FloatLayer};
use crate::model::{ActScales, Method, QuantizedModel, Recipe};
use crate::observer::Observer;
use crate::probe::Probe;
use crate::qconfig::{Backend, QConfig, QConfigMap};
use crate::qparams::QParams;
use crate::shapes::probe_shapes;

struct Planned {
    float: FloatLayer,
    config: QConfig,
    relu: Option<String>,
}

/// A model with observers attached, waiting for calibration data.
pub struct Prepared {
    graph: Graph,
    backend: Backend,
    qconfig: QConfigMap,
    fused: Vec<(String, String)>,
    layers: Vec<Planned>,
    observers: BTreeMap<String, Box<dyn Observer>>,
    /// The observed tensors in graph order (the order `prepare` met them), so that a NaN
    /// or Inf, which propagates downstream, is reported at the first layer that sees it.
    order: Vec<String>,
    probe: Probe,
    samples: usize,
    method: Method,
}

/// Fuses `graph` and attaches observers per `qconfig` (module docs).
pub fn prepare(graph: &Graph, backend: Backend, qconfig: QConfigMap) -> Result<Prepared> {
    for name in qconfig.layers.keys() {
        if !graph.nodes.iter().any(|n| &n.name == name) {
            return Err(QuantError::Config {
                key: format!("qconfig.layers.{name}"),
                msg: "no node of that name in the model".into(),
            });
        }
    }
    let (g, fused) = fold_batch_norms(&crate::fuse::fold_constants(graph)?)?;
    let mut layers = Vec::new();
    let mut observers: BTreeMap<String, Box<dyn Observer>> = BTreeMap::new();
    let mut order = Vec::new();
    let mut observe = |t: &str, cfg: &QConfig, layer: &str| -> Result<()> {
        if !observers.contains_key(t) {
            let obs = cfg.activation.observer.build(cfg.activation.spec, layer)?;
            observers.insert(t.to_string(), obs);
            order.push(t.to_string());
        }
        Ok(())
    };
    for node in &g.nodes {
        let Some(cfg) = qconfig.config_for(&node.name, node.op.onnx_name()).copied() else {
            continue;
        };
        if let Some(fl) = float_layer(&g, node) {
            // Bad weights are named now, as weights, not later as the NaN activations
            // they would cause downstream during calibration.
            check_finite(&fl.node, "weights", &fl.weight)?;
            if let Some(b) = &fl.bias {
                check_finite(&fl.node, "bias", b)?;
            }
            let relu = sole_relu_reader(&g, &fl.output)
                .filter(|r| qconfig.config_for(&r.name, "Relu").is_some());
            let out = relu.map_or(fl.output.clone(), |r| r.outputs[0].clone());
            observe(&fl.input, &cfg, &node.name)?;
            observe(&out, &cfg, &node.name)?;
            layers.push(Planned {
                float: fl,
                config: cfg,
                relu: relu.map(|r| r.name.clone()),
            });
        } else if node.op == Op::Add || (node.op == Op::Sum && node.inputs.len() == 2) {
            let out = sole_relu_reader(&g, &node.outputs[0])
                .map_or(node.outputs[0].clone(), |r| r.outputs[0].clone());
            for t in node.inputs.iter().chain([&out]) {
                if !g.initializers.contains_key(t) {
                    observe(t, &cfg, &node.name)?;
                }
            }
        }
    }
    let probe = Probe::new(&g)?;
    Ok(Prepared {
        graph: g,
        backend,
        qconfig,
        fused: fused.into_iter().map(|f| (f.conv, f.batch_norm)).collect(),
        layers,
        observers,
        order,
        probe,
        samples: 0,
        method: Method::Static,
    })
}

impl Prepared {
    /// Marks the result as coming from quantization-aware training.
    pub fn set_method(&mut self, method: Method) {
        self.method = method;
    }

    /// The fused fp32 graph the observers watch.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Runs each batch (the graph's single input, NCHW) through the fp32 graph and feeds
    /// the observers; `progress(done, total)` after each batch.
    pub fn calibrate<'a>(
        &mut self,
        batches: impl ExactSizeIterator<Item = &'a Tensor>,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<()> {
        let total = batches.len();
        let input = self
            .graph
            .inputs
            .first()
            .map(|i| i.name.clone())
            .unwrap_or_default();
        for (i, batch) in batches.enumerate() {
            let all = self.probe.run(&[(input.clone(), batch.clone())])?;
            for t in &self.order {
                let v = all.get(t).ok_or_else(|| QuantError::Config {
                    key: t.clone(),
                    msg: "observed tensor was not computed".into(),
                })?;
                let obs = self
                    .observers
                    .get_mut(t)
                    .expect("every ordered tensor is observed");
                obs.observe(v.shape(), v.f32s()?)?;
            }
            self.samples += batch.shape().first().copied().unwrap_or(0);
            progress(i + 1, total);
        }
        Ok(())
    }

    /// Fixes the qparams and quantizes the weights.
    pub fn convert(self) -> Result<QuantizedModel> {
        if self.samples == 0 && !self.observers.is_empty() {
            return Err(QuantError::Config {
                key: "calibration".into(),
                msg: "the calibration set is empty: calibrate with at least one batch".into(),
            });
        }
        let mut activations = BTreeMap::new();
        for (t, obs) in &self.observers {
            activations.insert(t.clone(), obs.qparams()?);
        }
        self.finish(activations)
    }

    /// Converts with activation qparams found elsewhere (quantization-aware training's
    /// fake quantizers) instead of this model's observers; `samples` is what they saw.
    pub fn convert_with(
        mut self,
        activations: BTreeMap<String, QParams>,
        samples: usize,
    ) -> Result<QuantizedModel> {
        self.samples = samples;
        self.finish(activations)
    }

    /// The tensors the observers watch (input and output of every int8 layer, the inputs
    /// and output of every Add), by name.
    pub fn observed(&self) -> impl Iterator<Item = &str> {
        self.observers.keys().map(String::as_str)
    }

    /// The `(conv, batch_norm)` pairs folded by `prepare`.
    pub fn fused(&self) -> &[(String, String)] {
        &self.fused
    }

    /// The int8 layers: float weights, config, and the fused ReLU node if any.
    pub(crate) fn planned_layers(
        &self,
    ) -> impl Iterator<Item = (&FloatLayer, &QConfig, Option<&str>)> {
        self.layers
            .iter()
            .map(|p| (&p.float, &p.config, p.relu.as_deref()))
    }

    fn finish(self, activations: BTreeMap<String, QParams>) -> Result<QuantizedModel> {
        let mut layers = Vec::new();
        for p in &self.layers {
            let relu = p
                .relu
                .as_ref()
                .and_then(|r| self.graph.nodes.iter().find(|n| &n.name == r));
            layers.push(quantize_layer(&p.float, &p.config, relu)?);
        }
        let shapes = probe_shapes(&self.probe, &self.graph)?;
        let mut graph = self.graph;
        crate::layers::strip_int8_weights(&mut graph, &layers);
        Ok(QuantizedModel {
            graph,
            recipe: Recipe {
                source: String::new(),
                source_sha256: None,
                method: self.method,
                backend: self.backend,
                act_scales: ActScales::PerTensor,
                qconfig: self.qconfig,
                calibration_samples: self.samples,
                fused: self.fused,
                qbench_version: env!("CARGO_PKG_VERSION").to_string(),
            },
            layers,
            activations,
            shapes,
            fp16_weights: Vec::new(),
        })
    }
}
