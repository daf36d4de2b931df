//! Compiling an IR graph into training steps: parameters by role, activations by slot,
//! fake quantization and Conv + BatchNorm folding where the QAT plan puts them.

use super::*;

impl Network {
    /// Compiles `graph`; every refusal names the graph, node and op.
    pub fn new(graph: &Graph) -> Result<Network> {
        Self::with_qat(graph, QatPlan::default())
    }

    /// Compiles `graph` for quantization-aware training per `plan` (module docs).
    pub fn with_qat(graph: &Graph, plan: QatPlan) -> Result<Network> {
        let file = graph.name.as_str();
        graph.validate(file)?;
        let graph_err = |msg: String| ModelError::Graph {
            file: file.to_string(),
            msg,
        };
        if graph.inputs.len() != 1 || graph.outputs.len() != 1 {
            return Err(graph_err(format!(
                "training needs one input and one output, the graph has {} and {}",
                graph.inputs.len(),
                graph.outputs.len()
            )));
        }
        let QatPlan {
            activations,
            weights,
            fold_bn,
        } = plan;
        // Plan names are checked against the graph up front.
        let tensors: HashSet<&str> = graph
            .nodes
            .iter()
            .flat_map(|n| n.outputs.iter().map(String::as_str))
            .chain([graph.inputs[0].name.as_str()])
            .collect();
        let node_names: HashSet<&str> = graph.nodes.iter().map(|n| n.name.as_str()).collect();
        let mut act_index: HashMap<String, usize> = HashMap::new();
        let mut act_fq = Vec::new();
        for (t, q) in activations {
            if !tensors.contains(t.as_str()) || act_index.contains_key(&t) {
                return Err(graph_err(format!(
                    "QAT plan: activation {t:?} is not a tensor of the graph, or is listed twice"
                )));
            }
            act_index.insert(t, act_fq.len());
            act_fq.push(q);
        }
        let mut weight_index: HashMap<String, usize> = HashMap::new();
        let mut weight_fq = Vec::new();
        for (n, q) in weights {
            if !node_names.contains(n.as_str()) {
                return Err(graph_err(format!(
                    "QAT plan: no node {n:?} for a weight quantizer"
                )));
            }
            weight_index.insert(n, weight_fq.len());
            weight_fq.push(q);
        }
        let mut folds: HashMap<&str, usize> = HashMap::new();
        for conv in &fold_bn {
            let node = graph
                .nodes
                .iter()
                .find(|n| &n.name == conv && matches!(n.op, Op::Conv { .. }))
                .ok_or_else(|| graph_err(format!("QAT plan: no Conv node {conv:?} to fold")))?;
            let out = &node.outputs[0];
            let readers: Vec<usize> = (0..graph.nodes.len())
                .filter(|&i| graph.nodes[i].inputs.contains(out))
                .collect();
            match readers.as_slice() {
                [bn] if matches!(graph.nodes[*bn].op, Op::BatchNorm { .. })
                    && graph.nodes[*bn].inputs.first() == Some(out)
                    && !graph.outputs.iter().any(|o| &o.name == out) =>
                {
                    folds.insert(conv.as_str(), *bn);
                }
                _ => {
                    return Err(node_err(
                        file,
                        conv,
                        "Conv",
                        "QAT folding needs a BatchNormalization as the only reader of the output",
                    ))
                }
            }
        }
        let folded_bns: HashSet<usize> = folds.values().copied().collect();

        let mut slots: HashMap<String, Src> = HashMap::new();
        let mut n_acts = 0;
        let mut params: Vec<Param> = Vec::new();
        let mut steps = Vec::new();
        let fq_of = |name: &str| act_index.get(name).map(|&q| (q, true));
        let input = graph.inputs[0].name.as_str();
        emit(&mut steps, &mut slots, &mut n_acts, fq_of(input), input);
        for (ni, node) in graph.nodes.iter().enumerate() {
            if folded_bns.contains(&ni) {
                continue;
            }
            let op = node.op.onnx_name();
            let err = |msg: &str| node_err(file, &node.name, op, msg);
            let wq = weight_index.get(&node.name).copied();
            let fold = folds.get(node.name.as_str()).map(|&bn| &graph.nodes[bn]);
            let kind = match &node.op {
                Op::Gemm {
                    alpha,
                    beta,
                    trans_a,
                    trans_b,
                } => {
                    if *alpha != 1.0 || *beta != 1.0 || *trans_a {
                        return Err(err(
                            "the trainer supports Gemm with alpha = beta = 1 and transA = 0",
                        ));
                    }
                    Kind::Gemm {
                        trans_b: *trans_b,
                        wq,
                    }
                }
                Op::Conv { spatial, group } => match fold.map(|bn| &bn.op) {
                    Some(Op::BatchNorm { epsilon }) => Kind::ConvBn {
                        spatial: spatial.clone(),
                        group: *group,
                        eps: *epsilon,
                        wq,
                    },
                    _ => Kind::Conv {
                        spatial: spatial.clone(),
                        group: *group,
                        wq,
                    },
                },
                Op::BatchNorm { epsilon } => Kind::BatchNorm { eps: *epsilon },
                Op::Relu => Kind::Relu,
                Op::MaxPool { spatial } | Op::AveragePool { spatial, .. } if spatial.ceil_mode => {
                    return Err(err("the trainer supports pooling with ceil_mode = 0 only"));
                }
                Op::MaxPool { spatial } => Kind::MaxPool {
                    spatial: spatial.clone(),
                },
                Op::AveragePool {
                    spatial,
                    count_include_pad,
                } => Kind::AvgPool {
                    spatial: spatial.clone(),
                    include_pad: *count_include_pad,
                },
                Op::GlobalAveragePool => Kind::Gap,
                Op::Flatten { axis } => Kind::Flatten { axis: *axis },
                Op::Add => Kind::Add,
                Op::Identity => Kind::Identity,
                _ => return Err(err("not supported by the trainer")),
            };
            if wq.is_some()
                && !matches!(
                    kind,
                    Kind::Gemm { .. } | Kind::Conv { .. } | Kind::ConvBn { .. }
                )
            {
                return Err(err(
                    "QAT plan: a weight quantizer on a node without weights",
                ));
            }
            let mut inputs = Vec::new();
            let act = |i: usize| -> Result<Option<Src>> {
                let name = node
                    .inputs
                    .get(i)
                    .filter(|n| !n.is_empty())
                    .ok_or_else(|| err(&format!("input {i} is missing")))?;
                match slots.get(name) {
                    Some(src @ Src::Act(_)) => Ok(Some(*src)),
                    _ => Err(err(&format!(
                        "input {name:?} must be an activation, not a constant"
                    ))),
                }
            };
            inputs.push(act(0)?);
            if matches!(kind, Kind::Add) {
                inputs.push(act(1)?);
            }
            // An initializer becomes a parameter of the role its first use gives it.
            let mut param = |n: &Node, i: usize, kind: ParamKind| -> Result<Option<Src>> {
                let err = |msg: &str| node_err(file, &n.name, n.op.onnx_name(), msg);
                let Some(name) = n.inputs.get(i).filter(|n| !n.is_empty()) else {
                    return Ok(None);
                };
                if let Some(&src) = slots.get(name) {
                    return match src {
                        Src::Param(_) => Ok(Some(src)),
                        Src::Act(_) => Err(err(&format!(
                            "input {name:?} must be an initializer (a trained parameter)"
                        ))),
                    };
                }
                let t = graph
                    .initializers
                    .get(name)
                    .ok_or_else(|| err(&format!("input {name:?} must be an initializer")))?;
                let value = t
                    .f32s()
                    .map_err(|e| err(&format!("initializer {name:?}: {e}")))?
                    .to_vec();
                params.push(Param {
                    name: name.clone(),
                    shape: t.shape().to_vec(),
                    value,
                    kind,
                });
                let src = Src::Param(params.len() - 1);
                slots.insert(name.clone(), src);
                Ok(Some(src))
            };
            match &kind {
                Kind::Gemm { .. } | Kind::Conv { .. } | Kind::ConvBn { .. } => {
                    inputs.push(param(node, 1, ParamKind::Weight)?);
                    inputs.push(param(node, 2, ParamKind::Bias)?);
                    if inputs[1].is_none() {
                        return Err(err("the weight input is missing"));
                    }
                    if let Some(bn) = fold {
                        bn_params(file, bn, &mut inputs, &mut param)?;
                    }
                }
                Kind::BatchNorm { .. } => bn_params(file, node, &mut inputs, &mut param)?,
                _ => {}
            }
            if node.outputs.len() != 1 && !matches!(kind, Kind::BatchNorm { .. }) {
                return Err(err("the trainer supports nodes with one output"));
            }
            let out = fold.map_or(&node.outputs[0], |bn| &bn.outputs[0]).clone();
            steps.push(Step {
                node: node.name.clone(),
                op,
                kind,
                inputs,
                output: n_acts,
            });
            emit(&mut steps, &mut slots, &mut n_acts, fq_of(&out), &out);
        }
        let output = match slots.get(&graph.outputs[0].name) {
            Some(Src::Act(i)) => *i,
            _ => {
                return Err(graph_err(format!(
                    "output {:?} is not computed from the input",
                    graph.outputs[0].name
                )))
            }
        };
        Ok(Network {
            template: graph.clone(),
            params,
            steps,
            n_acts,
            output,
            input_dims: graph.inputs[0].dims.clone(),
            act_fq,
            weight_fq,
            bn_momentum: 0.9,
            observers_enabled: true,
            fake_quant_enabled: true,
            bn_frozen: false,
        })
    }
}

/// Registers a step's output (or the graph input) as `name`, preceded by its fake
/// quantization step when `fq` says so; later readers see the fake-quantized value.
pub(super) fn emit(
    steps: &mut Vec<Step>,
    slots: &mut HashMap<String, Src>,
    n_acts: &mut usize,
    fq: Option<(usize, bool)>,
    name: &str,
) {
    if let Some((q, observe)) = fq {
        steps.push(Step {
            node: format!("{name}:fake_quant"),
            op: "FakeQuantize",
            kind: Kind::FakeQuant { q, observe },
            inputs: vec![Some(Src::Act(*n_acts))],
            output: *n_acts + 1,
        });
        *n_acts += 1;
    }
    slots.insert(name.to_string(), Src::Act(*n_acts));
    *n_acts += 1;
}

/// Registers input `i` of a node as a parameter of a role (compile's closure).
pub(super) type ParamFn<'a> = dyn FnMut(&Node, usize, ParamKind) -> Result<Option<Src>> + 'a;

/// Pushes a BatchNormalization node's γ, β, running mean and running variance.
pub(super) fn bn_params(
    file: &str,
    n: &Node,
    inputs: &mut Vec<Option<Src>>,
    param: &mut ParamFn,
) -> Result<()> {
    let roles = [
        ParamKind::BnScale,
        ParamKind::BnShift,
        ParamKind::RunningMean,
        ParamKind::RunningVar,
    ];
    for (i, k) in roles.into_iter().enumerate() {
        let p = param(n, i + 1, k)?;
        if p.is_none() {
            return Err(node_err(
                file,
                &n.name,
                n.op.onnx_name(),
                format!("input {} is missing", i + 1),
            ));
        }
        inputs.push(p);
    }
    Ok(())
}
