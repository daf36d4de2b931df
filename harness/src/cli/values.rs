//! clap value parsers: each turns one flag's text into its type, or a message clap prints
//! beside the flag's name.

use qbench_quantizers::observer::ObserverKind;
use qbench_quantizers::{Backend, Method};

/// A quantization method (`fp32`, the baseline, is no method to quantize with).
pub fn parse_method(s: &str) -> Result<Method, String> {
    Method::from_name(s)
        .filter(|m| Method::QUANTIZED.contains(m))
        .ok_or_else(|| format!("unknown method {s:?}; valid: dynamic, fp16, static, qat"))
}

pub fn parse_format(s: &str) -> Result<crate::report::Format, String> {
    crate::report::Format::from_name(s)
        .ok_or_else(|| format!("unknown format {s:?}; valid: md, csv, json, html, table"))
}

pub fn parse_backend(s: &str) -> Result<Backend, String> {
    Backend::from_name(s).map_err(|e| e.to_string())
}

pub fn parse_observer(s: &str) -> Result<ObserverKind, String> {
    ObserverKind::from_name(s).ok_or_else(|| {
        let names: Vec<&str> = ObserverKind::all().iter().map(|k| k.name()).collect();
        format!("unknown observer {s:?}; valid: {}", names.join(", "))
    })
}

/// A finite number ≥ 0; clap reports the flag with the message.
pub fn non_negative(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        Ok(v) => Err(format!("{v} must be a finite number ≥ 0")),
        Err(e) => Err(format!("{s:?} is not a number: {e}")),
    }
}

/// A count that must be at least 1; clap reports the flag with the message.
pub fn positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{s:?} is not a count: {e}")),
    }
}

/// A byte count: digits, optionally with a binary unit (`512M`, `8G`, `8GiB`).
pub fn memory_size(s: &str) -> Result<u64, String> {
    qbench_models::budget::parse_size(s)
}
