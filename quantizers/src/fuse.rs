//! Fusion before quantization. First constant folding: every node whose inputs are all
//! constants (weights built by `ConstantOfShape`, shape arithmetic) becomes an
//! initializer, so such weights are seen as weights. Then it folds each inference BatchNormalization into the Conv that
//! feeds it (`W' = W·γ/√(σ²+ε)`, `b' = (b − μ)·γ/√(σ²+ε) + β`), so the quantizer sees one
//! conv whose weights already carry the normalisation, as PyTorch's `fuse_modules` does.
//! Conv/Gemm + ReLU pairs are not rewritten here (ONNX has no fused op); the static
//! pipeline treats such a pair as one int8 layer with a clamped output (see `plan`).

use std::collections::HashMap;

use qbench_models::exec::{Executor, Options};
use qbench_models::ir::{Graph, Op, ValueInfo};
use qbench_models::tensor::Tensor;

use crate::error::{QuantError, Result};

/// A fused pair, for reports: the conv that absorbed the batch norm.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fused {
    pub conv: String,
    pub batch_norm: String,
}

/// Folds every BatchNormalization whose input is produced by a Conv that nothing else
/// reads and whose statistics are constants. Returns the new graph and what was fused.
pub fn fold_batch_norms(graph: &Graph) -> Result<(Graph, Vec<Fused>)> {
    let mut g = graph.clone();
    let uses: HashMap<String, usize> = g
        .use_counts()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    let weight_uses = |name: &str| uses.get(name).copied().unwrap_or(0);
    let mut fused = Vec::new();
    let mut drop = vec![false; g.nodes.len()];
    for bn_idx in 0..g.nodes.len() {
        let Op::BatchNorm { epsilon } = g.nodes[bn_idx].op else {
            continue;
        };
        let bn = g.nodes[bn_idx].clone();
        let Some(conv_idx) = g.nodes[..bn_idx].iter().position(|n| {
            matches!(n.op, Op::Conv { .. }) && n.outputs.first() == bn.inputs.first()
        }) else {
            continue;
        };
        let conv = g.nodes[conv_idx].clone();
        if weight_uses(&conv.outputs[0]) != 1 || drop[conv_idx] {
            continue;
        }
        let stats: Option<Vec<&Tensor>> = bn.inputs[1..5]
            .iter()
            .map(|n| g.initializers.get(n))
            .collect();
        let Some(stats) = stats else { continue };
        let Some(w) = g.initializers.get(&conv.inputs[1]) else {
            continue;
        };
        let layer_err = |msg: String| QuantError::Layer {
            layer: bn.name.clone(),
            op: "BatchNormalization".into(),
            msg,
        };
        let out_c = w.shape()[0];
        let [gamma, beta, mean, var] = [0, 1, 2, 3].map(|i| stats[i].f32s());
        let (gamma, beta, mean, var) = (gamma?, beta?, mean?, var?);
        if [gamma.len(), beta.len(), mean.len(), var.len()] != [out_c; 4] {
            return Err(layer_err(format!(
                "statistics do not have the conv's {out_c} channels"
            )));
        }
        let per_out: usize = w.shape()[1..].iter().product();
        let factor: Vec<f32> = gamma
            .iter()
            .zip(var)
            .map(|(&g, &v)| g / (v + epsilon).sqrt())
            .collect();
        let mut wd = w.f32s()?.to_vec();
        for (c, row) in wd.chunks_mut(per_out).enumerate() {
            row.iter_mut().for_each(|x| *x *= factor[c]);
        }
        let old_bias: Vec<f32> = match conv.inputs.get(2).filter(|b| !b.is_empty()) {
            Some(b) => match g.initializers.get(b) {
                Some(t) => t.f32s()?.to_vec(),
                None => continue,
            },
            None => vec![0.0; out_c],
        };
        let bias: Vec<f32> = (0..out_c)
            .map(|c| (old_bias[c] - mean[c]) * factor[c] + beta[c])
            .collect();
        let w_shape = w.shape().to_vec();
        // Fresh names: the original weights may be shared with another node.
        let w_name = format!("{}.weight_bn_folded", conv.name);
        let b_name = format!("{}.bias_bn_folded", conv.name);
        g.initializers
            .insert(w_name.clone(), Tensor::new(w_shape, wd)?);
        g.initializers
            .insert(b_name.clone(), Tensor::new(vec![out_c], bias)?);
        let node = &mut g.nodes[conv_idx];
        node.inputs.truncate(2);
        node.inputs[1] = w_name;
        node.inputs.push(b_name);
        node.outputs[0] = bn.outputs[0].clone();
        drop[bn_idx] = true;
        fused.push(Fused {
            conv: conv.name.clone(),
            batch_norm: bn.name.clone(),
        });
    }
    let mut keep = drop.iter().map(|d| !d);
    g.nodes.retain(|_| keep.next().unwrap_or(true));
    // Initializers nothing reads any more (the unfolded weights and statistics).
    let used: std::collections::HashSet<String> = g
        .nodes
        .iter()
        .flat_map(|n| n.inputs.iter().cloned())
        .chain(g.outputs.iter().map(|o| o.name.clone()))
        .collect();
    g.initializers.retain(|k, _| used.contains(k));
    Ok((g, fused))
}

/// Evaluates every non-Conv node whose inputs are all initializers into initializers
/// (see the module docs). Graph outputs are left to their nodes.
pub fn fold_constants(graph: &Graph) -> Result<Graph> {
    let mut g = graph.clone();
    let mut keep = Vec::with_capacity(graph.nodes.len());
    for node in &graph.nodes {
        let all_const = node
            .inputs
            .iter()
            .all(|i| i.is_empty() || g.initializers.contains_key(i));
        let is_output = node
            .outputs
            .iter()
            .any(|o| graph.outputs.iter().any(|go| &go.name == o));
        if !all_const || is_output || matches!(node.op, Op::Conv { .. }) {
            keep.push(node.clone());
            continue;
        }
        let outputs: Vec<String> = node
            .outputs
            .iter()
            .filter(|o| !o.is_empty())
            .cloned()
            .collect();
        let sub = Graph {
            name: format!("{}:const", graph.name),
            inputs: Vec::new(),
            outputs: outputs
                .iter()
                .map(|o| ValueInfo {
                    name: o.clone(),
                    dims: Vec::new(),
                })
                .collect(),
            initializers: node
                .inputs
                .iter()
                .filter(|i| !i.is_empty())
                .map(|i| (i.clone(), g.initializers[i].clone()))
                .collect(),
            nodes: vec![node.clone()],
        };
        let values = Executor::new(&sub, Options::default())?.run(&[])?;
        for (name, v) in outputs.into_iter().zip(values) {
            g.initializers.insert(name, v);
        }
    }
    g.nodes = keep;
    let used: std::collections::HashSet<&String> = g
        .nodes
        .iter()
        .flat_map(|n| n.inputs.iter())
        .chain(g.outputs.iter().map(|o| &o.name))
        .collect();
    let used: std::collections::HashSet<String> = used.into_iter().cloned().collect();
    g.initializers.retain(|k, _| used.contains(k));
    Ok(g)
}
