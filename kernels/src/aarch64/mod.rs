//! aarch64 rungs: NEON (widening multiply-accumulate) and NEON dot-product (`sdot`) GEMM
//! micro-kernels, and NEON pooling / elementwise kernels (`qops`).

pub(crate) mod dotprod;
pub(crate) mod neon;
pub(crate) mod qops;
