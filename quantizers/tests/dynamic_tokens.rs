//! Dynamic Linear layers on token sequences (a transformer's `[N, S, K]` activations),
//! per-token and per-tensor activation scales, against an independent computation: the
//! activations quantized here by the definition (range including 0, affine u8 grid,
//! round half to even), integer dot products with the model's int8 weights, then
//! `acc · (sa · sw)`; the runtime must match bit for bit. Two MatMuls read the same input
//! (as Q, K and V do), so the quantization they share is checked too. Against f32
//! arithmetic, per-token scales must beat per-tensor ones on the ordinary tokens when one
//! token carries an outlier: the reason MiniLM uses them.

use std::collections::BTreeMap;

use qbench_models::ir::{Dim, Graph, Node, Op, ValueInfo};
use qbench_models::tensor::Tensor;
use qbench_quantizers::{quantize_dynamic, ActScales, Backend, DynamicOptions, QExecutor};

const K: usize = 48;
const OUTS: [usize; 2] = [40, 24];

fn rng(seed: &mut u64) -> f32 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    (*seed >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
}

/// `x [N, S, K]` → `y0 = x·W0`, `y1 = x·W1` (two readers of one input).
fn graph(seed: &mut u64) -> Graph {
    let mut initializers = BTreeMap::new();
    let mut nodes = Vec::new();
    let mut outputs = Vec::new();
    for (i, &n) in OUTS.iter().enumerate() {
        let w: Vec<f32> = (0..K * n).map(|_| rng(seed) * 0.2).collect();
        initializers.insert(format!("w{i}"), Tensor::new(vec![K, n], w).unwrap());
        nodes.push(Node {
            name: format!("proj{i}"),
            op: Op::MatMul,
            inputs: vec!["x".into(), format!("w{i}")],
            outputs: vec![format!("y{i}")],
        });
        outputs.push(ValueInfo {
            name: format!("y{i}"),
            dims: vec![
                Dim::Symbolic("N".into()),
                Dim::Symbolic("S".into()),
                Dim::Fixed(n),
            ],
        });
    }
    Graph {
        name: "two-projections".into(),
        inputs: vec![ValueInfo {
            name: "x".into(),
            dims: vec![
                Dim::Symbolic("N".into()),
                Dim::Symbolic("S".into()),
                Dim::Fixed(K),
            ],
        }],
        outputs,
        initializers,
        nodes,
    }
}

/// Affine u8 parameters of a range by the definition (PyTorch's `_calculate_qparams`).
fn qparams(lo: f32, hi: f32, qmax: i32) -> (f32, i32) {
    let (lo, hi) = (lo.min(0.0), hi.max(0.0));
    let scale = ((hi - lo) / qmax as f32).max(f32::EPSILON);
    let zp = (-(lo / scale).round_ties_even() as i32).clamp(0, qmax);
    (scale, zp)
}

#[test]
fn per_token_and_per_tensor_dynamic_matmuls_match_an_independent_integer_computation() {
    let mut seed = 0x5eed_u64;
    let g = graph(&mut seed);
    let (n, s) = (2, 5);
    let mut x: Vec<f32> = (0..n * s * K).map(|_| rng(&mut seed)).collect();
    // One outlier token (row 3): the case per-tensor scales handle badly.
    x[3 * K..4 * K].iter_mut().for_each(|v| *v *= 60.0);
    let input = Tensor::new(vec![n, s, K], x.clone()).unwrap();
    let rows = n * s;

    for backend in [Backend::Fbgemm, Backend::Vnni] {
        let qmax = if backend == Backend::Fbgemm { 127 } else { 255 };
        let mut err_normal = BTreeMap::new();
        for act in [ActScales::PerRow, ActScales::PerTensor] {
            let mut opts = DynamicOptions::new(backend);
            opts.act_scales = act;
            opts.per_channel = backend == Backend::Vnni;
            let model = quantize_dynamic(&g, &opts).unwrap();
            assert_eq!(model.layers.len(), 2);
            let got = QExecutor::new(&model)
                .unwrap()
                .run(std::slice::from_ref(&input))
                .unwrap();

            // The activations, quantized by the definition.
            let groups: Vec<std::ops::Range<usize>> = match act {
                ActScales::PerRow => (0..rows).map(|r| r * K..(r + 1) * K).collect(),
                ActScales::PerTensor => std::iter::once(0..rows * K).collect(),
            };
            let mut q = vec![0i32; rows * K];
            let mut sa = vec![0f32; rows];
            let mut za = vec![0i32; rows];
            for gr in groups {
                let lo = x[gr.clone()].iter().copied().fold(f32::INFINITY, f32::min);
                let hi = x[gr.clone()]
                    .iter()
                    .copied()
                    .fold(f32::NEG_INFINITY, f32::max);
                let (scale, zp) = qparams(lo, hi, qmax);
                for i in gr.clone() {
                    q[i] = ((x[i] / scale).round_ties_even() as i32 + zp).clamp(0, qmax);
                    sa[i / K] = scale;
                    za[i / K] = zp;
                }
            }
            for (li, layer) in model.layers.iter().enumerate() {
                let out_n = OUTS[li];
                assert_eq!(layer.weight_shape, vec![out_n, K]);
                let y = got[li].f32s().unwrap();
                assert_eq!(got[li].shape(), [n, s, out_n]);
                let w_f32 = g.initializers[&format!("w{li}")].f32s().unwrap();
                let mut worst_normal = 0f32;
                for r in 0..rows {
                    for c in 0..out_n {
                        let acc: i32 = (0..K)
                            .map(|k| (q[r * K + k] - za[r]) * i32::from(layer.weight[c * K + k]))
                            .sum();
                        let sw = layer.weight_q.scales[if layer.weight_q.scales.len() == 1 {
                            0
                        } else {
                            c
                        }];
                        let want = acc as f32 * (sa[r] * sw);
                        let have = y[r * out_n + c];
                        assert_eq!(
                            have.to_bits(),
                            want.to_bits(),
                            "{backend:?} {act:?} proj{li} row {r} col {c}: {have} vs {want}"
                        );
                        if r != 3 {
                            let exact: f32 =
                                (0..K).map(|k| x[r * K + k] * w_f32[k * out_n + c]).sum();
                            worst_normal = worst_normal.max((have - exact).abs());
                        }
                    }
                }
                *err_normal.entry(format!("{act:?}")).or_insert(0f32) += worst_normal;
            }
        }
        // On the ordinary tokens, one scale per token is far closer to f32 than one scale
        // stretched over the outlier.
        let (row, tensor) = (err_normal["PerRow"], err_normal["PerTensor"]);
        assert!(
            row * 4.0 < tensor,
            "{backend:?}: per-token error {row} vs per-tensor {tensor}"
        );
    }
}
