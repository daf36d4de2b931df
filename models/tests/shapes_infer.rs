//! Static shape inference (`qbench_models::shapes`) against what the executor computes:
//! on every ONNX model of the zoo and the light models, each tensor's inferred shape is
//! the shape a run produces; shape arithmetic on input shapes is carried as values; a
//! shape that depends on input data is reported unknown, and the run still works.

use std::collections::BTreeMap;
use std::path::PathBuf;

use qbench_models::exec::{Executor, Options};
use qbench_models::ir::{CastTo, Dim, Graph, Node, Op, ValueInfo};
use qbench_models::shapes::{self, Elem};
use qbench_models::tensor::Tensor;
use qbench_models::{onnx, zoo};

/// `g` with every node output made a graph output, so a run returns all of them.
fn every_output(g: &Graph) -> Graph {
    let mut all = g.clone();
    for n in &g.nodes {
        for o in n.outputs.iter().filter(|o| !o.is_empty()) {
            if !all.outputs.iter().any(|x| &x.name == o) {
                all.outputs.push(ValueInfo {
                    name: o.clone(),
                    dims: Vec::new(),
                });
            }
        }
    }
    all
}

/// Runs `g` on zeros of `input_shapes` and compares every tensor's shape with inference;
/// returns how many tensors were compared.
fn check_against_a_run(label: &str, g: &Graph, input_shapes: &[Vec<usize>]) -> usize {
    let inferred = shapes::infer(g, input_shapes).unwrap_or_else(|e| panic!("{label}: {e}"));
    assert!(
        inferred.unknown.is_empty(),
        "{label}: unknown shapes {:?}",
        inferred.unknown
    );
    let all = every_output(g);
    let exec = Executor::new(&all, Options::default()).unwrap();
    let inputs: Vec<Tensor> = input_shapes
        .iter()
        .map(|s| Tensor::try_zeros(s.clone()).unwrap())
        .collect();
    let outs = exec.run(&inputs).unwrap_or_else(|e| panic!("{label}: {e}"));
    for (vi, t) in all.outputs.iter().zip(&outs) {
        let info = &inferred.tensors[&vi.name];
        assert_eq!(info.shape, t.shape(), "{label}: tensor {:?}", vi.name);
        assert_eq!(info.elem == Elem::F32, t.is_f32(), "{label}: {:?}", vi.name);
    }
    outs.len()
}

#[test]
fn shapes_match_a_run_on_every_zoo_and_light_model() {
    let mut models: Vec<(String, PathBuf, usize)> = Vec::new();
    for e in zoo::list(&zoo::zoo_dir()).unwrap() {
        let p = e.model_path();
        if p.extension().is_some_and(|x| x == "onnx") && p.exists() {
            models.push((e.manifest.name.clone(), p, 3));
        }
    }
    let light = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("zoo/light");
    for f in std::fs::read_dir(&light).unwrap() {
        let p = f.unwrap().path();
        if p.extension().is_some_and(|x| x == "onnx") {
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            models.push((name, p, 1));
        }
    }
    assert!(models.len() >= 11, "{models:?}");
    for (name, path, batch) in models {
        let g = onnx::load(&path).unwrap();
        let input_shapes: Vec<Vec<usize>> = g
            .inputs
            .iter()
            // A file that fixes its batch (resnet50's) runs at that batch.
            .map(|vi| shapes::bind_batch(vi, batch).unwrap())
            .collect();
        let n = check_against_a_run(&name, &g, &input_shapes);
        assert!(n > 3, "{name}: {n} tensors");
    }
}

fn vi(name: &str, dims: &[usize]) -> ValueInfo {
    ValueInfo {
        name: name.into(),
        dims: dims
            .iter()
            .enumerate()
            .map(|(i, &d)| {
                if i == 0 {
                    Dim::Symbolic("N".into())
                } else {
                    Dim::Fixed(d)
                }
            })
            .collect(),
    }
}

fn node(name: &str, op: Op, inputs: &[&str], outputs: &[&str]) -> Node {
    Node {
        name: name.into(),
        op,
        inputs: inputs.iter().map(|s| s.to_string()).collect(),
        outputs: outputs.iter().map(|s| s.to_string()).collect(),
    }
}

/// The chain exporters write for `x.view(x.size(0), -1)`: Shape → Gather → Unsqueeze →
/// Concat → Reshape. Its values follow the input's shape, so the Reshape's output is
/// known for every batch.
#[test]
fn shape_arithmetic_on_input_shapes_is_carried_as_values() {
    let mut inits = BTreeMap::new();
    inits.insert(
        "zero".to_string(),
        Tensor::new_i64(vec![], vec![0]).unwrap(),
    );
    inits.insert("axes".to_string(), Tensor::from_i64s(vec![0]));
    inits.insert("rest".to_string(), Tensor::from_i64s(vec![-1]));
    let g = Graph {
        name: "flatten-chain".into(),
        inputs: vec![vi("x", &[0, 3, 4, 5])],
        outputs: vec![ValueInfo {
            name: "y".into(),
            dims: vec![],
        }],
        initializers: inits,
        nodes: vec![
            node("shape", Op::Shape, &["x"], &["s"]),
            node("batch", Op::Gather { axis: 0 }, &["s", "zero"], &["n"]),
            node(
                "unsq",
                Op::Unsqueeze { axes: None },
                &["n", "axes"],
                &["n1"],
            ),
            node("cat", Op::Concat { axis: 0 }, &["n1", "rest"], &["spec"]),
            node("flat", Op::Reshape, &["x", "spec"], &["y"]),
        ],
    };
    for batch in [1, 7] {
        let inferred = shapes::infer(&g, &[vec![batch, 3, 4, 5]]).unwrap();
        assert!(inferred.unknown.is_empty(), "{:?}", inferred.unknown);
        assert_eq!(inferred.tensors["y"].shape, vec![batch, 60]);
        let spec = inferred.tensors["spec"].value.as_ref().unwrap();
        assert_eq!(spec.i64s().unwrap(), &[batch as i64, -1]);
        check_against_a_run("flatten-chain", &g, &[vec![batch, 3, 4, 5]]);
    }
}

/// A Reshape whose target comes from the input's values cannot be known before the run:
/// it and what follows are listed as unknown, and the executor still runs it (checking
/// the tensor when it is allocated).
#[test]
fn a_shape_from_input_data_is_unknown_and_still_runs() {
    let g = Graph {
        name: "data-shape".into(),
        inputs: vec![vi("x", &[1, 4])],
        outputs: vec![ValueInfo {
            name: "z".into(),
            dims: vec![],
        }],
        initializers: BTreeMap::new(),
        nodes: vec![
            node("ids", Op::Cast { to: CastTo::I64 }, &["x"], &["spec"]),
            node("view", Op::Reshape, &["x", "spec"], &["y"]),
            node("act", Op::Relu, &["y"], &["z"]),
        ],
    };
    let inferred = shapes::infer(&g, &[vec![1, 4]]).unwrap();
    assert_eq!(inferred.tensors["spec"].shape, vec![1, 4]);
    let unknown: Vec<&str> = inferred.unknown.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(unknown, ["view", "act"]);
    assert!(
        inferred.unknown[0].1.contains("input data"),
        "{:?}",
        inferred.unknown
    );
    let exec = Executor::new(&g, Options::default()).unwrap();
    let plan = exec.memory_plan(&[vec![1, 4]]).unwrap();
    assert_eq!(plan.unknown, 2);
    let x = Tensor::new(vec![1, 4], vec![2.0, 2.0, 1.0, 1.0]).unwrap();
    let out = exec.run(&[x]).unwrap();
    assert_eq!(out[0].shape(), &[2, 2, 1, 1]);
}

/// Inference refuses what the executor would refuse, naming the node, before running.
#[test]
fn a_graph_whose_shapes_do_not_fit_is_refused_naming_the_node() {
    let mut inits = BTreeMap::new();
    inits.insert("w".to_string(), Tensor::zeros(vec![5, 3]));
    let g = Graph {
        name: "mismatch".into(),
        inputs: vec![vi("x", &[1, 4])],
        outputs: vec![ValueInfo {
            name: "y".into(),
            dims: vec![],
        }],
        initializers: inits,
        nodes: vec![node("mm", Op::MatMul, &["x", "w"], &["y"])],
    };
    let e = shapes::infer(&g, &[vec![2, 4]]).unwrap_err().to_string();
    assert!(e.contains("\"mm\"") && e.contains("inner dims"), "{e}");
    let e = shapes::infer(&g, &[vec![2, 5]]).unwrap_err().to_string();
    assert!(e.contains("\"x\"") && e.contains("declared"), "{e}");
}
