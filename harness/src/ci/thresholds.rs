//! The thresholds file of `qbench gate` (`ci/thresholds.toml`): a list of `[[rule]]`s,
//! each matching cells by glob patterns over model, method and backend (and optionally
//! an exact batch and thread count) and setting any of five limits.
//!
//! Owns parsing, validation (unknown keys, malformed TOML, bad patterns and limits are
//! errors naming the file and the key) and resolution: for each limit, the most specific
//! matching rule that sets it wins. It evaluates no cell; that is `gate`'s job.
//!
//! Patterns use `globset` syntax (`*`, `?`, `[abc]`, `{static,qat}`), matched against
//! the whole name. Specificity of a rule: for each of model, method and backend, 2 for a
//! literal name, 1 for a pattern with any literal part, 0 for `*` or an absent key; plus 2
//! for each of batch and threads it pins. Between equally specific rules the later one in
//! the file wins. Limits cascade: a cell gets each limit from the most specific rule that
//! sets that limit, so a general rule's size limit still holds under a specific rule that
//! sets only an accuracy limit.

use crate::results::{Backend, Cell, Method};
use anyhow::{Context, Result};
use globset::{Glob, GlobMatcher};
use serde::Deserialize;
use std::fmt;
use std::path::Path;

/// A limit a rule can set, with its TOML key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Limit {
    /// `accuracy.drop_pp` ≤ limit (percentage points).
    MaxDropPp,
    /// `accuracy.relative` ≥ limit (fraction of fp32, e.g. 0.99).
    MinRelative,
    /// `agreement` ≥ limit (share of inputs whose argmax equals fp32's).
    MinAgreement,
    /// `size_ratio` ≤ limit.
    MaxSizeRatio,
    /// `speedup_vs_fp32` ≥ limit.
    MinSpeedup,
}

pub const LIMITS: [Limit; 5] = [
    Limit::MaxDropPp,
    Limit::MinRelative,
    Limit::MinAgreement,
    Limit::MaxSizeRatio,
    Limit::MinSpeedup,
];

impl Limit {
    pub fn key(self) -> &'static str {
        match self {
            Limit::MaxDropPp => "max_drop_pp",
            Limit::MinRelative => "min_relative",
            Limit::MinAgreement => "min_agreement",
            Limit::MaxSizeRatio => "max_size_ratio",
            Limit::MinSpeedup => "min_speedup",
        }
    }

    /// `true` for upper bounds (the value must not exceed the limit).
    pub fn is_max(self) -> bool {
        matches!(self, Limit::MaxDropPp | Limit::MaxSizeRatio)
    }

    /// The cell field the limit reads, as the results schema names it.
    pub fn field(self) -> &'static str {
        match self {
            Limit::MaxDropPp => "accuracy.drop_pp",
            Limit::MinRelative => "accuracy.relative",
            Limit::MinAgreement => "agreement",
            Limit::MaxSizeRatio => "size_ratio",
            Limit::MinSpeedup => "speedup_vs_fp32",
        }
    }
}

/// The file as written. Unknown keys anywhere are errors.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    rule: Vec<RawRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    model: Option<String>,
    method: Option<String>,
    backend: Option<String>,
    batch: Option<u32>,
    threads: Option<u32>,
    max_drop_pp: Option<f64>,
    min_relative: Option<f64>,
    min_agreement: Option<f64>,
    max_size_ratio: Option<f64>,
    min_speedup: Option<f64>,
}

/// One glob over names, with its source text.
#[derive(Clone, Debug)]
pub struct Pattern {
    pub text: String,
    matcher: GlobMatcher,
}

impl Pattern {
    pub fn new(text: &str) -> std::result::Result<Pattern, String> {
        let glob = Glob::new(text).map_err(|e| format!("{text:?} is not a valid glob: {e}"))?;
        Ok(Pattern {
            text: text.to_owned(),
            matcher: glob.compile_matcher(),
        })
    }

    pub fn is_match(&self, name: &str) -> bool {
        self.matcher.is_match(name)
    }

    /// 2 literal, 1 glob with literal parts, 0 match-anything.
    fn specificity(&self) -> u32 {
        let meta = |c: char| matches!(c, '*' | '?' | '[' | ']' | '{' | '}' | '\\');
        if !self.text.chars().any(meta) {
            2
        } else if self.text.chars().all(|c| c == '*') {
            0
        } else {
            1
        }
    }
}

/// One validated rule. `index` is its 0-based position in the file (`rule[index]`).
#[derive(Clone, Debug)]
pub struct Rule {
    pub index: usize,
    pub model: Pattern,
    pub method: Pattern,
    pub backend: Pattern,
    pub batch: Option<u32>,
    pub threads: Option<u32>,
    pub limits: Vec<(Limit, f64)>,
}

impl Rule {
    pub fn matches(&self, cell: &Cell) -> bool {
        self.model.is_match(&cell.model)
            && self.method.is_match(cell.method.name())
            && self.backend.is_match(cell.backend.name())
            && self.batch.is_none_or(|b| b == cell.batch)
            && self.threads.is_none_or(|t| t == cell.threads)
    }

    pub fn specificity(&self) -> u32 {
        self.model.specificity()
            + self.method.specificity()
            + self.backend.specificity()
            + 2 * u32::from(self.batch.is_some())
            + 2 * u32::from(self.threads.is_some())
    }

    pub fn limit(&self, limit: Limit) -> Option<f64> {
        self.limits
            .iter()
            .find(|(l, _)| *l == limit)
            .map(|&(_, v)| v)
    }
}

impl fmt::Display for Rule {
    /// `rule[2] (*/static/*)`, with `b32`/`t1` when pinned.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rule[{}] ({}/{}/{}",
            self.index, self.model.text, self.method.text, self.backend.text
        )?;
        if let Some(b) = self.batch {
            write!(f, "/b{b}")?;
        }
        if let Some(t) = self.threads {
            write!(f, "/t{t}")?;
        }
        write!(f, ")")
    }
}

/// The limit that applies to a cell, and the rule it came from.
#[derive(Clone, Debug)]
pub struct Applied<'a> {
    pub limit: Limit,
    pub bound: f64,
    pub rule: &'a Rule,
}

#[derive(Clone, Debug)]
pub struct Thresholds {
    pub rules: Vec<Rule>,
}

impl Thresholds {
    pub fn read(path: &Path) -> Result<Thresholds> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading thresholds file {}", path.display()))?;
        Thresholds::parse(&text, path)
    }

    /// Parses and validates; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Thresholds> {
        let raw: RawFile = crate::results::from_toml(text, path)?;
        let mut rules = Vec::new();
        for (index, r) in raw.rule.into_iter().enumerate() {
            let rule = validate_rule(index, r)
                .map_err(|e| anyhow::anyhow!("{}: key `rule[{index}]{e}", path.display()))?;
            rules.push(rule);
        }
        Ok(Thresholds { rules })
    }

    /// Each limit that applies to `cell`: from the most specific matching rule that sets
    /// it, the later rule on a tie.
    pub fn resolve(&self, cell: &Cell) -> Vec<Applied<'_>> {
        LIMITS
            .iter()
            .filter_map(|&limit| {
                self.rules
                    .iter()
                    .filter(|r| r.matches(cell))
                    .filter_map(|r| r.limit(limit).map(|bound| (r, bound)))
                    .max_by_key(|(r, _)| (r.specificity(), r.index))
                    .map(|(rule, bound)| Applied { limit, bound, rule })
            })
            .collect()
    }
}

/// Returns the rule, or an error that continues the key `rule[i]` (`.model`: ...).
fn validate_rule(index: usize, r: RawRule) -> std::result::Result<Rule, String> {
    let pattern = |key: &str,
                   value: Option<String>,
                   known: &[&str]|
     -> std::result::Result<Pattern, String> {
        let text = value.unwrap_or_else(|| "*".to_owned());
        let p = Pattern::new(&text).map_err(|e| format!(".{key}`: {e}"))?;
        // Methods and backends are a closed set: a pattern that can match none of them
        // is a typo that would silently disable the rule.
        if !known.is_empty() && !known.iter().any(|k| p.is_match(k)) {
            return Err(format!(
                ".{key}`: {text:?} matches no {key} (known: {})",
                known.join(", ")
            ));
        }
        Ok(p)
    };
    let methods: Vec<&str> = Method::ALL.iter().map(|m: &Method| m.name()).collect();
    let backends: Vec<&str> = Backend::ALL.iter().map(|b: &Backend| b.name()).collect();
    let model = pattern("model", r.model, &[])?;
    let method = pattern("method", r.method, &methods)?;
    let backend = pattern("backend", r.backend, &backends)?;
    for (key, v) in [("batch", r.batch), ("threads", r.threads)] {
        if v == Some(0) {
            return Err(format!(".{key}`: 0; it starts at 1"));
        }
    }
    let mut limits = Vec::new();
    for (limit, value) in [
        (Limit::MaxDropPp, r.max_drop_pp),
        (Limit::MinRelative, r.min_relative),
        (Limit::MinAgreement, r.min_agreement),
        (Limit::MaxSizeRatio, r.max_size_ratio),
        (Limit::MinSpeedup, r.min_speedup),
    ] {
        let Some(v) = value else { continue };
        let key = limit.key();
        let ok = v.is_finite()
            && match limit {
                Limit::MaxDropPp => v >= 0.0,
                Limit::MinRelative | Limit::MinAgreement => v > 0.0 && v <= 1.0,
                Limit::MaxSizeRatio | Limit::MinSpeedup => v > 0.0,
            };
        if !ok {
            let hint = match limit {
                Limit::MaxDropPp => "percentage points, ≥ 0 (0.5 = half a point)",
                Limit::MinRelative => "a fraction of fp32 in (0, 1] (0.99 for 99 %)",
                Limit::MinAgreement => "a share of inputs in (0, 1] (0.99 for 99 %)",
                Limit::MaxSizeRatio => "a ratio to the fp32 size, > 0 (0.27)",
                Limit::MinSpeedup => "a ratio to fp32 latency, > 0 (1.5)",
            };
            return Err(format!(".{key}`: {v} is out of range; expected {hint}"));
        }
        limits.push((limit, v));
    }
    if limits.is_empty() {
        return Err(format!(
            "`: the rule sets no limit; give at least one of {}",
            LIMITS.map(Limit::key).join(", ")
        ));
    }
    Ok(Rule {
        index,
        model,
        method,
        backend,
        batch: r.batch,
        threads: r.threads,
        limits,
    })
}
