//! The machine fingerprint: CPU model, the ISA features qbench cares about, cores, and
//! the kernel ladder as this process resolved it. Every result row carries it, so a
//! number can always be traced to the machine and kernel that produced it.

use qbench_kernels::gemm::kernels_of;
use qbench_kernels::isa::{self, Rung};
use serde::Serialize;

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Fingerprint {
    pub cpu_model: String,
    pub arch: String,
    pub features: Vec<String>,
    pub cores: usize,
    pub os: String,
}

impl Fingerprint {
    pub fn detect() -> Fingerprint {
        Fingerprint {
            cpu_model: cpu_model().unwrap_or_else(|| "unknown".to_owned()),
            arch: std::env::consts::ARCH.to_owned(),
            features: features(),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            os: std::env::consts::OS.to_owned(),
        }
    }
}

/// One rung of the ladder as seen from here.
#[derive(Clone, Debug, Serialize)]
pub struct RungStatus {
    pub rung: String,
    pub available: bool,
    pub reason: Option<String>,
    pub kernels: Vec<String>,
}

/// The ladder and the knob, for `qbench machine`.
#[derive(Clone, Debug, Serialize)]
pub struct KernelReport {
    pub active: String,
    pub detected: String,
    pub knob: Option<String>,
    pub warning: Option<String>,
    pub ladder: Vec<RungStatus>,
}

impl KernelReport {
    pub fn detect() -> KernelReport {
        let selection = isa::selection();
        let ladder = isa::ladder()
            .iter()
            .map(|&rung: &Rung| RungStatus {
                rung: rung.name().to_owned(),
                available: rung.is_available(),
                reason: rung.unavailable_reason(),
                kernels: kernels_of(rung)
                    .into_iter()
                    .map(|k| k.name.to_owned())
                    .collect(),
            })
            .collect();
        KernelReport {
            active: selection.active.name().to_owned(),
            detected: selection.detected.name().to_owned(),
            knob: selection.requested.clone(),
            warning: selection.warning.clone(),
            ladder,
        }
    }
}

fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .find(|l| {
            l.starts_with("model name") || l.starts_with("Model") || l.starts_with("CPU part")
        })
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
}

#[cfg(target_arch = "x86_64")]
fn features() -> Vec<String> {
    let mut found = Vec::new();
    macro_rules! probe {
        ($($f:tt),*) => {$(
            if std::arch::is_x86_feature_detected!($f) {
                found.push($f.to_owned());
            }
        )*};
    }
    probe!(
        "sse4.2",
        "avx",
        "avx2",
        "fma",
        "f16c",
        "avx512f",
        "avx512bw",
        "avx512vl",
        "avx512vnni",
        "avx512bf16",
        "avxvnni"
    );
    found
}

#[cfg(target_arch = "aarch64")]
fn features() -> Vec<String> {
    let mut found = Vec::new();
    macro_rules! probe {
        ($($f:tt),*) => {$(
            if std::arch::is_aarch64_feature_detected!($f) {
                found.push($f.to_owned());
            }
        )*};
    }
    probe!("neon", "dotprod", "i8mm", "fp16", "sve", "sve2");
    found
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn features() -> Vec<String> {
    Vec::new()
}
