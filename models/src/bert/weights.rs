//! Reading a BERT checkpoint's tensors from `model.safetensors` with the `safetensors`
//! crate, by name, with the dtype and shape checked: an error names the file and the key.

use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

use crate::error::{ModelError, Result};
use crate::tensor::Tensor;

/// The raw bytes of a safetensors file and where they came from.
pub struct Weights {
    path: PathBuf,
    bytes: Vec<u8>,
}

impl Weights {
    pub fn read(path: &Path) -> Result<Weights> {
        let bytes = std::fs::read(path).map_err(|source| ModelError::Io {
            file: path.to_path_buf(),
            source,
        })?;
        let w = Weights {
            path: path.to_path_buf(),
            bytes,
        };
        w.view()?; // refuse a truncated or corrupted file now, not at the first key
        Ok(w)
    }

    fn err(&self, msg: String) -> ModelError {
        ModelError::Graph {
            file: self.path.display().to_string(),
            msg,
        }
    }

    fn view(&self) -> Result<SafeTensors<'_>> {
        SafeTensors::deserialize(&self.bytes)
            .map_err(|e| self.err(format!("not a valid safetensors file: {e}")))
    }

    /// The f32 tensor `key`, which must have exactly `shape`.
    pub fn f32(&self, key: &str, shape: &[usize]) -> Result<Tensor> {
        let st = self.view()?;
        let t = st
            .tensor(key)
            .map_err(|e| self.err(format!("tensor {key:?}: {e}")))?;
        if t.dtype() != Dtype::F32 {
            return Err(self.err(format!("tensor {key:?} is {:?}, expected F32", t.dtype())));
        }
        if t.shape() != shape {
            return Err(self.err(format!(
                "tensor {key:?} has shape {:?}, expected {shape:?}",
                t.shape()
            )));
        }
        let v: Vec<f32> = t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
            .collect();
        Tensor::new(shape.to_vec(), v)
    }
}
