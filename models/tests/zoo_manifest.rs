//! Zoo manifests: the real zoo lists and validates, and each kind of bad manifest fails
//! with the file and the key named.

use std::fs;
use std::path::{Path, PathBuf};

use qbench_models::data::{DatasetKind, Split};
use qbench_models::zoo::{
    self, list, load_entry, Dim, Layout, Metric, Purpose, ZooError, MANIFEST_FILE,
};

const GOOD: &str = r#"
name = "m"
description = "a test model"
license = "MIT"
file = "model.onnx"
purpose = "accuracy"

[provenance]
source = "somewhere"
obtained = "somehow"

[input]
name = "input"
shape = ["N", 1, 28, 28]
dtype = "f32"
layout = "NCHW"

[preprocessing]
scale = 255.0
mean = [0.5]
std = [0.25]

[eval]
dataset = "fashion-mnist"
split = "test"
metric = "top1"

[eval.fp32]
value = 91.5
command = "qbench eval m"
date = "2026-01-02"
"#;

/// A scratch zoo root unique to this process and `tag`.
fn scratch_root(tag: &str) -> PathBuf {
    let root = std::env::temp_dir().join(format!("qbench-zoo-test-{}-{tag}", std::process::id()));
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(&root).unwrap();
    root
}

/// Writes `<root>/m/manifest.toml` with `text` and an empty model file; returns the dir.
fn write_model(root: &Path, text: &str) -> PathBuf {
    let dir = root.join("m");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(MANIFEST_FILE), text).unwrap();
    fs::write(dir.join("model.onnx"), b"").unwrap();
    dir
}

/// Loads `text` as a manifest in a fresh directory and returns the error message.
fn error_for(tag: &str, text: &str) -> (ZooError, String) {
    let root = scratch_root(tag);
    let dir = write_model(&root, text);
    let err = load_entry(&dir).expect_err("manifest should be rejected");
    let msg = err.to_string();
    let path = dir.join(MANIFEST_FILE).display().to_string();
    assert!(msg.contains(&path), "error does not name {path}: {msg}");
    (err, msg)
}

#[test]
fn the_real_zoo_lists_digit_cnn() {
    let entries = list(&zoo::zoo_dir()).unwrap();
    let digit = entries
        .iter()
        .find(|e| e.manifest.name == "digit-cnn")
        .expect("digit-cnn is in the zoo");
    let m = &digit.manifest;
    assert_eq!(m.purpose, Purpose::Accuracy);
    assert_eq!(m.license, "MIT");
    assert!(digit.model_path().is_file());
    assert_eq!(m.input.name, "input");
    assert_eq!(m.input.layout, Layout::Nchw);
    assert_eq!(m.input.shape[0], Dim::Symbolic("N".into()));
    assert_eq!(m.input.concrete_shape(32), [32, 1, 28, 28]);
    let pre = m.preprocessing.as_ref().unwrap();
    // The manifest's normalisation is the dataset loader's.
    let norm = DatasetKind::Mnist.normalization();
    assert_eq!(
        (pre.scale, pre.mean[0], pre.std[0]),
        (255.0, norm.mean, norm.std)
    );
    let eval = m.eval.as_ref().unwrap();
    assert_eq!(
        (eval.dataset, eval.split, eval.metric),
        (DatasetKind::Mnist, Split::Test, Metric::Top1)
    );
    assert_eq!(eval.fp32.as_ref().unwrap().value, 99.06);
    // Listing is sorted and every entry is valid.
    let names: Vec<_> = entries.iter().map(|e| e.manifest.name.clone()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
}

#[test]
fn a_good_manifest_loads_and_round_trips() {
    let root = scratch_root("good");
    write_model(&root, GOOD);
    // A directory without a manifest (shared assets) is skipped, not an error.
    fs::create_dir_all(root.join("assets")).unwrap();
    let entries = list(&root).unwrap();
    assert_eq!(entries.len(), 1);
    let m = &entries[0].manifest;
    assert_eq!(m.name, "m");
    assert_eq!(m.eval.as_ref().unwrap().dataset, DatasetKind::FashionMnist);
    let text = toml::to_string(m).unwrap();
    assert_eq!(&zoo::parse_manifest(&text, Path::new("x")).unwrap(), m);
}

#[test]
fn unknown_keys_are_rejected_with_key_and_file() {
    let (err, msg) = error_for(
        "unknown-top",
        &GOOD.replace("purpose =", "colour = \"red\"\npurpose ="),
    );
    assert!(matches!(err, ZooError::Parse { .. }), "{msg}");
    assert!(msg.contains("colour"), "{msg}");

    let (_, msg) = error_for(
        "unknown-nested",
        &GOOD.replace("std = [0.25]", "std = [0.25]\nstdev = [1.0]"),
    );
    assert!(msg.contains("stdev"), "{msg}");

    let (_, msg) = error_for(
        "misspelt-table",
        &GOOD.replace("[preprocessing]", "[prepocessing]"),
    );
    assert!(msg.contains("prepocessing"), "{msg}");
}

#[test]
fn missing_keys_and_bad_values_are_named() {
    let (_, msg) = error_for("no-license", &GOOD.replace("license = \"MIT\"\n", ""));
    assert!(msg.contains("license"), "{msg}");
    let (_, msg) = error_for(
        "bad-dataset",
        &GOOD.replace("\"fashion-mnist\"", "\"cifar10\""),
    );
    assert!(msg.contains("cifar10"), "{msg}");
    let (_, msg) = error_for("bad-purpose", &GOOD.replace("\"accuracy\"", "\"vibes\""));
    assert!(msg.contains("vibes"), "{msg}");
}

#[test]
fn missing_model_file_is_named() {
    let root = scratch_root("missing-file");
    let dir = write_model(&root, &GOOD.replace("model.onnx", "absent.onnx"));
    let err = load_entry(&dir).unwrap_err();
    assert!(matches!(err, ZooError::MissingFile { .. }), "{err}");
    assert!(err.to_string().contains("absent.onnx"), "{err}");
    assert!(err.to_string().contains(MANIFEST_FILE), "{err}");
    // And list() surfaces it rather than dropping the model.
    assert!(list(&root).is_err());
}

#[test]
fn semantic_errors_name_the_key() {
    let cases: &[(&str, String, &str)] = &[
        (
            "name",
            GOOD.replace("name = \"m\"", "name = \"other\""),
            "`name`",
        ),
        (
            "batch",
            GOOD.replace("[\"N\", 1, 28, 28]", "[1, 1, 28, 28]"),
            "`input.shape`",
        ),
        (
            "rank",
            GOOD.replace("[\"N\", 1, 28, 28]", "[\"N\", 784]"),
            "`input.shape`",
        ),
        (
            "zero",
            GOOD.replace("[\"N\", 1, 28, 28]", "[\"N\", 1, 0, 28]"),
            "`input.shape`",
        ),
        (
            "channels",
            GOOD.replace("mean = [0.5]", "mean = [0.5, 0.5]"),
            "`preprocessing`",
        ),
        (
            "std",
            GOOD.replace("std = [0.25]", "std = [0.0]"),
            "`preprocessing.std`",
        ),
        (
            "pct",
            GOOD.replace("value = 91.5", "value = 191.5"),
            "`eval.fp32.value`",
        ),
        (
            "date",
            GOOD.replace("2026-01-02", "02/01/2026"),
            "`eval.fp32.date`",
        ),
        (
            "sha",
            GOOD.replace(
                "obtained = \"somehow\"",
                "obtained = \"somehow\"\nsha256 = \"abc\"",
            ),
            "`provenance.sha256`",
        ),
        (
            "fp32",
            GOOD.replace(
                "[eval.fp32]\nvalue = 91.5\ncommand = \"qbench eval m\"\ndate = \"2026-01-02\"\n",
                "",
            ),
            "`eval.fp32`",
        ),
        (
            "abs",
            GOOD.replace("file = \"model.onnx\"", "file = \"/model.onnx\""),
            "`file`",
        ),
    ];
    for (tag, text, key) in cases {
        let (err, msg) = error_for(tag, text);
        assert!(matches!(err, ZooError::Invalid { .. }), "{tag}: {msg}");
        assert!(msg.contains(key), "{tag}: expected {key} in {msg}");
    }
}

#[test]
fn speed_only_models_need_no_eval() {
    let text = GOOD
        .replace("\"accuracy\"", "\"speed-only\"")
        .split("[eval]")
        .next()
        .unwrap()
        .to_string();
    let root = scratch_root("speed");
    let dir = write_model(&root, &text);
    let entry = load_entry(&dir).unwrap();
    assert_eq!(entry.manifest.purpose, Purpose::SpeedOnly);
    assert!(entry.manifest.eval.is_none());
    // But accuracy models do.
    let (_, msg) = error_for(
        "acc-no-eval",
        &text.replace("\"speed-only\"", "\"accuracy\""),
    );
    assert!(msg.contains("`eval`"), "{msg}");
}

#[test]
fn speed_only_models_may_fix_the_batch_accuracy_models_may_not() {
    let speed = GOOD
        .replace("\"accuracy\"", "\"speed-only\"")
        .replace("[\"N\", 1, 28, 28]", "[1, 1, 28, 28]");
    let root = scratch_root("fixed-speed");
    let dir = write_model(&root, &speed);
    let entry = load_entry(&dir).unwrap();
    assert_eq!(entry.manifest.input.shape[0], Dim::Fixed(1));
    // The fixed batch is the file's: asking for another batch does not change it.
    assert_eq!(entry.manifest.input.concrete_shape(8), [1, 1, 28, 28]);
    // A zero batch is still refused, and an accuracy model must keep a free batch
    // (the "batch" case of semantic_errors_name_the_key).
    let (_, msg) = error_for(
        "fixed-zero",
        &speed.replace("[1, 1, 28, 28]", "[0, 1, 28, 28]"),
    );
    assert!(
        msg.contains("`input.shape`") && msg.contains("speed-only"),
        "{msg}"
    );
}

#[test]
fn the_real_zoo_has_resnet50_for_speed_only_at_batch_1() {
    let entries = list(&zoo::zoo_dir()).unwrap();
    let r = entries
        .iter()
        .find(|e| e.manifest.name == "resnet50")
        .expect("resnet50 is in the zoo");
    assert_eq!(r.manifest.purpose, Purpose::SpeedOnly);
    assert!(
        r.manifest.eval.is_none(),
        "resnet50 has constant weights: no accuracy"
    );
    assert_eq!(r.manifest.input.concrete_shape(1), [1, 3, 224, 224]);
    assert!(r.model_path().is_file());
}
