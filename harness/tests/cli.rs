//! The `qbench` binary end to end: what it prints and writes parses back, and bad
//! arguments fail fast with a message naming the flag.

use std::process::Command;

fn qbench(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_qbench"))
        .args(args)
        .output()
        .expect("qbench runs")
}

#[test]
fn machine_json_names_the_active_rung() {
    let out = qbench(&["machine", "--json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let active = v["kernels"]["active"].as_str().unwrap();
    let ladder = v["kernels"]["ladder"].as_array().unwrap();
    assert!(
        ladder
            .iter()
            .any(|r| r["rung"] == active && r["available"] == true),
        "{v}"
    );
    assert!(v["machine"]["cores"].as_u64().unwrap() >= 1);
}

#[test]
fn bench_gemm_json_rows_and_report_files() {
    let dir = std::env::temp_dir().join(format!("qbench-cli-{}", std::process::id()));
    let out = qbench(&[
        "bench-gemm",
        "--quick",
        "--json",
        "--shapes",
        "3x40x24",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(rows.iter().any(|r| r["impl"] == "fp32-gemm"));
    for r in &rows {
        assert_eq!(
            (
                r["op"].as_str(),
                r["m"].as_u64(),
                r["n"].as_u64(),
                r["k"].as_u64()
            ),
            (Some("gemm"), Some(3), Some(40), Some(24))
        );
        assert!(r["gops"].as_f64().unwrap() > 0.0 && r["median_ns"].as_f64().unwrap() > 0.0);
    }
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("bench-gemm.json")).unwrap())
            .unwrap();
    assert_eq!(file["schema"], "qbench.bench-gemm/1");
    assert_eq!(file["rows"].as_array().unwrap().len(), rows.len());
    assert!(std::fs::read_to_string(dir.join("bench-gemm.md"))
        .unwrap()
        .contains("| M x N x K"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bench_conv_json_uses_layer_ids() {
    let out = qbench(&[
        "bench-conv",
        "--quick",
        "--json",
        "--layers",
        "mobilenetv2/pw_project",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(rows
        .iter()
        .all(|r| r["op"] == "conv" && r["layer"] == "mobilenetv2/pw_project"));
    assert!(rows.iter().any(|r| r["impl"] == "fp32"));
}

#[test]
fn bad_arguments_fail_before_measuring() {
    let out = qbench(&["bench-gemm", "--shapes", "12x7"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--shapes"));
    let out = qbench(&["bench-conv", "--layers", "vgg16"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("valid:"));
}
