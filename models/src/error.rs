//! The one error type of qbench-models' tensors, IR, executor and ONNX import/export.
//!
//! Every variant names what is at fault: the file for I/O and decoding, the node and its
//! op for validation and execution. Nothing in this crate panics on bad input; it returns
//! one of these.

use std::path::PathBuf;

use qbench_kernels::KernelError;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{file}: {source}")]
    Io {
        file: PathBuf,
        source: std::io::Error,
    },
    /// The bytes are not an ONNX `ModelProto` (truncated or corrupted protobuf).
    #[error("{file}: not a valid ONNX protobuf: {source}")]
    Decode {
        file: String,
        source: prost::DecodeError,
    },
    /// A node the importer refuses: unsupported op, attribute, attribute value or dtype.
    #[error("{file}: node {node:?} ({op}): {msg}")]
    Node {
        file: String,
        node: String,
        op: String,
        msg: String,
    },
    /// A problem with the graph as a whole (missing tensor, cycle, bad initializer, ...).
    #[error("{file}: {msg}")]
    Graph { file: String, msg: String },
    /// A tensor operation refused its operands.
    #[error("tensor: {0}")]
    Tensor(String),
    /// A node failed at run time (shapes that do not fit, ...).
    #[error("node {node:?} ({op}): {msg}")]
    Exec {
        node: String,
        op: String,
        msg: String,
    },
    /// A size that does not fit: an element count or byte size that overflows, or a
    /// tensor over the memory budget ([`crate::budget`]); or a bad budget setting.
    #[error("{0}")]
    Budget(String),
    #[error("kernel: {0}")]
    Kernel(#[from] KernelError),
    /// The cross-check's tract side failed.
    #[error("tract on {file}: {msg}")]
    Tract { file: String, msg: String },
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;

/// Shorthand for [`ModelError::Tensor`].
pub(crate) fn tensor_err<T>(msg: impl Into<String>) -> Result<T> {
    Err(ModelError::Tensor(msg.into()))
}
