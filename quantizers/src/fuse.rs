//! Fusion before quantization, on the shared graph passes of `qbench_models::passes`.
//! First constant folding: every node whose inputs are all constants (weights built by
//! `ConstantOfShape`, shape arithmetic) becomes an initializer, so such weights are seen
//! as weights. Then it folds each inference BatchNormalization into the Conv that
//! feeds it (`W' = W·γ/√(σ²+ε)`, `b' = (b − μ)·γ/√(σ²+ε) + β`), so the quantizer sees one
//! conv whose weights already carry the normalisation, as PyTorch's `fuse_modules` does.
//! Conv/Gemm + ReLU pairs are not rewritten here (ONNX has no fused op); the static
//! pipeline treats such a pair as one int8 layer with a clamped output (see `plan`).

use qbench_models::ir::Graph;
use qbench_models::passes::{self, OutputNodes, Reach};

use crate::error::Result;

/// A fused pair, for reports: the conv that absorbed the batch norm.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fused {
    pub conv: String,
    pub batch_norm: String,
}

/// Folds every BatchNormalization whose input is produced by a Conv that nothing else
/// reads and whose statistics are constants ([`passes::fold_batch_norms`], wherever the
/// BatchNorm sits after the Conv). Returns the new graph and what was fused.
pub fn fold_batch_norms(graph: &Graph) -> Result<(Graph, Vec<Fused>)> {
    let mut g = graph.clone();
    let fused = passes::fold_batch_norms(&mut g, Reach::Anywhere)?
        .into_iter()
        .map(|p| Fused {
            conv: p.conv,
            batch_norm: p.batch_norm,
        })
        .collect();
    Ok((g, fused))
}

/// Evaluates every non-Conv node whose inputs are all initializers into initializers
/// ([`passes::fold_constants`]). Graph outputs are left to their nodes.
pub fn fold_constants(graph: &Graph) -> Result<Graph> {
    let mut g = graph.clone();
    passes::fold_constants(&mut g, OutputNodes::Keep)?;
    Ok(g)
}
