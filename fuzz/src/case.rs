//! One fuzz case: its input, a pure function of (run seed, format, case number), and how
//! it was made.
//!
//! Purity is what makes the child-process design work: a child that dies by signal
//! leaves only its case number behind, and the parent rebuilds the same input to save it.
//! It also makes a CI run with a fixed seed the same run every time.

use qbench_models::rng::Rng;

use crate::format::Format;
use crate::mutate::{self, Draw};
use crate::seeds::Seed;

/// A generated input.
pub struct Case {
    pub bytes: Vec<u8>,
    /// The seed it was mutated from.
    pub seed_name: String,
    /// What the mutations did, in order.
    pub labels: Vec<String>,
}

impl Case {
    /// One line: the seed and the edits.
    pub fn describe(&self) -> String {
        format!("from {}: {}", self.seed_name, self.labels.join("; "))
    }
}

/// The RNG of case `index` of `format` in the run seeded `seed`.
pub fn rng_for(seed: u64, format: Format, index: u64) -> Rng {
    let mut mix = Rng::new(
        seed ^ format.stream().wrapping_mul(0x9e37_79b9_7f4a_7c15)
            ^ index.wrapping_mul(0xd1b5_4a32_d192_ed03),
    );
    Rng::new(mix.next_u64())
}

/// Builds case `index`.
pub fn generate(format: Format, seeds: &[Seed], seed: u64, index: u64) -> Case {
    let mut rng = rng_for(seed, format, index);
    let s = &seeds[rng.below(seeds.len())];
    let mut bytes = Vec::new();
    let labels = match format {
        Format::Onnx => mutate::onnx::mutate(&mut rng, &s.bytes, &mut bytes),
        Format::Safetensors => mutate::safetensors::mutate(&mut rng, &s.bytes, &mut bytes),
        Format::Idx => mutate::idx::mutate(&mut rng, &s.bytes, &mut bytes),
        Format::Results => json_text(&mut rng, &s.bytes, &mut bytes),
        Format::Thresholds => toml_text(&mut rng, &s.bytes, &mut bytes),
        Format::Selftest => {
            bytes.push((index % 7) as u8);
            vec![format!("selftest kind {}", index % 7)]
        }
    };
    Case {
        bytes,
        seed_name: s.name.clone(),
        labels,
    }
}

/// A JSON document: tree edits, sometimes byte damage on top.
fn json_text(rng: &mut Rng, seed: &[u8], out: &mut Vec<u8>) -> Vec<String> {
    let mut labels = Vec::new();
    match serde_json::from_slice::<serde_json::Value>(seed) {
        Ok(mut v) => {
            let edits = 1 + rng.below(3);
            labels = mutate::json::mutate(rng, &mut v, edits);
            out.extend(serde_json::to_vec_pretty(&v).expect("a Value serialises"));
        }
        Err(_) => out.extend_from_slice(seed),
    }
    if labels.is_empty() || rng.one_in(8) {
        labels.push(mutate::bytes(rng, out));
    }
    labels
}

/// A TOML document: tree edits, sometimes byte damage on top.
fn toml_text(rng: &mut Rng, seed: &[u8], out: &mut Vec<u8>) -> Vec<String> {
    let mut labels = Vec::new();
    match std::str::from_utf8(seed)
        .ok()
        .and_then(|s| mutate::toml::mutate(rng, s))
    {
        Some((text, l)) => {
            out.extend(text.into_bytes());
            labels = l;
        }
        None => out.extend_from_slice(seed),
    }
    if labels.is_empty() || rng.one_in(8) {
        labels.push(mutate::bytes(rng, out));
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The child-process design and fixed-seed CI rest on this: a case number names one
    /// input, whoever builds it.
    #[test]
    fn a_case_is_a_pure_function_of_seed_format_and_number() {
        for format in Format::ALL {
            let seeds = crate::seeds::for_format(format);
            assert!(!seeds.is_empty(), "{format:?} has no seeds");
            for i in [0, 1, 17, 4242] {
                let a = generate(format, &seeds, 9, i);
                let b = generate(format, &seeds, 9, i);
                assert_eq!(a.bytes, b.bytes, "{format:?} case {i}");
                assert_eq!(a.labels, b.labels);
            }
            // Building a case runs outside `catch_unwind` in the child: a panic there
            // would end the child with no case to blame. Many cases, no panic.
            for i in 0..1500 {
                generate(format, &seeds, 13, i);
            }
            let a = generate(format, &seeds, 9, 5);
            let b = generate(format, &seeds, 10, 5);
            assert!(
                a.bytes != b.bytes || a.labels != b.labels,
                "{format:?}: seeds differ"
            );
        }
    }
}
