//! Import coverage and the tract cross-check on the ONNX "light" models
//! (`models/zoo/light/`, see its README): every one imports, runs finite, and matches
//! tract within `CROSSCHECK_REL_TOL` with equal argmax; and each survives an export →
//! import round trip bit for bit.

use std::path::PathBuf;

use qbench_models::exec::{Executor, Options};
use qbench_models::onnx::random_weights;
use qbench_models::onnx::{self, crosscheck, CROSSCHECK_REL_TOL};
use qbench_models::tensor::Tensor;

const MODELS: [&str; 9] = [
    "light_bvlc_alexnet",
    "light_densenet121",
    "light_inception_v1",
    "light_inception_v2",
    "light_resnet50",
    "light_shufflenet",
    "light_squeezenet",
    "light_vgg19",
    "light_zfnet512",
];

fn path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("zoo/light")
        .join(format!("{name}.onnx"))
}

fn random_input(shape: &[usize], seed: u64) -> Tensor {
    random_weights::uniform(shape, seed).unwrap()
}

#[test]
fn light_models_import_and_match_tract() {
    let mut failures = Vec::new();
    for (i, name) in MODELS.iter().enumerate() {
        let input = random_input(&[1, 3, 224, 224], i as u64);
        let r = crosscheck(path(name), &[input]).unwrap_or_else(|e| panic!("{name}: {e}"));
        println!(
            "{name:22} max_abs_diff {:.3e}  max|ref| {:.3e}  rel {:.3e}  argmax {}  finite {}  shapes {:?}",
            r.max_abs_diff, r.max_abs_ref, r.rel_diff, r.argmax_agree, r.finite, r.shapes
        );
        if !r.passes() {
            failures.push(format!("{name}: {r:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "tolerance {CROSSCHECK_REL_TOL}: {failures:#?}"
    );
}

/// The light models' weights are constants, so every class gets the same logit and the
/// softmax is flat: a weak check. Here each `ConstantOfShape` weight is replaced by seeded
/// random values (`onnx::random_weights`, what `qbench crosscheck` does too), the graph is
/// exported with our exporter, and that file is cross-checked: real per-class
/// differences, and tract reading our export.
///
/// Tolerance: 1e-3 of the output's max magnitude, looser than `CROSSCHECK_REL_TOL`,
/// because random weights without trained normalisation give large logits, and the final
/// Softmax turns a logit difference δ into p(1−p)·δ: the few-ulp summation-order
/// differences of large logits show up at ~1e-4 of the (≤ 1) probabilities (measured:
/// ≤ 1.4e-4 on inception_v2, ≤ 1.3e-5 elsewhere). A wrong op is off by O(1).
const RANDOM_REL_TOL: f32 = 1e-3;

#[test]
fn light_models_with_random_weights_match_tract() {
    let dir = std::env::temp_dir().join(format!("qbench-light-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut failures = Vec::new();
    for (i, name) in MODELS.iter().enumerate() {
        let mut g = onnx::load(path(name)).unwrap();
        let replaced = random_weights::randomize_constant_weights(&mut g, 1000 * i as u64).unwrap();
        assert!(replaced > 0, "{name}: no ConstantOfShape weights");
        assert!(
            !g.nodes
                .iter()
                .any(|n| matches!(n.op, qbench_models::ir::Op::ConstantOfShape { .. })),
            "{name}: a ConstantOfShape weight is left"
        );
        let file = dir.join(format!("{name}_random.onnx"));
        onnx::save(&g, &file).unwrap();
        let input = random_input(&[1, 3, 224, 224], 7 + i as u64);
        let r = crosscheck(&file, &[input]).unwrap_or_else(|e| panic!("{name}: {e}"));
        println!(
            "{name:22} (random weights) max_abs_diff {:.3e}  max|ref| {:.3e}  rel {:.3e}  argmax {}  finite {}",
            r.max_abs_diff, r.max_abs_ref, r.rel_diff, r.argmax_agree, r.finite
        );
        if !(r.finite && r.argmax_agree && r.rel_diff <= RANDOM_REL_TOL) {
            failures.push(format!("{name}: {r:?}"));
        }
    }
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        failures.is_empty(),
        "tolerance {RANDOM_REL_TOL}: {failures:#?}"
    );
}

#[test]
fn light_models_round_trip_through_export() {
    for (i, name) in MODELS.iter().enumerate() {
        let g = onnx::load(path(name)).unwrap();
        let bytes = onnx::to_bytes(&g);
        let g2 = onnx::from_bytes(&bytes, "roundtrip").unwrap();
        assert_eq!(
            g.initializers.len() + extra_inits(&g),
            g2.initializers.len(),
            "{name}"
        );
        // The same nodes come back (legacy Softmax included, which export expands).
        let ops = |g: &qbench_models::ir::Graph| {
            g.nodes
                .iter()
                .map(|n| (n.name.clone(), n.op.onnx_name()))
                .collect::<Vec<_>>()
        };
        assert_eq!(ops(&g), ops(&g2), "{name}");
        let input = random_input(&[1, 3, 224, 224], 100 + i as u64);
        let a = Executor::new(&g, Options::default())
            .unwrap()
            .run(std::slice::from_ref(&input))
            .unwrap();
        let b = Executor::new(&g2, Options::default())
            .unwrap()
            .run(&[input])
            .unwrap();
        assert_eq!(a, b, "{name}: outputs differ after export → import");
    }
}

/// Constants export adds (Unsqueeze axes moved from attributes to inputs).
fn extra_inits(g: &qbench_models::ir::Graph) -> usize {
    g.nodes
        .iter()
        .filter(|n| {
            matches!(
                n.op,
                qbench_models::ir::Op::Unsqueeze { axes: Some(_) }
                    | qbench_models::ir::Op::Squeeze { axes: Some(_) }
            )
        })
        .count()
        + 2 * g
            .nodes
            .iter()
            .filter(|n| matches!(n.op, qbench_models::ir::Op::Clip { min: Some(_), .. }))
            .count()
}
