//! Results files built through the schema types, and a runner for the `qbench` binary,
//! shared by the gate, compare, merge and schema tests.

#![allow(dead_code)] // each test binary uses its own subset

use qbench::results::{
    Accuracy, Backend, Cell, Kernels, Latency, Machine, Method, Results, Run, Shard, SweepConfig,
    SCHEMA,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn qbench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qbench"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("qbench runs")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A fresh directory per test (named by the test), removed when the test passes and
/// kept for inspection when it fails.
pub fn temp_dir(name: &str) -> TempDir {
    let dir = std::env::temp_dir().join(format!("qbench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

pub struct TempDir(PathBuf);

impl std::ops::Deref for TempDir {
    type Target = PathBuf;
    fn deref(&self) -> &PathBuf {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

pub fn config() -> SweepConfig {
    SweepConfig {
        models: vec!["digit-cnn".into(), "resnet50".into(), "mlp-mnist".into()],
        methods: vec![Method::Fp32, Method::Dynamic, Method::Static],
        backends: vec![Backend::Fbgemm, Backend::Qnnpack],
        batch: vec![1, 32],
        threads: vec![1],
        seed: 7,
        quick: true,
        eval_limit: Some(1000),
        calib_samples: 256,
        qat_epochs: 1,
        qat_train_samples: Some(1000),
        warmup_ms: 50,
        budget_ms: 500,
    }
}

pub fn machine(cpu: &str) -> Machine {
    Machine {
        cpu_model: cpu.into(),
        arch: "x86_64".into(),
        features: vec!["avx2".into(), "avx512vnni".into()],
        cores: 2,
        os: "linux".into(),
    }
}

pub fn run(cpu: &str, shard: Option<(u32, u32)>) -> Run {
    Run {
        shard: shard.map(|(index, count)| Shard { index, count }),
        machine: machine(cpu),
        kernels: Kernels {
            active: "avx512vnni".into(),
            detected: "avx512vnni".into(),
            knob: None,
        },
        started_at: "2026-11-27T01:00:00Z".into(),
        finished_at: Some("2026-11-27T01:10:00Z".into()),
    }
}

pub fn results(cells: Vec<Cell>) -> Results {
    Results {
        schema: SCHEMA.into(),
        qbench_version: "0.1.0".into(),
        git_commit: "abc123def456".into(),
        machine: Some(machine("AMD EPYC")),
        config: config(),
        seeds: BTreeMap::from([("calibration".to_owned(), 7)]),
        runs: vec![run("AMD EPYC", None)],
        cells,
    }
}

/// A fully measured cell: fp32 top-1 0.99, quantized `value`, size ratio, speedup,
/// latency median with a given relative spread.
pub fn measured(model: &str, method: Method, backend: Backend, batch: u32) -> Cell {
    let mut c = Cell::new(model, method, backend, batch, 1);
    c.kernel = Some("avx512vnni_gemm_u8s8i32_6x64".into());
    c.size_bytes = Some(26_000);
    c.size_ratio = Some(0.26);
    set_latency(&mut c, 2.0, 0.04);
    c.speedup_vs_fp32 = Some(3.0);
    set_accuracy(&mut c, 0.99, 0.988);
    c.agreement = Some(0.995);
    c
}

pub fn set_accuracy(c: &mut Cell, fp32: f64, value: f64) {
    c.accuracy = Some(Accuracy {
        metric: "top1".into(),
        value,
        fp32,
        drop_pp: (fp32 - value) * 100.0,
        relative: value / fp32,
        samples: 1000,
    });
}

/// Median `median` ms with p10/p90 placed so that (p90 − p10) / median = `spread`.
pub fn set_latency(c: &mut Cell, median: f64, spread: f64) {
    let half = median * spread / 2.0;
    c.latency_ms = Some(Latency {
        median,
        p10: median - half,
        p90: median + half,
        spread,
        samples: 100,
        throughput: f64::from(c.batch) / (median / 1e3),
    });
}

pub fn write(dir: &Path, name: &str, r: &Results) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, serde_json::to_string_pretty(r).unwrap()).unwrap();
    p
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}
