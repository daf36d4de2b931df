//! BatchNormalization folding: `W' = W·γ/√(σ²+ε)`, `b' = (b − μ)·γ/√(σ²+ε) + β`.
//!
//! The arithmetic lives in [`BnFold`] and nowhere else. [`fold_batch_norms`] rewrites an
//! inference graph with it (the fp32 executor and the static quantizer's fusion); the
//! trainer's QAT `ConvBn` step calls [`BnFold::factors`], [`BnFold::scale_weights`] and
//! [`BnFold::bias`] on its live parameters. So the weights the trainer fake-quantizes are
//! the ones the static pipeline converts, bit for bit.

use std::cell::Cell;
use std::collections::HashSet;

use crate::error::{ModelError, Result};
use crate::ir::{Graph, Op};
use crate::tensor::Tensor;

thread_local! {
    static FACTORS_COMPUTED: Cell<u64> = const { Cell::new(0) };
}

/// The per-channel factors `γ/√(σ²+ε)` of one BatchNormalization, and what they do to the
/// Conv before it.
#[derive(Clone, Debug, PartialEq)]
pub struct BnFold {
    pub factors: Vec<f32>,
}

impl BnFold {
    /// `γ[c]/√(σ²[c]+ε)`, in f32 (the order every caller has always used).
    pub fn factors(gamma: &[f32], var: &[f32], eps: f32) -> BnFold {
        FACTORS_COMPUTED.with(|c| c.set(c.get() + 1));
        BnFold {
            factors: gamma
                .iter()
                .zip(var)
                .map(|(&g, &v)| g / (v + eps).sqrt())
                .collect(),
        }
    }

    /// How many times this thread has computed fold factors: a test hook that proves the
    /// executor, the quantizers and the trainer fold through this code (a private copy
    /// would not move it).
    pub fn computed_on_this_thread() -> u64 {
        FACTORS_COMPUTED.with(Cell::get)
    }

    /// The weights (output channel first, each channel's values contiguous) scaled by
    /// their channel's factor.
    pub fn scale_weights(&self, w: &[f32]) -> Vec<f32> {
        let per_out = w.len() / self.factors.len().max(1);
        let mut out = w.to_vec();
        if per_out > 0 {
            for (c, row) in out.chunks_mut(per_out).enumerate() {
                row.iter_mut().for_each(|x| *x *= self.factors[c]);
            }
        }
        out
    }

    /// The folded bias `(b − μ)·factor + β` (`b` = 0 when the Conv has none).
    pub fn bias(&self, b: Option<&[f32]>, mean: &[f32], beta: &[f32]) -> Vec<f32> {
        (0..self.factors.len())
            .map(|c| (b.map_or(0.0, |b| b[c]) - mean[c]) * self.factors[c] + beta[c])
            .collect()
    }
}

/// Which Conv → BatchNormalization pairs [`fold_batch_norms`] takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    /// The BatchNorm is the node right after the Conv (the fp32 executor).
    Adjacent,
    /// The BatchNorm is anywhere after the Conv (the quantizers' fusion, as PyTorch's
    /// `fuse_modules` pairs modules by name rather than by position).
    Anywhere,
}

/// A fold that was made: the conv that absorbed the batch norm.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoldedPair {
    pub conv: String,
    pub batch_norm: String,
}

/// Folds every BatchNormalization whose input is produced by a Conv that nothing else
/// reads (and that is not a graph output), whose statistics, weights and bias are
/// initializers. The folded weights get fresh names (`<conv>.weight_bn_folded`,
/// `<conv>.bias_bn_folded`: the originals may be shared with another node); initializers
/// nothing reads any more are dropped. Returns what was folded, in BatchNorm order.
pub fn fold_batch_norms(g: &mut Graph, reach: Reach) -> Result<Vec<FoldedPair>> {
    let uses: std::collections::HashMap<String, usize> = g
        .use_counts()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    let mut folded = Vec::new();
    let mut drop = vec![false; g.nodes.len()];
    for bn_idx in 0..g.nodes.len() {
        let Op::BatchNorm { epsilon } = g.nodes[bn_idx].op else {
            continue;
        };
        if drop[bn_idx] {
            continue;
        }
        let bn = g.nodes[bn_idx].clone();
        if bn.inputs.len() != 5 {
            continue;
        }
        let conv_idx = match reach {
            Reach::Adjacent => bn_idx.checked_sub(1).filter(|&i| {
                matches!(g.nodes[i].op, Op::Conv { .. })
                    && g.nodes[i].outputs.first() == bn.inputs.first()
            }),
            Reach::Anywhere => g.nodes[..bn_idx].iter().position(|n| {
                matches!(n.op, Op::Conv { .. }) && n.outputs.first() == bn.inputs.first()
            }),
        };
        let Some(conv_idx) = conv_idx else { continue };
        let conv = g.nodes[conv_idx].clone();
        if uses.get(&conv.outputs[0]).copied().unwrap_or(0) != 1 || drop[conv_idx] {
            continue;
        }
        let stats: Option<Vec<&Tensor>> = bn.inputs[1..5]
            .iter()
            .map(|n| g.initializers.get(n))
            .collect();
        let Some(stats) = stats else { continue };
        let Some(w) = conv.inputs.get(1).and_then(|w| g.initializers.get(w)) else {
            continue;
        };
        let old_bias: Option<Vec<f32>> = match conv.inputs.get(2).filter(|b| !b.is_empty()) {
            Some(b) => match g.initializers.get(b) {
                Some(t) => Some(t.f32s()?.to_vec()),
                None => continue,
            },
            None => None,
        };
        let out_c = w.shape().first().copied().unwrap_or(0);
        let [gamma, beta, mean, var] = [0, 1, 2, 3].map(|i| stats[i].f32s());
        let (gamma, beta, mean, var) = (gamma?, beta?, mean?, var?);
        if [gamma.len(), beta.len(), mean.len(), var.len()] != [out_c; 4]
            || old_bias.as_ref().is_some_and(|b| b.len() != out_c)
        {
            return Err(ModelError::Exec {
                node: bn.name.clone(),
                op: "BatchNormalization".into(),
                msg: format!("statistics do not have the conv's {out_c} channels"),
            });
        }
        let fold = BnFold::factors(gamma, var, epsilon);
        let wd = fold.scale_weights(w.f32s()?);
        let bias = fold.bias(old_bias.as_deref(), mean, beta);
        let w_shape = w.shape().to_vec();
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
        folded.push(FoldedPair {
            conv: conv.name.clone(),
            batch_norm: bn.name.clone(),
        });
    }
    let mut keep = drop.iter().map(|d| !d);
    g.nodes.retain(|_| keep.next().unwrap_or(true));
    drop_unread_initializers(g);
    Ok(folded)
}

/// Removes initializers that no node and no graph output reads.
pub(crate) fn drop_unread_initializers(g: &mut Graph) {
    let used: HashSet<String> = g
        .nodes
        .iter()
        .flat_map(|n| n.inputs.iter().cloned())
        .chain(g.outputs.iter().map(|o| o.name.clone()))
        .collect();
    g.initializers.retain(|k, _| used.contains(k));
}
