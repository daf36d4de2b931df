//! A quantized file names the model it was made from (`recipe.source`) canonically: a zoo
//! name, or the absolute path of the ONNX file with its sha256. Commands that go back to
//! the source (eval, crosscheck) read only that very file: a crafted path, a relative one,
//! or a source changed since quantizing is refused, naming the quantized file and the key.

mod common;

use common::{qbench, stderr, temp_dir};
use qbench_quantizers::save;
use std::path::Path;

fn quantize(src: &str, out: &Path) {
    let o = qbench(&[
        "quantize",
        src,
        "--method",
        "dynamic",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
}

fn eval_refused(file: &Path, needles: &[&str]) {
    let o = qbench(&["eval", file.to_str().unwrap(), "--limit", "10"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&file.display().to_string()),
        "names the file: {err}"
    );
    for n in needles {
        assert!(err.contains(n), "{n:?} missing from: {err}");
    }
}

#[test]
fn the_source_is_canonical_and_checked_by_its_hash() {
    let dir = temp_dir("quantized-source");
    // A zoo model: its name, and its file's hash.
    let zoo = dir.join("zoo.safetensors");
    quantize("mlp-mnist", &zoo);
    let m = save::load(&zoo).unwrap();
    assert_eq!(m.recipe.source, "mlp-mnist");
    assert_eq!(m.recipe.source_sha256.as_ref().map(String::len), Some(64));
    let o = qbench(&["eval", zoo.to_str().unwrap(), "--limit", "10"]);
    assert!(o.status.success(), "{}", stderr(&o));

    // A bare file is recorded by its canonical absolute path.
    let onnx = dir.join("mlp.onnx");
    let zoo_onnx = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/zoo/mlp-mnist/model.onnx");
    std::fs::copy(&zoo_onnx, &onnx).unwrap();
    let file = dir.join("file.safetensors");
    quantize(onnx.to_str().unwrap(), &file);
    let m = save::load(&file).unwrap();
    assert!(
        Path::new(&m.recipe.source).is_absolute(),
        "{}",
        m.recipe.source
    );

    // Crafted sources are refused before anything is read from them.
    for (name, source) in [
        ("passwd", "../../etc/passwd"),
        ("relative", "mlp.onnx"),
        ("not-onnx", "/etc/passwd"),
    ] {
        let mut bad = m.clone();
        bad.recipe.source = source.into();
        let path = dir.join(format!("{name}.safetensors"));
        save::save(&bad, &path).unwrap();
        eval_refused(&path, &["recipe.source", source]);
    }
    // Another zoo model's name does not match the recorded hash.
    let mut other = m.clone();
    other.recipe.source = "digit-cnn".into();
    let path = dir.join("other.safetensors");
    save::save(&other, &path).unwrap();
    eval_refused(&path, &["has changed since it was quantized"]);

    // The source file changed after quantizing: refused.
    let mut bytes = std::fs::read(&onnx).unwrap();
    bytes.push(0);
    std::fs::write(&onnx, bytes).unwrap();
    eval_refused(&file, &["has changed since it was quantized"]);
}
