//! MiniLM through `qbench sweep` at the sweep's own sizes, with its real weights and probe
//! corpus, under vnni and fbgemm: the cells validate against the results schema, fp32 is
//! the reference (cosine 1, its own probe accuracy), and dynamic int8 with per-token
//! scales meets issue 9's targets on the held-out split (1,000 sentences, at least the
//! 500 asked for): mean cosine ≥ 0.99 to fp32 and probe accuracy within 0.5 pp of fp32's,
//! ahead of its per-tensor variant. Without the fetched files the test prints `SKIPPED`
//! with the fetch command and passes (`ci/test.sh` fetches them first, so CI runs it).
//!
//! Cost: the full split (the probe trained on 2,000 fp32 embeddings, 1,000 held out) is
//! what makes the 0.5 pp target meaningful; `--quick`'s 200/100 moves 1 pp per snippet
//! (its probe drop was 1–2 pp). Latency budgets are cut to 20 + 100 ms per cell through
//! the config, so nearly all of the time is embedding: 98 s wall (85 s CPU over the two
//! cores' rayon threads) with the dev-profile binary on 2026-11-27 while other builds
//! loaded the machine (load average ~3); the fp32 embeddings of the 3,000 sentences are
//! 60 s of that. Above the ~60 s a test should take, but no smaller size meets the
//! target's terms: the sweep has only these two sizes.

mod common;

use common::{qbench, stderr, temp_dir};
use qbench::results::{Method, Results, State};

/// The sweep config: fp32, dynamic and static (to check the skip) under vnni and fbgemm,
/// batch 1, full split, short latency budgets.
const CONFIG: &str = r#"
models = ["minilm"]
methods = ["fp32", "dynamic", "static"]
backends = ["vnni", "fbgemm"]
batch = [1]
threads = [1]
seed = 0
quick = false
calib_samples = 1024
qat_epochs = 1
warmup_ms = 20
budget_ms = 100
"#;

#[test]
fn minilm_sweep_meets_the_cosine_and_probe_targets_per_token_under_vnni_and_fbgemm() {
    let dry = qbench(&["sweep", "--dry-run", "--models", "minilm", "--batch", "1"]);
    assert!(dry.status.success(), "{}", stderr(&dry));
    let plan = String::from_utf8_lossy(&dry.stdout).into_owned();
    if plan.contains("qbench fetch minilm") {
        eprintln!(
            "SKIPPED minilm_sweep_meets_the_cosine_and_probe_targets_per_token_under_vnni_and_fbgemm: \
             the MiniLM weights or the Rotten Tomatoes corpus are not fetched; run `qbench fetch minilm`"
        );
        return;
    }
    let dir = temp_dir("minilm-sweep");
    let config = dir.join("minilm.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let out = dir.join("run");
    let o = qbench(&[
        "sweep",
        "--config",
        config.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "sweep failed: {}", stderr(&o));
    let r = Results::read(&out.join("results.json")).expect("results.json validates");

    for backend in ["vnni", "fbgemm"] {
        let cell = |m: Method| {
            r.cells
                .iter()
                .find(|c| c.method == m && c.backend.name() == backend)
                .unwrap_or_else(|| panic!("no {m:?} cell for {backend}"))
        };
        let fp32 = cell(Method::Fp32);
        assert_eq!(fp32.state, State::Measured, "{backend}: {:?}", fp32.reason);
        let acc = fp32.accuracy.as_ref().unwrap();
        assert_eq!(acc.metric, "probe_accuracy");
        // Sentiment from a linear probe on these embeddings is far above chance.
        assert!(acc.value > 0.6, "fp32 probe accuracy {}", acc.value);
        let e = fp32.embedding.as_ref().unwrap();
        assert_eq!(e.cosine_worst, 1.0);
        assert!(e.samples >= 500, "{backend}: {} sentences", e.samples);

        let dy = cell(Method::Dynamic);
        assert_eq!(dy.state, State::Measured, "{backend}: {:?}", dy.reason);
        assert_eq!(dy.kernel.as_deref().map(|k| !k.is_empty()), Some(true));
        let e = dy.embedding.as_ref().unwrap();
        assert_eq!(e.act_scales.as_deref(), Some("per_token"));
        assert!(
            e.samples >= 500,
            "{backend}: cosine over {} sentences",
            e.samples
        );
        assert!(
            e.cosine_mean >= 0.99,
            "{backend}: per-token mean cosine {}",
            e.cosine_mean
        );
        assert!(e.cosine_worst > 0.9 && e.cosine_worst <= e.cosine_mean);
        let a = dy.accuracy.as_ref().unwrap();
        assert_eq!(a.fp32, acc.value);
        assert!(
            a.drop_pp.abs() <= 0.5,
            "{backend}: probe accuracy {} vs fp32 {}: {} pp",
            a.value,
            a.fp32,
            a.drop_pp
        );
        // Per-token scales are the point: their embeddings are closer to fp32 than those
        // of one scale per tensor (PyTorch's and ONNX Runtime's default).
        let pt = e
            .per_tensor
            .as_ref()
            .expect("the per-tensor variant beside it");
        assert!(
            pt.cosine_mean > 0.9 && pt.cosine_mean < e.cosine_mean,
            "{backend}: per tensor {} vs per token {}",
            pt.cosine_mean,
            e.cosine_mean
        );
        assert!(dy.size_ratio.unwrap() < 0.62, "{:?}", dy.size_ratio);
        assert!(
            dy.speedup_vs_fp32.is_some()
                || dy
                    .not_applicable
                    .contains_key(&qbench::results::Measure::Speed)
        );

        let st = cell(Method::Static);
        assert_eq!(st.state, State::Skipped);
        assert!(st.reason.as_deref().unwrap().contains("static"));
    }
}
