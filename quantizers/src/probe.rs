//! Runs the fp32 graph and keeps every intermediate tensor: what the observers see
//! during calibration, the shapes the converter needs, and the fp32 side of per-layer
//! SQNR.

use std::collections::HashMap;

use qbench_models::exec::{Executor, Options};
use qbench_models::ir::{Graph, ValueInfo};
use qbench_models::tensor::Tensor;

use crate::error::Result;

/// An fp32 executor whose outputs are every node output of the graph.
pub struct Probe {
    exec: Executor,
    names: Vec<String>,
}

impl Probe {
    pub fn new(graph: &Graph) -> Result<Probe> {
        let mut g = graph.clone();
        let mut names: Vec<String> = g.outputs.iter().map(|o| o.name.clone()).collect();
        for n in &graph.nodes {
            for o in n.outputs.iter().filter(|o| !o.is_empty()) {
                if !names.contains(o) {
                    names.push(o.clone());
                    g.outputs.push(ValueInfo {
                        name: o.clone(),
                        dims: Vec::new(),
                    });
                }
            }
        }
        let exec = Executor::new(&g, Options::default())?;
        Ok(Probe { exec, names })
    }

    /// Every tensor of one run (graph inputs included), by name, NCHW.
    pub fn run(&self, graph_inputs: &[(String, Tensor)]) -> Result<HashMap<String, Tensor>> {
        let inputs: Vec<Tensor> = graph_inputs.iter().map(|(_, t)| t.clone()).collect();
        let outs = self.exec.run(&inputs)?;
        let mut all: HashMap<String, Tensor> = self.names.iter().cloned().zip(outs).collect();
        for (name, t) in graph_inputs {
            all.insert(name.clone(), t.clone());
        }
        Ok(all)
    }
}
