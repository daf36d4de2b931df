//! The one error type of the kernels: a call refused for its shapes or its parameters.
//! Nothing is written to an output when a call is refused.

/// Why a kernel call was refused; the message names the operand or parameter.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum KernelError {
    #[error("shape mismatch: {0}")]
    Shape(String),
    #[error("parameter: {0}")]
    Param(String),
}
