//! Tensor shapes for the converter: one fp32 run on a zero input of batch 1 (the graph's
//! declared input shapes with the free batch dimension, and a free sequence length `S`,
//! set to 1).

use std::collections::BTreeMap;

use qbench_models::ir::{Dim, Graph};
use qbench_models::tensor::Tensor;

use crate::error::{QuantError, Result};
use crate::probe::Probe;

/// A zero tensor of batch 1 for each graph input.
pub fn zero_inputs(graph: &Graph) -> Result<Vec<(String, Tensor)>> {
    graph
        .inputs
        .iter()
        .map(|vi| {
            let dims = vi
                .dims
                .iter()
                .enumerate()
                .map(|(i, d)| match d {
                    Dim::Fixed(v) => Ok(*v),
                    Dim::Symbolic(_) if i == 0 => Ok(1),
                    // A free sequence length (a transformer's `S`): the probe needs only
                    // ranks and the constant dims, which one token gives.
                    Dim::Symbolic(s) if s == "S" => Ok(1),
                    Dim::Symbolic(s) => Err(QuantError::Config {
                        key: vi.name.clone(),
                        msg: format!(
                            "dimension {i} ({s:?}) is symbolic; only the batch (and a sequence length S) may be"
                        ),
                    }),
                })
                .collect::<Result<Vec<_>>>()?;
            Ok((vi.name.clone(), Tensor::zeros(dims)))
        })
        .collect()
}

/// The shape of every tensor of `graph` on a zero batch-1 input.
pub fn probe_shapes(probe: &Probe, graph: &Graph) -> Result<BTreeMap<String, Vec<usize>>> {
    let all = probe.run(&zero_inputs(graph)?)?;
    Ok(all
        .into_iter()
        .map(|(k, v)| (k, v.shape().to_vec()))
        .collect())
}
