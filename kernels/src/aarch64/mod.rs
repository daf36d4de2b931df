//! aarch64 rungs: NEON (widening multiply-accumulate) and NEON dot-product (`sdot`) GEMM
//! micro-kernels, the NEON depthwise convolution (`dwconv`), and NEON pooling / elementwise
//! kernels (`qops`).

pub(crate) mod dotprod;
pub(crate) mod dwconv;
pub(crate) mod neon;
pub(crate) mod qops;
