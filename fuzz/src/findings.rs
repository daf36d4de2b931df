//! Findings: saving a failing input, the known-failing list, and grouping by reason.
//!
//! A failing input is saved as `<dir>/<format>/crash-<hash>` (FNV-1a 64 of its bytes, so
//! the same input found twice is one file) with `crash-<hash>.txt` beside it: one line
//! with the reason, the run seed and case, and the mutations that made it.
//!
//! The known-failing list (`fuzz/regressions/known-failing.txt`) names inputs that fail
//! today, one `<format>/crash-<hash>` per line (anything after it is a comment, as are
//! `#` lines). A listed finding does not fail a run; an unlisted one does. The lead
//! removes a line when the fix for it lands.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use crate::format::Format;

/// One failing case.
#[derive(Clone, Debug)]
pub struct Finding {
    pub format: Format,
    pub case: u64,
    pub reason: String,
    /// `<format>/crash-<hash>`: the key in the known-failing list.
    pub key: String,
    /// Where the input was saved (`None` if saving failed).
    pub saved: Option<PathBuf>,
    pub listed: bool,
}

/// FNV-1a, 64 bits: stable forever and dependency-free (a name, not a security hash).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The corpus key of an input: `<format>/crash-<hash>`.
pub fn key(format: Format, bytes: &[u8]) -> String {
    format!("{}/crash-{:016x}", format.name(), fnv1a(bytes))
}

/// The known-failing list: keys of inputs expected to fail.
#[derive(Clone, Debug, Default)]
pub struct Known(HashSet<String>);

impl Known {
    /// Reads the list; a missing file is an empty list.
    pub fn read(path: &Path) -> std::io::Result<Known> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(Known::parse(&text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Known::default()),
            Err(e) => Err(e),
        }
    }

    pub fn parse(text: &str) -> Known {
        Known(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .filter_map(|l| l.split_whitespace().next())
                .map(str::to_string)
                .collect(),
        )
    }

    pub fn contains(&self, key: &str) -> bool {
        self.0.contains(key)
    }
}

/// Saves `bytes` and its reason line under `dir`; returns the input's path.
pub fn save(dir: &Path, key: &str, bytes: &[u8], line: &str) -> std::io::Result<PathBuf> {
    let path = dir.join(key);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    if !path.exists() {
        std::fs::write(&path, bytes)?;
        std::fs::write(path.with_extension("txt"), format!("{line}\n"))?;
    }
    Ok(path)
}

/// A reason with its numbers and quoted names blanked: findings of one class share it.
pub fn class(reason: &str) -> String {
    let mut out = String::new();
    let mut in_quote = false;
    let mut last_hash = false;
    for c in reason.chars() {
        if c == '"' {
            in_quote = !in_quote;
            if in_quote {
                out.push_str("\"…\"");
            }
            continue;
        }
        if in_quote {
            continue;
        }
        if c.is_ascii_digit() {
            if !last_hash {
                out.push('#');
            }
            last_hash = true;
        } else {
            last_hash = false;
            out.push(c);
        }
    }
    out
}

/// Findings grouped by class: (class, count, one example).
pub fn grouped(findings: &[Finding]) -> Vec<(String, usize, &Finding)> {
    let mut groups: BTreeMap<String, (usize, &Finding)> = BTreeMap::new();
    for f in findings {
        groups.entry(class(&f.reason)).or_insert((0, f)).0 += 1;
    }
    groups.into_iter().map(|(c, (n, f))| (c, n, f)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_blank_numbers_and_names() {
        assert_eq!(
            class("panic: index out of bounds: the len is 3 but the index is 17 at models/src/x.rs:12"),
            "panic: index out of bounds: the len is # but the index is # at models/src/x.rs:#"
        );
        assert_eq!(class("node \"conv1\" size 12"), "node \"…\" size #");
    }

    #[test]
    fn the_known_list_takes_the_first_word_of_each_line() {
        let k = Known::parse("# comment\nonnx/crash-00ff  panics\n\n  idx/crash-01\n");
        assert!(k.contains("onnx/crash-00ff"));
        assert!(k.contains("idx/crash-01"));
        assert!(!k.contains("panics"));
    }
}
