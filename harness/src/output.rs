//! Writing results: every file is written to a temporary sibling and renamed into place,
//! so a reader never sees half a report and an interrupted run never leaves one.

use anyhow::{Context, Result};
use serde::Serialize;
use std::path::Path;

/// Writes `bytes` to `path` atomically (temp file in the same directory + rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    qbench_models::atomic::write_atomic(path, bytes)
        .with_context(|| format!("writing {}", path.display()))
}

/// Serialises `value` as pretty JSON and writes it atomically.
pub fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    write_atomic(path, text.as_bytes())
}

/// What every report carries besides its rows: the machine, the kernels, the build.
#[derive(Serialize)]
pub struct Provenance {
    pub machine: crate::machine::Fingerprint,
    pub kernels: crate::machine::KernelReport,
    pub qbench_version: &'static str,
    pub git_commit: &'static str,
    pub threads: usize,
}

impl Provenance {
    pub fn detect() -> Provenance {
        Provenance {
            machine: crate::machine::Fingerprint::detect(),
            kernels: crate::machine::KernelReport::detect(),
            qbench_version: env!("CARGO_PKG_VERSION"),
            git_commit: env!("QBENCH_GIT_COMMIT"),
            threads: 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp_file() {
        let dir = std::env::temp_dir().join(format!("qbench-output-test-{}", std::process::id()));
        let path = dir.join("nested").join("r.json");
        write_json(&path, &serde_json::json!({"a": 1})).unwrap();
        write_json(&path, &serde_json::json!({"a": 2})).unwrap();
        let back: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(back["a"], 2);
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_path_in_a_file_is_an_error_naming_it() {
        let file = std::env::temp_dir().join(format!("qbench-output-file-{}", std::process::id()));
        std::fs::write(&file, b"x").unwrap();
        let err = write_atomic(&file.join("r.json"), b"{}").unwrap_err();
        assert!(
            format!("{err:#}").contains(&file.display().to_string()),
            "{err:#}"
        );
        std::fs::remove_file(&file).unwrap();
    }
}
