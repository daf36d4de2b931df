//! `--replay DIR`: runs every saved input of a corpus again, each in its own child.
//!
//! `DIR/<format>/<file>` is an input of that format (the `.txt` reason files beside them
//! are skipped). An input that fails and is not in the known-failing list is a
//! regression; a listed input that passes is reported so its line can be removed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::findings::Known;
use crate::format::Format;
use crate::supervise::{self, Outcome};

/// One replayed input.
pub struct Replayed {
    /// `<format>/<file name>`, the known-failing key.
    pub key: String,
    pub path: PathBuf,
    /// `None`: passed.
    pub failure: Option<String>,
    pub listed: bool,
}

/// The inputs under `dir`, sorted, with their formats.
fn inputs(dir: &Path) -> std::io::Result<Vec<(Format, PathBuf)>> {
    let mut out = Vec::new();
    for f in Format::ALL.into_iter().chain([Format::Selftest]) {
        let sub = dir.join(f.name());
        if !sub.is_dir() {
            continue;
        }
        for e in std::fs::read_dir(&sub)? {
            let p = e?.path();
            if p.is_file() && p.extension().is_none_or(|x| x != "txt") {
                out.push((f, p));
            }
        }
    }
    out.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(out)
}

/// Replays every input under `dir`.
pub fn replay(
    dir: &Path,
    known: &Known,
    budget: usize,
    timeout: Duration,
) -> std::io::Result<Vec<Replayed>> {
    let exe = std::env::current_exe()?;
    let mut out = Vec::new();
    for (format, path) in inputs(dir)? {
        let mut cmd = Command::new(&exe);
        cmd.args([
            "--child",
            "--format",
            format.name(),
            "--budget",
            &budget.to_string(),
        ])
        .arg("--file")
        .arg(&path);
        let run = supervise::run(cmd, timeout, budget);
        let failure = match run.cases.into_iter().next() {
            Some((_, Outcome::Ok { .. })) => None,
            Some((_, Outcome::Failed(r))) => Some(r),
            None => Some("the child did not run the input".into()),
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let key = format!("{}/{name}", format.name());
        out.push(Replayed {
            listed: known.contains(&key),
            key,
            path,
            failure,
        });
    }
    Ok(out)
}
