//! `qbench train` and the trained zoo models end to end: a `--quick` training writes a
//! valid model directory whose model learned something, the committed trained models
//! cross-check against tract, and bad requests fail cleanly naming the culprit.

use std::path::PathBuf;
use std::process::{Command, Output};

fn qbench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qbench"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("qbench runs")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn trained_zoo_models_crosscheck_against_tract_on_300_images() {
    for model in ["mlp-mnist", "resnet-fashion"] {
        let out = qbench(&["crosscheck", model, "--samples", "300", "--batch", "150"]);
        let (o, e) = text(&out);
        assert!(out.status.success(), "{model}: {o}{e}");
        assert!(
            o.contains("300 / 300 samples") && o.contains("PASS"),
            "{model}: {o}"
        );
    }
}

#[test]
fn quick_training_writes_a_model_that_learned() {
    let dir: PathBuf = std::env::temp_dir().join(format!("qbench-train-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = qbench(&[
        "train",
        "mlp-mnist",
        "--quick",
        "--seed",
        "3",
        "--out",
        dir.to_str().unwrap(),
    ]);
    let (o, e) = text(&out);
    assert!(out.status.success(), "{o}{e}");
    // One epoch on 2,000 images: well above chance (10 %) on 1,000 test images.
    let line = o
        .lines()
        .find(|l| l.contains("test top-1"))
        .expect("a test line");
    let pct: f64 = line
        .split("test top-1 ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(pct > 70.0, "{line}");
    let manifest = std::fs::read_to_string(dir.join("manifest.toml")).unwrap();
    assert!(
        manifest.contains("trained by qbench") && manifest.contains("--seed 3"),
        "{manifest}"
    );
    assert!(dir.join("model.onnx").is_file() && dir.join("README.md").is_file());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_train_requests_fail_cleanly() {
    let out = qbench(&["train", "digit-cnn"]);
    let (_, e) = text(&out);
    assert!(
        !out.status.success() && e.contains("digit-cnn") && e.contains("mlp-mnist"),
        "{e}"
    );
    assert!(!e.contains("panicked"), "{e}");
    // --quick without --out would overwrite the zoo model.
    let out = qbench(&["train", "mlp-mnist", "--quick"]);
    let (_, e) = text(&out);
    assert!(!out.status.success() && e.contains("--out"), "{e}");
    let out = qbench(&["train", "mlp-mnist", "--lr=0", "--out", "/tmp/x"]);
    let (_, e) = text(&out);
    assert!(!out.status.success() && e.contains("--lr"), "{e}");
}
