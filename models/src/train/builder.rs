//! [`GraphBuilder`]: writes IR graphs layer by layer with seeded, initialised weights
//! (He-normal conv/linear weights, zero biases, BatchNorm γ = 1, β = 0, running mean 0
//! and variance 1). Used by the zoo architectures and the tests.

use std::collections::BTreeMap;

use crate::ir::{Dim, Graph, Node, Op, Spatial, ValueInfo};
use crate::tensor::Tensor;

use super::init::{he_normal, Rng};

/// BatchNormalization epsilon of every builder BN (PyTorch's default).
pub const BN_EPS: f32 = 1e-5;

pub struct GraphBuilder {
    name: String,
    rng: Rng,
    input: ValueInfo,
    nodes: Vec<Node>,
    inits: BTreeMap<String, Tensor>,
}

impl GraphBuilder {
    /// A graph named `name` whose input `input` has a free batch dimension `N` and the
    /// fixed dimensions `dims`.
    pub fn new(name: &str, seed: u64, input: &str, dims: &[usize]) -> GraphBuilder {
        let mut all = vec![Dim::Symbolic("N".into())];
        all.extend(dims.iter().map(|&d| Dim::Fixed(d)));
        GraphBuilder {
            name: name.into(),
            rng: Rng::new(seed),
            input: ValueInfo {
                name: input.into(),
                dims: all,
            },
            nodes: Vec::new(),
            inits: BTreeMap::new(),
        }
    }

    /// The name of the graph input, to start the first layer from.
    pub fn input(&self) -> String {
        self.input.name.clone()
    }

    fn init(&mut self, name: String, shape: Vec<usize>, data: Vec<f32>) -> String {
        let t = Tensor::new(shape, data).expect("builder shapes hold their data");
        self.inits.insert(name.clone(), t);
        name
    }

    fn node(&mut self, name: &str, op: Op, inputs: Vec<String>) -> String {
        let out = name.to_string();
        self.nodes.push(Node {
            name: name.into(),
            op,
            inputs,
            outputs: vec![out.clone()],
        });
        out
    }

    /// `Gemm` with a `[fout][fin]` weight (transB = 1, the Linear layout) and a bias.
    pub fn linear(&mut self, x: &str, name: &str, fin: usize, fout: usize) -> String {
        let w = he_normal(&mut self.rng, fout * fin, fin);
        let w = self.init(format!("{name}.weight"), vec![fout, fin], w);
        let b = self.init(format!("{name}.bias"), vec![fout], vec![0.0; fout]);
        let op = Op::Gemm {
            alpha: 1.0,
            beta: 1.0,
            trans_a: false,
            trans_b: true,
        };
        self.node(name, op, vec![x.into(), w, b])
    }

    /// A square convolution without bias (a BatchNorm follows it in every zoo model).
    #[allow(clippy::too_many_arguments)]
    pub fn conv(
        &mut self,
        x: &str,
        name: &str,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        pad: usize,
        groups: usize,
    ) -> String {
        let fan_in = cin / groups * k * k;
        let w = he_normal(&mut self.rng, cout * fan_in, fan_in);
        let w = self.init(format!("{name}.weight"), vec![cout, cin / groups, k, k], w);
        let op = Op::Conv {
            spatial: Spatial {
                kernel: Some([k, k]),
                strides: [stride, stride],
                pads: [pad; 4],
                ..Spatial::default()
            },
            group: groups,
        };
        self.node(name, op, vec![x.into(), w])
    }

    pub fn batchnorm(&mut self, x: &str, name: &str, c: usize) -> String {
        let inputs = vec![
            x.to_string(),
            self.init(format!("{name}.weight"), vec![c], vec![1.0; c]),
            self.init(format!("{name}.bias"), vec![c], vec![0.0; c]),
            self.init(format!("{name}.running_mean"), vec![c], vec![0.0; c]),
            self.init(format!("{name}.running_var"), vec![c], vec![1.0; c]),
        ];
        self.node(name, Op::BatchNorm { epsilon: BN_EPS }, inputs)
    }

    pub fn relu(&mut self, x: &str, name: &str) -> String {
        self.node(name, Op::Relu, vec![x.into()])
    }

    pub fn add(&mut self, a: &str, b: &str, name: &str) -> String {
        self.node(name, Op::Add, vec![a.into(), b.into()])
    }

    pub fn global_avg_pool(&mut self, x: &str, name: &str) -> String {
        self.node(name, Op::GlobalAveragePool, vec![x.into()])
    }

    pub fn flatten(&mut self, x: &str, name: &str) -> String {
        self.node(name, Op::Flatten { axis: 1 }, vec![x.into()])
    }

    /// Finishes the graph with `output` as its only output (`[N, classes]`).
    pub fn finish(self, output: &str, classes: usize) -> Graph {
        Graph {
            name: self.name,
            inputs: vec![self.input],
            outputs: vec![ValueInfo {
                name: output.into(),
                dims: vec![Dim::Symbolic("N".into()), Dim::Fixed(classes)],
            }],
            initializers: self.inits,
            nodes: self.nodes,
        }
    }
}
