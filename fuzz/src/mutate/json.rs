//! Structure-aware mutation of JSON documents (results files, safetensors headers, the
//! `qbench.model` metadata and recipe of quantized files), on `serde_json::Value` trees.
//!
//! A node is picked in pre-order (numbers and arrays twice as often: sizes, shapes and
//! scale lists are where the crashes are) and edited: numbers set to special values,
//! arrays emptied, shortened, lengthened or given a special element, object keys removed
//! or added, strings replaced, a node replaced by another type. The tree is written back
//! as valid JSON; a case that should not parse comes from the byte-level damage instead.

use qbench_models::rng::Rng;
use serde_json::{Number, Value};

use super::Draw;

/// Strings that reach path handling, name lookups and number parsing.
const STRINGS: [&str; 8] = [
    "",
    "../../etc/passwd",
    "4294967296",
    "-1",
    "NaN",
    "conv1",
    "\u{202e}\u{0000}x",
    "per_channel",
];

/// Applies `edits` edits to `v`; returns their labels.
pub fn mutate(rng: &mut Rng, v: &mut Value, edits: usize) -> Vec<String> {
    (0..edits).map(|_| edit(rng, v)).collect()
}

/// Pre-order paths of every node, numbers and arrays listed twice (see module docs).
fn paths(v: &Value, at: &mut Vec<PathSeg>, out: &mut Vec<Vec<PathSeg>>) {
    out.push(at.clone());
    match v {
        Value::Number(_) | Value::Array(_) => out.push(at.clone()),
        _ => {}
    }
    match v {
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                at.push(PathSeg::Index(i));
                paths(x, at, out);
                at.pop();
            }
        }
        Value::Object(o) => {
            for (k, x) in o {
                at.push(PathSeg::Key(k.clone()));
                paths(x, at, out);
                at.pop();
            }
        }
        _ => {}
    }
}

#[derive(Clone, Debug)]
enum PathSeg {
    Index(usize),
    Key(String),
}

fn at_path<'v>(v: &'v mut Value, path: &[PathSeg]) -> &'v mut Value {
    path.iter().fold(v, |v, seg| match seg {
        PathSeg::Index(i) => &mut v[*i],
        PathSeg::Key(k) => &mut v[k.as_str()],
    })
}

fn show(path: &[PathSeg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            PathSeg::Index(i) => s.push_str(&format!("[{i}]")),
            PathSeg::Key(k) => s.push_str(&format!(".{k}")),
        }
    }
    if s.is_empty() {
        s.push('.');
    }
    s
}

/// A special number like `like` (an integer for an integer, most of the time, so the
/// edit passes serde's type check and reaches the code that uses the value).
fn special_like(rng: &mut Rng, like: Option<&Value>) -> Value {
    let int = like.is_none_or(|v| v.is_i64() || v.is_u64());
    if rng.one_in(6) {
        special_number(rng)
    } else if int {
        let v = rng.special_int();
        // Sizes are unsigned: a negative one mostly stops at the type check.
        Value::Number(if v < 0 && !rng.one_in(4) {
            0.into()
        } else {
            v.into()
        })
    } else {
        let f = rng.special_float();
        Number::from_f64(f).map_or(Value::Number(0.into()), Value::Number)
    }
}

/// A finite special number (JSON has no NaN or infinity).
fn special_number(rng: &mut Rng) -> Value {
    if rng.one_in(2) {
        Value::Number(rng.special_int().into())
    } else {
        let f = rng.special_float();
        Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or(Value::Number(0.into()))
    }
}

fn edit(rng: &mut Rng, root: &mut Value) -> String {
    let mut all = Vec::new();
    paths(root, &mut Vec::new(), &mut all);
    let path = all.swap_remove(rng.below(all.len()));
    let label = show(&path);
    let v = at_path(root, &path);
    let what = match v {
        Value::Number(_) if !rng.one_in(5) => {
            *v = special_like(rng, Some(v));
            format!("= {v}")
        }
        Value::Array(a) if !rng.one_in(5) => match rng.below(5) {
            0 => {
                a.clear();
                "emptied".to_string()
            }
            1 if !a.is_empty() => {
                a.pop();
                "shortened".to_string()
            }
            2 if !a.is_empty() => {
                let x = a[rng.below(a.len())].clone();
                a.push(x);
                "an element duplicated".to_string()
            }
            3 => {
                let x = special_like(rng, a.first());
                let at = rng.below(a.len() + 1);
                a.insert(at, x);
                format!("{} inserted at {at}", a[at])
            }
            _ if !a.is_empty() => {
                let at = rng.below(a.len());
                a[at] = special_like(rng, Some(&a[at]));
                format!("[{at}] = {}", a[at])
            }
            _ => "left empty".to_string(),
        },
        Value::Object(o) if !rng.one_in(5) => {
            if !o.is_empty() && rng.one_in(2) {
                let k = o
                    .keys()
                    .nth(rng.below(o.len()))
                    .cloned()
                    .unwrap_or_default();
                o.remove(&k);
                format!("key {k:?} removed")
            } else {
                let k = ["fuzz", "", "shape", "scales"][rng.below(4)].to_string();
                o.insert(k.clone(), special_number(rng));
                format!("key {k:?} added")
            }
        }
        Value::String(s) if !rng.one_in(3) => {
            *s = STRINGS[rng.below(STRINGS.len())].to_string();
            format!("= {s:?}")
        }
        _ => {
            *v = match rng.below(6) {
                0 => Value::Null,
                1 => Value::Bool(true),
                2 => Value::Array(Vec::new()),
                3 => Value::Object(Default::default()),
                4 => Value::String(STRINGS[rng.below(STRINGS.len())].into()),
                _ => special_number(rng),
            };
            format!("replaced by {v}")
        }
    };
    format!("json {label} {what}")
}
