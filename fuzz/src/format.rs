//! The input formats the driver fuzzes, their names on the command line and in corpus
//! directories, and a stable number each (it seeds the per-case RNG stream, so it must
//! never change for a format: replaying `--seed S` would otherwise give other inputs).

/// One fuzzed input format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Format {
    /// ONNX model files: import, dry run, dynamic quantization.
    Onnx,
    /// Quantized `.safetensors` files written by `qbench quantize`.
    Safetensors,
    /// IDX (MNIST-style) data files, plain or gzip.
    Idx,
    /// Results files (`qbench sweep` output, `gate`/`compare` input).
    Results,
    /// Threshold files of `qbench gate`.
    Thresholds,
    /// The driver's own self-test: cases that panic, abort, segfault or over-allocate on
    /// purpose, to check that each is caught. Not part of `all`.
    Selftest,
}

impl Format {
    /// The formats `--format all` runs, in order.
    pub const ALL: [Format; 5] = [
        Format::Onnx,
        Format::Safetensors,
        Format::Idx,
        Format::Results,
        Format::Thresholds,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Format::Onnx => "onnx",
            Format::Safetensors => "safetensors",
            Format::Idx => "idx",
            Format::Results => "results",
            Format::Thresholds => "thresholds",
            Format::Selftest => "selftest",
        }
    }

    pub fn from_name(name: &str) -> Option<Format> {
        Self::ALL
            .into_iter()
            .chain([Format::Selftest])
            .find(|f| f.name() == name)
    }

    /// Mixed into the case seed; fixed forever per format.
    pub fn stream(self) -> u64 {
        match self {
            Format::Onnx => 1,
            Format::Safetensors => 2,
            Format::Idx => 3,
            Format::Results => 4,
            Format::Thresholds => 5,
            Format::Selftest => 99,
        }
    }
}
