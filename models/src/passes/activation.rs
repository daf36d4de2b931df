//! Conv + activation fusion: a Relu that is the only reader of a Conv's output (and not a
//! graph output) runs inside the conv's step, as a field of the step
//! ([`FusedNode::activation`]), not as a node of its own. The quantizers use the same
//! rule ([`sole_relu_reader`]) to quantize a Conv/Gemm and its Relu as one int8 layer
//! whose clamp is the Relu.

use crate::ir::{Graph, Node, Op};

/// An activation applied to a step's output in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `max(x, 0)`, keeping NaN ([`crate::exec::relu`]).
    Relu,
}

impl Activation {
    /// Applies the activation to `out` in place.
    pub fn apply(self, out: &mut [f32]) {
        match self {
            Activation::Relu => out.iter_mut().for_each(|v| *v = crate::exec::relu(*v)),
        }
    }
}

/// A node of a fused graph: the node and the activation its step applies to its output.
#[derive(Clone, Debug, PartialEq)]
pub struct FusedNode {
    pub node: Node,
    pub activation: Option<Activation>,
}

/// The Relu that is the only reader of `tensor` (and `tensor` not a graph output), if any.
pub fn sole_relu_reader<'g>(graph: &'g Graph, tensor: &str) -> Option<&'g Node> {
    if graph.outputs.iter().any(|o| o.name == tensor) {
        return None;
    }
    let mut readers = graph
        .nodes
        .iter()
        .filter(|n| n.inputs.iter().any(|i| i == tensor));
    match (readers.next(), readers.next()) {
        (Some(n), None) if n.op == Op::Relu => Some(n),
        _ => None,
    }
}

/// Fuses into each Conv the Relu that is the only reader of its output: the conv takes
/// the Relu's outputs and name (`conv+relu`, for errors) and the Relu node goes. The
/// values are the same bits as the two steps (the Relu runs on the conv's output buffer).
pub fn fuse_activations(g: &Graph) -> Vec<FusedNode> {
    let mut absorbed = vec![false; g.nodes.len()];
    let mut by_conv: Vec<Option<usize>> = vec![None; g.nodes.len()];
    for (i, n) in g.nodes.iter().enumerate() {
        if !matches!(n.op, Op::Conv { .. }) {
            continue;
        }
        let Some(out) = n.outputs.first() else {
            continue;
        };
        if let Some(r) = sole_relu_reader(g, out) {
            let j = g
                .nodes
                .iter()
                .position(|m| std::ptr::eq(m, r))
                .expect("a reader is a node of the graph");
            if j > i && !absorbed[j] {
                absorbed[j] = true;
                by_conv[i] = Some(j);
            }
        }
    }
    g.nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| !absorbed[*i])
        .map(|(i, n)| match by_conv[i] {
            Some(j) => {
                let r = &g.nodes[j];
                let mut node = n.clone();
                node.outputs = r.outputs.clone();
                node.name = format!("{}+{}", n.name, r.name);
                FusedNode {
                    node,
                    activation: Some(Activation::Relu),
                }
            }
            None => FusedNode {
                node: n.clone(),
                activation: None,
            },
        })
        .collect()
}
