//! A model whose process dies by a signal does not take the sweep with it: its open cells
//! are recorded failed with the signal, the other models are measured and the reports are
//! written; `--resume DIR` (no other flags) retries the crashed cells once, then keeps
//! them failed; a resume with another shard is refused.

mod common;

use common::{qbench, stderr, temp_dir};
use qbench::results::{Results, State};
use std::process::Command;

const GRID: &[&str] = &[
    "sweep",
    "--quick",
    "--models",
    "digit-cnn,mlp-mnist",
    "--methods",
    "fp32,dynamic",
    "--backends",
    "fbgemm",
    "--batch",
    "1",
];

/// `qbench ARGS` with the child of model `crash` dying by SIGSEGV.
fn qbench_crashing(args: &[&str], crash: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_qbench"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .env("QBENCH_SWEEP_CRASH_MODEL", crash)
        .output()
        .expect("qbench runs")
}

#[test]
fn a_crashing_model_fails_its_cells_with_the_signal_and_the_sweep_finishes() {
    let dir = temp_dir("sweep-crash");
    let out = dir.join("run");
    let out_s = out.to_str().unwrap();
    let o = qbench_crashing(&[GRID, &["--out", out_s]].concat(), "mlp-mnist");
    assert!(o.status.success(), "the sweep died: {}", stderr(&o));
    for f in ["results.json", "report.md", "report.html", "results.csv"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let path = out.join("results.json");
    let r = Results::read(&path).expect("the results validate");
    assert_eq!(r.cells.len(), 4);
    for c in &r.cells {
        if c.model == "mlp-mnist" {
            assert_eq!(c.state, State::Failed, "{}", c.key());
            let why = c.reason.as_deref().unwrap_or("");
            assert!(why.contains("signal 11 (SIGSEGV)"), "{why}");
            assert!(
                why.contains("crashing on purpose"),
                "the stderr tail: {why}"
            );
            assert_eq!(c.crashes, 1);
        } else {
            assert_eq!(c.state, State::Measured, "{}: {:?}", c.key(), c.reason);
            assert_eq!(c.crashes, 0);
        }
    }
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("SIGSEGV"), "the report names the signal");

    // `--resume DIR` alone: the directory's own config; the crashed cells run again (and
    // crash again), the measured ones are kept.
    let o = qbench_crashing(&["sweep", "--resume", out_s], "mlp-mnist");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("4 cells planned, 2 already done, 2 to run"),
        "{}",
        stderr(&o)
    );
    let again = Results::read(&path).unwrap();
    assert_eq!(again.runs.len(), 2);
    for c in again.cells.iter().filter(|c| c.model == "mlp-mnist") {
        assert_eq!(
            (c.state, c.crashes, c.run),
            (State::Failed, 2, 1),
            "{}",
            c.key()
        );
        assert!(
            c.reason.as_deref().unwrap_or("").contains("not retried"),
            "{:?}",
            c.reason
        );
    }
    for c in again.cells.iter().filter(|c| c.model == "digit-cnn") {
        assert_eq!(Some(c), r.cells.iter().find(|o| o.key() == c.key()));
    }

    // Twice crashed is final: a further resume has nothing to run.
    let o = qbench(&["sweep", "--resume", out_s]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("4 cells planned, 4 already done, 0 to run"),
        "{}",
        stderr(&o)
    );

    // The directory holds an unsharded sweep: resuming it as a shard is refused.
    let o = qbench(&["sweep", "--resume", out_s, "--shard", "0/2"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("differs from the directory's own"),
        "{}",
        stderr(&o)
    );
}
