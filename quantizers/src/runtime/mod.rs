//! Runs a [`QuantizedModel`] on the kernel ladder.
//!
//! [`QExecutor::new`] plans the graph once: each int8 layer becomes a packed conv or GEMM
//! step (requantized u8 out for static models, dequantized f32 for dynamic ones); in a
//! static model, pools, ReLU, Add (with a following ReLU fused into its clamp), Flatten
//! and Reshape stay in u8 when their inputs already are; everything else runs in fp32,
//! consecutive fp32 nodes grouped into one sub-graph on the fp32 executor. Quantize and
//! dequantize steps are inserted exactly where a value changes domain, and
//! [`QExecutor::placements`] lists, per node, whether it ran in int8 and if not why.
//!
//! The steps run on the workspace's one interpreter, [`qbench_models::plan::Plan`] (the
//! fp32 executor's too). Files: `planner` (the plan), `steps` (what each step does),
//! `values` (u8, f32 and dynamically quantized values), `pack` (weights for the kernels).
//!
//! **Layout.** u8 activations of rank 4 are always NHWC (what the int8 conv and pools
//! take); every other value is plain row-major, f32 values NCHW as ONNX defines them.

mod pack;
mod planner;
mod steps;
mod values;

use std::collections::HashMap;

use qbench_kernels::Rung;
use qbench_models::ir::ValueInfo;
use qbench_models::plan::Plan;
use qbench_models::tensor::Tensor;

use crate::error::{QuantError, Result};
use crate::model::{Method, QuantizedModel};
pub(crate) use pack::multipliers;
use steps::{run_fp32, run_step, Kind};
use values::QVal;

/// Where one node of the graph runs.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Placement {
    pub node: String,
    pub op: String,
    pub int8: bool,
    /// Why it stayed in fp32 (or what it was fused into).
    pub note: Option<String>,
}

/// What one step of the plan runs (the node or region it stands for, for errors).
struct QStep {
    name: String,
    kind: Kind,
}

/// A quantized model prepared to run: weights packed for the active rung.
pub struct QExecutor {
    method: Method,
    plan: Plan<QStep>,
    inputs: Vec<(usize, ValueInfo)>,
    outputs: Vec<usize>,
    /// Tensor name → slot holding its f32 or u8 form, for tracing.
    traced: Vec<(String, usize)>,
    placements: Vec<Placement>,
    rung: Rung,
    /// Threads given to each int8 GEMM and conv (and, through their executors, to the
    /// fp32 regions' GEMMs); 1 runs everything on the calling thread.
    threads: usize,
}

impl QExecutor {
    /// Prepares `model` to run on the calling thread only.
    pub fn new(model: &QuantizedModel) -> Result<QExecutor> {
        QExecutor::with_threads(model, 1)
    }

    /// Prepares `model` to run its GEMMs and convolutions on `threads` threads of the
    /// current rayon pool (the other steps stay on the calling thread). The outputs are
    /// bit-identical for every thread count.
    pub fn with_threads(model: &QuantizedModel, threads: usize) -> Result<QExecutor> {
        let threads = threads.max(1);
        let p = planner::plan(model, threads)?;
        Ok(QExecutor {
            method: model.recipe.method,
            plan: p.plan,
            inputs: p.inputs,
            outputs: p.outputs,
            traced: p.traced,
            placements: p.placements,
            rung: qbench_kernels::isa::active(),
            threads,
        })
    }

    pub fn method(&self) -> Method {
        self.method
    }

    /// The kernel rung the int8 steps run on.
    /// The threads each GEMM and convolution runs on.
    pub fn threads(&self) -> usize {
        self.threads
    }

    pub fn rung(&self) -> Rung {
        self.rung
    }

    /// Per node, in graph order: int8 or fp32, and why.
    pub fn placements(&self) -> &[Placement] {
        &self.placements
    }

    /// Runs on `inputs` (f32, NCHW, the graph's input order); returns f32 outputs.
    pub fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
        let vals = self.execute(inputs, false)?;
        self.outputs
            .iter()
            .map(|&s| match &vals[s] {
                Some(QVal::F32(t)) => Ok(t.clone()),
                Some(QVal::U8(u)) => u.dequantize(),
                Some(QVal::Dyn(_)) | None => Err(QuantError::Config {
                    key: "runtime".into(),
                    msg: "an output was not computed".into(),
                }),
            })
            .collect()
    }

    /// Runs and returns every tensor the plan materialised, dequantized to f32 (NCHW):
    /// the quantized side of per-layer SQNR.
    pub fn run_traced(&self, inputs: &[Tensor]) -> Result<HashMap<String, Tensor>> {
        let vals = self.execute(inputs, true)?;
        let mut out = HashMap::new();
        for (name, s) in &self.traced {
            match &vals[*s] {
                Some(QVal::F32(t)) => {
                    out.insert(name.clone(), t.clone());
                }
                Some(QVal::U8(u)) => {
                    out.insert(name.clone(), u.dequantize()?);
                }
                Some(QVal::Dyn(_)) | None => {}
            }
        }
        Ok(out)
    }

    fn execute(&self, inputs: &[Tensor], keep_all: bool) -> Result<Vec<Option<QVal>>> {
        if inputs.len() != self.inputs.len() {
            return Err(QuantError::Config {
                key: "inputs".into(),
                msg: format!(
                    "the model has {} inputs, {} given",
                    self.inputs.len(),
                    inputs.len()
                ),
            });
        }
        let mut vals = self.plan.slots();
        for ((s, vi), t) in self.inputs.iter().zip(inputs) {
            if t.rank() != vi.dims.len() {
                return Err(QuantError::Config {
                    key: vi.name.clone(),
                    msg: format!("expected rank {}, got shape {:?}", vi.dims.len(), t.shape()),
                });
            }
            vals[*s] = Some(QVal::F32(t.clone()));
        }
        self.plan.run(
            vals,
            &[],
            keep_all,
            |st, args| {
                let step_err = |e: QuantError| match e {
                    QuantError::Layer { .. } => e,
                    other => QuantError::Layer {
                        layer: st.name.clone(),
                        op: "run".into(),
                        msg: other.to_string(),
                    },
                };
                // An fp32 sub-graph takes its inputs by value: those it reads last are
                // moved in, not copied.
                if let Kind::Fp32 { exec } = &st.kind {
                    return run_fp32(exec, args).map_err(step_err);
                }
                let refs: Vec<&QVal> = args.iter().flatten().map(|a| &**a).collect();
                run_step(&st.kind, &refs, self.threads).map_err(step_err)
            },
            |st, _| QuantError::Config {
                key: st.name.clone(),
                msg: "input not computed".into(),
            },
        )
    }
}
