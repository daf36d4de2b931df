//! `qbench merge a.json b.json ... -o out.json`: joins the results files of a sharded
//! sweep into one. The inputs must come from the same build (qbench version and git
//! commit), the same resolved config and seeds, and hold disjoint cells; anything else
//! is refused with the files and the key or cell at fault. Runs are concatenated (a cell
//! keeps pointing at the run, and so the machine, that measured it), and the top-level
//! `machine` is the shards' common fingerprint, or null when they ran on different
//! machines. The output is validated and written atomically. Owns nothing else.

use crate::results::{CellKey, Results};
use anyhow::{bail, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Merges `inputs` (already read) in order; `names` are their paths, for messages.
pub fn merge(inputs: Vec<(PathBuf, Results)>) -> Result<Results> {
    let mut iter = inputs.into_iter();
    let Some((first_path, first)) = iter.next() else {
        bail!("merge needs at least one results file");
    };
    let mut merged = Results {
        runs: Vec::new(),
        cells: Vec::new(),
        ..first.clone()
    };
    let mut owner: BTreeMap<CellKey, PathBuf> = BTreeMap::new();
    let mut shards: BTreeMap<u32, PathBuf> = BTreeMap::new();
    let mut shard_count: Option<(u32, PathBuf)> = None;
    for (path, r) in std::iter::once((first_path.clone(), first)).chain(iter) {
        let (a, b) = (first_path.display(), path.display());
        if r.qbench_version != merged.qbench_version || r.git_commit != merged.git_commit {
            bail!(
                "{b}: key `git_commit`/`qbench_version`: built from qbench {} ({}) but {a} from qbench {} ({}); shards must come from one build",
                r.qbench_version, r.git_commit, merged.qbench_version, merged.git_commit
            );
        }
        if r.config != merged.config {
            bail!(
                "{b}: key `config` differs from {a}'s ({}); shards must share one resolved config",
                config_difference(&merged, &r)
            );
        }
        if r.seeds != merged.seeds {
            bail!("{b}: key `seeds` differs from {a}'s; shards must share their seeds");
        }
        for run in &r.runs {
            if let Some(s) = run.shard {
                match &shard_count {
                    Some((n, p)) if *n != s.count => bail!(
                        "{b}: key `runs[].shard` is {s} but {} was split into {n} shards",
                        p.display()
                    ),
                    Some(_) => {}
                    None => shard_count = Some((s.count, path.clone())),
                }
                if let Some(p) = shards.insert(s.index, path.clone()) {
                    bail!("shard {s} appears in both {} and {b}", p.display());
                }
            }
        }
        let offset = merged.runs.len();
        merged.runs.extend(r.runs.iter().cloned());
        for mut cell in r.cells {
            let key = cell.key();
            if let Some(p) = owner.get(&key) {
                bail!(
                    "cell {key} is in both {} and {b}: shards must hold disjoint cells",
                    p.display()
                );
            }
            owner.insert(key, path.clone());
            cell.run += offset;
            merged.cells.push(cell);
        }
    }
    // One machine when every shard ran on the same one; null when they differ (each
    // cell's machine is then its run's).
    merged.machine = merged.common_machine();
    merged
        .validate()
        .map_err(|e| anyhow::anyhow!("the merged results are invalid: {e}"))?;
    Ok(merged)
}

/// Names the first config key that differs.
fn config_difference(a: &Results, b: &Results) -> String {
    let (va, vb) = (
        serde_json::to_value(&a.config).unwrap_or_default(),
        serde_json::to_value(&b.config).unwrap_or_default(),
    );
    if let (Some(ma), Some(mb)) = (va.as_object(), vb.as_object()) {
        for (k, x) in ma {
            let y = mb.get(k).cloned().unwrap_or_default();
            if *x != y {
                return format!("`config.{k}`: {x} vs {y}");
            }
        }
    }
    "the configs differ".to_owned()
}

/// Shards of `count` that none of the merged runs covered.
pub fn missing_shards(r: &Results) -> Vec<u32> {
    let Some(count) = r.runs.iter().find_map(|run| run.shard.map(|s| s.count)) else {
        return Vec::new();
    };
    (0..count)
        .filter(|i| {
            !r.runs
                .iter()
                .any(|run| run.shard.is_some_and(|s| s.index == *i))
        })
        .collect()
}

/// Runs `qbench merge`: reads and validates every input, merges, writes `out`.
pub fn run(inputs: &[PathBuf], out: &Path) -> Result<()> {
    let read = inputs
        .iter()
        .map(|p| Results::read(p).map(|r| (p.clone(), r)))
        .collect::<Result<Vec<_>>>()?;
    let merged = merge(read)?;
    merged.write(out)?;
    let missing = missing_shards(&merged);
    eprintln!(
        "merged {} file(s), {} run(s), {} cell(s) into {}",
        inputs.len(),
        merged.runs.len(),
        merged.cells.len(),
        out.display()
    );
    if !missing.is_empty() {
        let list: Vec<String> = missing.iter().map(u32::to_string).collect();
        eprintln!(
            "warning: shard(s) {} of {} are missing",
            list.join(", "),
            merged
                .runs
                .iter()
                .find_map(|r| r.shard)
                .map_or(0, |s| s.count)
        );
    }
    Ok(())
}
