//! `qbench train` and the trained zoo models end to end: a `--quick` training of either
//! architecture writes a valid model directory whose model learned something (held-out
//! accuracy well above chance, a falling loss), the committed trained models
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

/// The training loss of each epoch line (`  epoch   1/2  loss 1.8220  ...`).
fn epoch_losses(out: &str) -> Vec<f64> {
    out.lines()
        .filter(|l| l.trim_start().starts_with("epoch "))
        .map(|l| {
            l.split("loss ")
                .nth(1)
                .and_then(|s| s.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no loss in {l:?}"))
        })
        .collect()
}

#[test]
fn quick_resnet_fashion_training_learns() {
    // Named as the zoo model, so the command validates the manifest as the zoo loads it.
    let dir: PathBuf = std::env::temp_dir()
        .join(format!("qbench-train-rf-{}", std::process::id()))
        .join("resnet-fashion");
    let _ = std::fs::remove_dir_all(&dir);
    // Two epochs on 2,000 images (about 7 s of training in the dev profile).
    let out = qbench(&[
        "train",
        "resnet-fashion",
        "--quick",
        "--epochs",
        "2",
        "--seed",
        "3",
        "--out",
        dir.to_str().unwrap(),
    ]);
    let (o, e) = text(&out);
    assert!(out.status.success(), "{o}{e}");
    let losses = epoch_losses(&o);
    assert_eq!(losses.len(), 2, "{o}");
    // Untrained, the loss is ln 10 = 2.30; it must fall, and clearly, in the second epoch.
    assert!(
        losses[0] < 2.3 && losses[1] < 0.8 * losses[0],
        "{losses:?}: {o}"
    );
    // Held-out: the first 1,000 test images, never trained on. Chance is 10 %.
    let line = o
        .lines()
        .find(|l| l.contains("test top-1"))
        .expect("a test line");
    let pct: f64 = line
        .split("test top-1 ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!(pct > 40.0, "{line}");
    assert!(dir.join("model.onnx").is_file() && dir.join("manifest.toml").is_file());
    let _ = std::fs::remove_dir_all(dir.parent().unwrap());
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
