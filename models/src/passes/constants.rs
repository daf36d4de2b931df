//! Constant folding: every node whose inputs are all constants (initializers,
//! `Constant`, `ConstantOfShape`, shape arithmetic on constants) is evaluated once, by
//! the fp32 executor's own op implementations, and its outputs become initializers. So
//! weights built by `ConstantOfShape` are seen as weights, and shape subgraphs cost
//! nothing per call. Convs are left alone: the executor packs their weights, and the
//! quantizers quantize them.

use crate::budget::MemoryBudget;
use crate::error::{ModelError, Result};
use crate::exec::eval_constant;
use crate::ir::{Graph, Op};

use super::batch_norm::drop_unread_initializers;

/// What to do with a foldable node that produces a graph output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputNodes {
    /// Fold it too (the executor returns such an output from its constants).
    Fold,
    /// Keep it as a node (the quantizers' graphs must produce every output by a node).
    Keep,
}

/// Folds the constant nodes of `g` into initializers (see the module docs), then drops
/// initializers nothing reads any more. Returns how many nodes were folded.
pub fn fold_constants(g: &mut Graph, outputs: OutputNodes) -> Result<usize> {
    // Every folded value stays alive as an initializer, so their total (not only each
    // one, which the op checks) must fit the budget: many 1 GiB ConstantOfShape nodes
    // each pass on their own.
    let budget = MemoryBudget::global()?;
    let mut held: u64 = g.initializers.values().map(|t| t.bytes() as u64).sum();
    budget.check(
        &format_args!("the initializers of graph {:?}", g.name),
        held,
    )?;
    let nodes = std::mem::take(&mut g.nodes);
    let before = nodes.len();
    let mut keep = Vec::with_capacity(before);
    for node in nodes {
        let all_const = node
            .inputs
            .iter()
            .all(|i| i.is_empty() || g.initializers.contains_key(i));
        let is_output = outputs == OutputNodes::Keep
            && node
                .outputs
                .iter()
                .any(|o| g.outputs.iter().any(|go| &go.name == o));
        if !all_const || is_output || matches!(node.op, Op::Conv { .. }) {
            keep.push(node);
            continue;
        }
        let args = node
            .inputs
            .iter()
            .map(|i| (!i.is_empty()).then(|| g.initializers[i].clone()))
            .collect();
        let values = eval_constant(&node, args)?;
        held = values
            .iter()
            .fold(held, |h, v| h.saturating_add(v.bytes() as u64));
        budget
            .check(
                &format_args!("the constants folded up to node {:?}", node.name),
                held,
            )
            .map_err(|e| ModelError::Exec {
                node: node.name.clone(),
                op: node.op.onnx_name().into(),
                msg: e.to_string(),
            })?;
        for (name, v) in node.outputs.iter().zip(values) {
            if !name.is_empty() {
                g.initializers.insert(name.clone(), v);
            }
        }
    }
    let folded = before - keep.len();
    g.nodes = keep;
    drop_unread_initializers(g);
    Ok(folded)
}
