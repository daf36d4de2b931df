//! Structure-aware mutation of TOML documents (threshold files).
//!
//! The document goes through the JSON tree mutator ([`super::json`]) and back: threshold
//! files are tables, arrays of tables, strings and numbers, all of which JSON holds. An
//! edit TOML cannot express (a `null`) is retried. TOML, unlike JSON, has `nan` and
//! `inf`, so a further edit writes one of them over a number in the text.

use qbench_models::rng::Rng;

use super::Draw;

/// Mutates the TOML `seed`; `None` if it does not parse (the caller falls back to bytes).
pub fn mutate(rng: &mut Rng, seed: &str) -> Option<(String, Vec<String>)> {
    let table: toml::Table = seed.parse().ok()?;
    let json = serde_json::to_value(&table).ok()?;
    let edits = 1 + rng.below(3);
    for _ in 0..8 {
        let mut v = json.clone();
        let mut labels = super::json::mutate(rng, &mut v, edits);
        let Ok(back) = serde_json::from_value::<toml::Table>(v) else {
            continue;
        };
        let Ok(mut text) = toml::to_string(&back) else {
            continue;
        };
        if rng.one_in(4) {
            labels.push(non_finite(rng, &mut text));
        }
        return Some((text, labels));
    }
    None
}

/// Replaces the value of one `key = <number>` line with `nan`, `inf` or `-inf`.
fn non_finite(rng: &mut Rng, text: &mut String) -> String {
    let numeric: Vec<(usize, usize)> = text
        .match_indices(" = ")
        .map(|(i, _)| i + 3)
        .filter(|&i| {
            text[i..]
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_digit() || c == '-')
        })
        .map(|i| {
            let end = text[i..].find('\n').map_or(text.len(), |e| i + e);
            (i, end)
        })
        .collect();
    if numeric.is_empty() {
        return "toml: no number to make non-finite".into();
    }
    let (from, to) = numeric[rng.below(numeric.len())];
    let v = ["nan", "inf", "-inf", "-nan"][rng.below(4)];
    text.replace_range(from..to, v);
    format!("toml: a number at byte {from} = {v}")
}
