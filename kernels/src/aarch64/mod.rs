//! aarch64 rungs: NEON (widening multiply-accumulate) and NEON dot-product (`sdot`).

pub(crate) mod dotprod;
pub(crate) mod neon;
