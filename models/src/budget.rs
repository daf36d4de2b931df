//! The memory budget: one limit on the bytes a run may allocate for one tensor and for
//! the constants of a plan, and the one checked size computation every tensor
//! allocation sized by a file goes through ([`check_shape`]).
//!
//! The limit is, in order: what [`MemoryBudget::set_global`] set (the harness's
//! `--max-memory`), else `QBENCH_MAX_MEMORY` (bytes, or with a suffix: `512M`, `8G`,
//! binary units), else half the machine's memory (the smaller of `/proc/meminfo`'s
//! `MemTotal` and the cgroup's `memory.max`), else [`FALLBACK_BYTES`]. Half, because a
//! run holds a tensor's inputs and output at once; `MemTotal` rather than `MemAvailable`
//! so the same file passes or fails the same way whatever else the machine is doing.
//!
//! Checks happen before the allocation they guard: a crafted 31 KB file that asks
//! `ConstantOfShape` for 16 GiB is refused by arithmetic, never by the allocator
//! aborting.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use crate::error::{ModelError, Result};

/// The environment variable that overrides the default budget.
pub const ENV: &str = "QBENCH_MAX_MEMORY";

/// The budget when the machine's memory cannot be read.
pub const FALLBACK_BYTES: u64 = 4 << 30;

/// A limit in bytes on what a run may allocate for tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryBudget {
    bytes: u64,
    /// Where the limit came from, for error messages (so a user knows what to change).
    origin: Origin,
}

/// Where a [`MemoryBudget`]'s limit came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// [`MemoryBudget::set_global`] or [`MemoryBudget::bytes`] (`--max-memory`).
    Set,
    /// `QBENCH_MAX_MEMORY`.
    Env,
    /// Half the machine's memory.
    Machine,
    /// [`FALLBACK_BYTES`]: the machine's memory could not be read.
    Fallback,
}

/// The limit [`MemoryBudget::set_global`] set; 0 = not set.
static SET: AtomicU64 = AtomicU64::new(0);
/// The default (environment or machine), computed once; an unparsable
/// `QBENCH_MAX_MEMORY` is kept as its error so every check reports it.
static DEFAULT: OnceLock<std::result::Result<MemoryBudget, String>> = OnceLock::new();

impl MemoryBudget {
    /// A budget of `bytes` (what `--max-memory` gives).
    pub fn bytes(bytes: u64) -> MemoryBudget {
        MemoryBudget {
            bytes,
            origin: Origin::Set,
        }
    }

    pub fn limit(&self) -> u64 {
        self.bytes
    }

    pub fn origin(&self) -> Origin {
        self.origin
    }

    /// Half the machine's memory, or [`FALLBACK_BYTES`] if it cannot be read.
    pub fn machine_default() -> MemoryBudget {
        let total = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|s| meminfo_total(&s));
        let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok());
        match (total, cgroup) {
            (None, None) => MemoryBudget {
                bytes: FALLBACK_BYTES,
                origin: Origin::Fallback,
            },
            (t, c) => MemoryBudget {
                bytes: t.unwrap_or(u64::MAX).min(c.unwrap_or(u64::MAX)) / 2,
                origin: Origin::Machine,
            },
        }
    }

    /// `QBENCH_MAX_MEMORY` when set (an error naming the variable when it does not
    /// parse), else [`MemoryBudget::machine_default`].
    pub fn from_env() -> Result<MemoryBudget> {
        match std::env::var(ENV) {
            Ok(v) => parse_size(&v)
                .map(|bytes| MemoryBudget {
                    bytes,
                    origin: Origin::Env,
                })
                .map_err(|msg| ModelError::Budget(format!("{ENV}={v:?}: {msg}"))),
            Err(std::env::VarError::NotPresent) => Ok(MemoryBudget::machine_default()),
            Err(std::env::VarError::NotUnicode(_)) => {
                Err(ModelError::Budget(format!("{ENV} is not valid UTF-8")))
            }
        }
    }

    /// Makes `self` the budget of every later check in this process (the harness calls
    /// this for `--max-memory`). A limit of 0 is taken as 1 byte: nothing fits.
    pub fn set_global(self) {
        SET.store(self.bytes.max(1), Ordering::Relaxed);
    }

    /// The budget checks use: what [`MemoryBudget::set_global`] set, else
    /// [`MemoryBudget::from_env`] (read once).
    pub fn global() -> Result<MemoryBudget> {
        match SET.load(Ordering::Relaxed) {
            0 => DEFAULT
                .get_or_init(|| MemoryBudget::from_env().map_err(|e| e.to_string()))
                .clone()
                .map_err(ModelError::Budget),
            bytes => Ok(MemoryBudget::bytes(bytes)),
        }
    }

    /// An error when `bytes` for `what` exceed the limit.
    pub fn check(&self, what: &dyn std::fmt::Display, bytes: u64) -> Result<()> {
        if bytes > self.bytes {
            return Err(ModelError::Budget(format!(
                "{what} needs {bytes} bytes ({}), over the memory budget of {} bytes ({}, {})",
                human(bytes),
                self.bytes,
                human(self.bytes),
                match self.origin {
                    Origin::Set => "set by --max-memory",
                    Origin::Env => "set by QBENCH_MAX_MEMORY",
                    Origin::Machine => "half the machine's memory; raise with QBENCH_MAX_MEMORY",
                    Origin::Fallback => "the fallback; raise with QBENCH_MAX_MEMORY",
                }
            )));
        }
        Ok(())
    }
}

/// The element count of `shape`, checked: an error when it overflows `usize` or when
/// `elem_bytes` per element exceed the global budget. `what` names the tensor in errors.
/// Every allocation sized from a file's dims goes through this.
pub fn check_shape(
    what: &dyn std::fmt::Display,
    shape: &[usize],
    elem_bytes: usize,
) -> Result<usize> {
    // Walks over a tensor (broadcasts, transposes, reductions) cost elements × rank: a
    // 100 KB file declaring rank 65,536 over a few thousand elements hung the executor
    // for minutes while every byte count was in budget.
    if shape.len() > MAX_RANK {
        return Err(ModelError::Budget(format!(
            "{what}: rank {} is over the {MAX_RANK} dimensions qbench supports",
            shape.len()
        )));
    }
    let n = numel(shape).ok_or_else(|| {
        ModelError::Budget(format!(
            "{what}: shape {shape:?} has more elements than this machine can address"
        ))
    })?;
    let bytes = (n as u64).checked_mul(elem_bytes as u64).ok_or_else(|| {
        ModelError::Budget(format!(
            "{what}: shape {shape:?} has more bytes than this machine can address"
        ))
    })?;
    MemoryBudget::global()?.check(&format_args!("{what} of shape {shape:?}"), bytes)?;
    Ok(n)
}

/// The most dimensions a tensor may have (ONNX models use at most 6 or so).
pub const MAX_RANK: usize = 32;

/// The product of `shape`, or `None` when the product of its non-zero dims overflows.
///
/// Zero dims are skipped in the overflow test on purpose: `[2^32, 0, 2^32]` holds no
/// elements, but the ops' sub-products (`shape[a..]` for Flatten, rows × columns for a
/// GEMM) would still wrap. Refusing it here means no product of any dims of a tensor
/// can overflow, which is what lets the op bodies multiply dims unchecked.
pub fn numel(shape: &[usize]) -> Option<usize> {
    let nonzero = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d.max(1)))?;
    Some(if shape.contains(&0) { 0 } else { nonzero })
}

/// Parses a byte count: digits with an optional binary suffix `K`, `M`, `G`, `T`
/// (optionally followed by `B` or `iB`, any case): `1073741824`, `512M`, `8G`, `8GiB`.
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, suffix) = t.split_at(digits);
    if num.is_empty() {
        return Err("expected a byte count such as 8G, 512M or 1073741824".into());
    }
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{num:?} is not a byte count"))?;
    let shift = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        other => return Err(format!("unknown unit {other:?} (use K, M, G or T)")),
    };
    if n == 0 {
        return Err("a budget of 0 bytes allows nothing".into());
    }
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{t} does not fit in 64 bits"))
}

/// `MemTotal` from `/proc/meminfo` text, in bytes.
fn meminfo_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// `bytes` in the largest binary unit that keeps it ≥ 1, for messages.
fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_suffixes_and_bad_ones_are_errors() {
        assert_eq!(parse_size("1073741824"), Ok(1 << 30));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("8G"), Ok(8 << 30));
        assert_eq!(parse_size("8gib"), Ok(8 << 30));
        assert_eq!(parse_size(" 2T "), Ok(2 << 40));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        for bad in ["", "G", "8X", "-1", "1.5G", "0", "99999999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn meminfo_total_is_read_in_bytes() {
        let text = "MemTotal:       16318844 kB\nMemFree:  1 kB\n";
        assert_eq!(meminfo_total(text), Some(16318844 * 1024));
        assert_eq!(meminfo_total("MemFree: 1 kB\n"), None);
    }

    #[test]
    fn the_check_names_what_the_size_and_the_limit() {
        let b = MemoryBudget::bytes(1000);
        assert!(b.check(&"t", 1000).is_ok());
        let e = b.check(&"tensor \"t\"", 1001).unwrap_err().to_string();
        assert!(
            e.contains("tensor \"t\"") && e.contains("1001 bytes") && e.contains("1000 bytes"),
            "{e}"
        );
        assert_eq!(numel(&[1 << 32, 1 << 32]), None);
        assert_eq!(numel(&[]), Some(1));
        assert_eq!(numel(&[1 << 32, 0, 1 << 32]), None);
        assert_eq!(numel(&[1 << 20, 0, 1 << 20]), Some(0));
    }

    #[test]
    fn the_machine_default_is_positive() {
        assert!(MemoryBudget::machine_default().limit() > 0);
    }
}
