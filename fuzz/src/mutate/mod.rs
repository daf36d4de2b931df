//! Mutations shared by every format: the special values sizes are set to, and the
//! byte-level damage (truncation, bit flips, splices) applied after a structural edit.
//!
//! Each mutation returns a short label of what it did; a case's labels are saved beside
//! a finding so its reason says how the input was made, not only that it failed.

pub mod idx;
pub mod json;
pub mod onnx;
pub mod safetensors;
pub mod toml;

use qbench_models::rng::Rng;

/// Sizes and values that break arithmetic: 0, 1, negative, around 2^31 and 2^32 (where
/// `i32`/`u32` and products wrap), huge, and the extremes.
pub const SPECIAL_INTS: [i64; 16] = [
    0,
    1,
    -1,
    -2,
    2,
    3,
    1 << 31,
    (1 << 31) - 1,
    1 << 32,
    (1 << 32) + 1,
    1 << 62,
    i64::MAX,
    i64::MIN,
    1_000_000,
    65536,
    7,
];

/// Floats that break scales and epsilons.
pub const SPECIAL_FLOATS: [f64; 10] = [
    0.0,
    -0.0,
    -1.0,
    1e-45,
    1e38,
    -1e38,
    f64::MAX,
    f64::MIN_POSITIVE,
    4294967296.0,
    0.5,
];

/// Draw helpers over the workspace's SplitMix64 stream.
pub trait Draw {
    /// An index in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize;
    /// True with probability `1/n`.
    fn one_in(&mut self, n: usize) -> bool;
    /// One of the special integers, or a small random one.
    fn special_int(&mut self) -> i64;
    /// One of the special floats, NaN or ±inf (JSON-free contexts), or a random one.
    fn special_float(&mut self) -> f64;
}

impl Draw for Rng {
    fn below(&mut self, n: usize) -> usize {
        self.at_most(n.max(1) - 1)
    }

    fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    fn special_int(&mut self) -> i64 {
        if self.one_in(4) {
            self.below(10) as i64
        } else {
            SPECIAL_INTS[self.below(SPECIAL_INTS.len())]
        }
    }

    fn special_float(&mut self) -> f64 {
        match self.below(8) {
            0 => f64::NAN,
            1 => f64::INFINITY,
            2 => f64::NEG_INFINITY,
            3 => self.uniform() * 4.0 - 2.0,
            _ => SPECIAL_FLOATS[self.below(SPECIAL_FLOATS.len())],
        }
    }
}

/// Byte-level damage to an encoded input: truncation, bit flips, a run overwritten with
/// 0x00/0xff, a duplicated slice, or bytes appended. Applied to some cases after the
/// structural edit, so decoders also see inputs that no longer parse.
pub fn bytes(rng: &mut Rng, data: &mut Vec<u8>) -> String {
    if data.is_empty() {
        data.push(rng.next_u64() as u8);
        return "bytes: one random byte".into();
    }
    let len = data.len();
    match rng.below(6) {
        0 => {
            let at = rng.below(len);
            data.truncate(at);
            format!("bytes: truncated to {at} of {len}")
        }
        1 => {
            let flips = 1 + rng.below(8);
            for _ in 0..flips {
                let at = rng.below(len);
                data[at] ^= 1 << rng.below(8);
            }
            format!("bytes: {flips} bit flips")
        }
        2 => {
            let at = rng.below(len);
            let n = (1 + rng.below(8)).min(len - at);
            let v = if rng.one_in(2) { 0x00 } else { 0xff };
            data[at..at + n].fill(v);
            format!("bytes: {n} bytes at {at} set to {v:#04x}")
        }
        3 => {
            let at = rng.below(len);
            let n = (1 + rng.below(64)).min(len - at);
            let chunk = data[at..at + n].to_vec();
            let to = rng.below(len);
            data.splice(to..to, chunk);
            format!("bytes: {n} bytes from {at} duplicated at {to}")
        }
        4 => {
            let n = 1 + rng.below(32);
            data.extend((0..n).map(|_| rng.next_u64() as u8));
            format!("bytes: {n} random bytes appended")
        }
        _ => {
            let at = rng.below(len);
            data[at] = rng.next_u64() as u8;
            format!("bytes: byte {at} randomised")
        }
    }
}
