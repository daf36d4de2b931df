//! The sweep's tract columns: a quick digit-cnn sweep fills `tract` in every measured
//! cell, and the fp32 cell's agreement equals a count made here independently (tract and
//! our executor on the same 256 test images).

mod common;

use common::{qbench, stderr, temp_dir};
use qbench::results::{Method, Results, State};
use qbench_models::data::{Dataset, DatasetKind, Split};
use qbench_models::exec::{Executor, Options};
use qbench_models::onnx::crosscheck::run_tract;
use qbench_models::tensor::Tensor;

#[test]
fn a_quick_sweep_records_tract_latency_and_agreement() {
    let dir = temp_dir("sweep-tract");
    let o = qbench(&[
        "sweep",
        "--models",
        "digit-cnn",
        "--methods",
        "fp32,fp16,dynamic,static",
        "--backends",
        "vnni",
        "--batch",
        "1",
        "--quick",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r = Results::read(&dir.join("results.json")).unwrap();
    let measured: Vec<_> = r
        .cells
        .iter()
        .filter(|c| c.state == State::Measured)
        .collect();
    assert_eq!(measured.len(), 4);
    for c in &measured {
        let t = c
            .tract
            .as_ref()
            .unwrap_or_else(|| panic!("{:?}: no tract", c.method));
        assert!(t.fp32_ms.is_some_and(|v| v > 0.0), "{t:?}");
        assert!(t.ours_ms.is_some_and(|v| v > 0.0), "{t:?}");
        assert_eq!(t.samples, Some(256), "{t:?}");
        if c.method == Method::Fp32 {
            assert!(t.int8_ms.is_none() && t.agreement_fp32.is_none(), "{t:?}");
        } else {
            assert!(t.int8_ms.is_some_and(|v| v > 0.0), "{t:?}");
            // The exports agree with our quantized model (tests/export_zoo.rs in the
            // quantizers crate: within a fraction of an LSB on digit-cnn), and stay close
            // to fp32.
            assert!(
                t.agreement.is_some_and(|a| a >= 0.99),
                "{:?}: {t:?}",
                c.method
            );
            assert!(t.agreement_fp32.is_some_and(|a| a >= 0.97), "{t:?}");
        }
    }

    // The fp32 cell's agreement, counted independently.
    let d = Dataset::load(DatasetKind::Mnist, Split::Test)
        .unwrap()
        .take(256);
    let x = Tensor::new(vec![256, 1, 28, 28], d.images().to_vec()).unwrap();
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/zoo/digit-cnn/model.onnx");
    let theirs = run_tract(&path, std::slice::from_ref(&x)).unwrap()[0]
        .argmax_rows()
        .unwrap();
    let g = qbench_models::onnx::load(&path).unwrap();
    let ours = Executor::new(&g, Options { threads: 1 })
        .unwrap()
        .run(std::slice::from_ref(&x))
        .unwrap()[0]
        .argmax_rows()
        .unwrap();
    let same = theirs.iter().zip(&ours).filter(|(a, b)| a == b).count() as f64 / 256.0;
    let fp32 = measured.iter().find(|c| c.method == Method::Fp32).unwrap();
    assert_eq!(fp32.tract.as_ref().unwrap().agreement, Some(same));

    // The reports carry the columns.
    let csv = std::fs::read_to_string(dir.join("results.csv")).unwrap();
    assert!(csv.lines().next().unwrap().contains("tract_int8_ms"));
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(md.contains("tract (ms)") && md.contains("static "), "{md}");
}
