//! x86-64 rungs: AVX2 (`vpmaddubsw`/`vpmaddwd`) and AVX-512 VNNI (`vpdpbusd`) GEMM
//! micro-kernels, and SIMD pooling / elementwise kernels (`qops`).

pub(crate) mod amx;
pub(crate) mod avx2;
pub(crate) mod avx512vnni;
pub(crate) mod dwconv;
pub(crate) mod dwconv_u8;
pub(crate) mod qops;
