//! qbench-kernels: the int8 and fp32 compute that every qbench number rests on.
//!
//! This crate owns the arithmetic contract (see [`reference`]), the ISA ladder
//! ([`isa`]), packed int8 GEMM with three output stages ([`gemm`]) and the fp32 baseline
//! GEMM ([`fp32`]). It knows nothing about models, graphs or quantization recipes: it is
//! handed integer tensors with zero points and scales and returns integers or floats.
//!
//! Every SIMD kernel is bit-exact with [`reference`] on its declared input domain; the
//! tests in `tests/` hold every rung to that.

pub mod affine;
pub mod conv;
pub mod eltwise;
mod epilogue;
pub mod error;
pub mod fmath;
pub mod fp32;
pub mod gemm;
mod generic;
pub mod isa;
pub mod nhwc;
pub mod pool;
pub mod quantize;
pub mod reference;
pub mod rng;

#[cfg(target_arch = "x86_64")]
mod x86_64;

#[cfg(target_arch = "aarch64")]
mod aarch64;

pub use affine::Affine;
pub use conv::{conv_dequant, conv_requant, ConvWeights, PackedConv};
pub use eltwise::AddQuant;
pub use error::KernelError;
pub use gemm::{
    gemm_dequant, gemm_i32, gemm_requant, ActZeroPoints, Dequant, MatA, MatB, PackedB, Requant,
    Scales,
};
pub use isa::Rung;
pub use nhwc::{Nhwc, Window};
pub use pool::PoolQuant;
