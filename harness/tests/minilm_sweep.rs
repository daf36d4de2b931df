//! MiniLM through `qbench sweep --quick` with its real weights and probe corpus: the
//! cells validate against the results schema, fp32 is the reference (cosine 1, its own
//! probe accuracy), dynamic int8 with per-token scales stays close to fp32 and carries
//! its per-tensor variant. Without the fetched files the test prints `SKIPPED` with the
//! fetch command and passes (`ci/test.sh` fetches them first, so CI runs it).

mod common;

use common::{qbench, stderr, temp_dir};
use qbench::results::{Method, Results, State};

#[test]
fn minilm_quick_sweep_scores_fp32_and_dynamic_int8_by_cosine_and_probe() {
    let dry = qbench(&["sweep", "--dry-run", "--models", "minilm", "--batch", "1"]);
    assert!(dry.status.success(), "{}", stderr(&dry));
    let plan = String::from_utf8_lossy(&dry.stdout).into_owned();
    if plan.contains("qbench fetch minilm") {
        eprintln!(
            "SKIPPED minilm_quick_sweep_scores_fp32_and_dynamic_int8_by_cosine_and_probe: \
             the MiniLM weights or the Rotten Tomatoes corpus are not fetched; run `qbench fetch minilm`"
        );
        return;
    }
    let dir = temp_dir("minilm-sweep");
    let out = dir.join("run");
    let o = qbench(&[
        "sweep",
        "--quick",
        "--models",
        "minilm",
        "--methods",
        "fp32,dynamic,static",
        "--backends",
        "vnni",
        "--batch",
        "1",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "sweep failed: {}", stderr(&o));
    let r = Results::read(&out.join("results.json")).expect("results.json validates");
    let cell = |m: Method| r.cells.iter().find(|c| c.method == m).unwrap();

    let fp32 = cell(Method::Fp32);
    assert_eq!(fp32.state, State::Measured, "{:?}", fp32.reason);
    let acc = fp32.accuracy.as_ref().unwrap();
    assert_eq!(acc.metric, "probe_accuracy");
    // Sentiment from a linear probe on these embeddings is far above chance.
    assert!(acc.value > 0.6, "fp32 probe accuracy {}", acc.value);
    assert_eq!(fp32.embedding.as_ref().unwrap().cosine_worst, 1.0);

    let dy = cell(Method::Dynamic);
    assert_eq!(dy.state, State::Measured, "{:?}", dy.reason);
    assert_eq!(dy.kernel.as_deref().map(|k| !k.is_empty()), Some(true));
    let e = dy.embedding.as_ref().unwrap();
    assert_eq!(e.act_scales.as_deref(), Some("per_token"));
    assert!(
        e.cosine_mean >= 0.99,
        "per-token mean cosine {}",
        e.cosine_mean
    );
    assert!(e.cosine_worst > 0.9 && e.cosine_worst <= e.cosine_mean);
    let pt = e
        .per_tensor
        .as_ref()
        .expect("the per-tensor variant beside it");
    assert!(pt.cosine_mean > 0.9 && pt.cosine_mean < 1.0);
    let a = dy.accuracy.as_ref().unwrap();
    assert_eq!(a.fp32, acc.value);
    assert!(a.drop_pp.abs() <= 5.0, "probe drop {} pp", a.drop_pp);
    assert!(dy.size_ratio.unwrap() < 0.8, "{:?}", dy.size_ratio);
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
