//! qbench-quantizers: quantization parameters, observers, backend qconfigs, fusion and the
//! dynamic and static pipelines, the quantized model and the executor that runs it on the
//! kernel ladder; quantization-aware training (`qat`) on the models crate's trainer.

pub mod calibrate;
pub mod dynamic;
pub mod error;
pub mod export;
pub mod fp16;
pub mod fuse;
pub mod layers;
pub mod model;
pub mod observer;
pub mod probe;
pub mod qat;
pub mod qconfig;
pub mod qparams;
pub mod runtime;
pub mod save;
pub mod shapes;
pub mod sqnr;
pub mod validate;

pub use calibrate::{prepare, Prepared};
pub use dynamic::{quantize_dynamic, DynamicOptions};
pub use error::{QuantError, Result};
pub use model::{ActScales, Method, QuantizedModel};
pub use qat::{prepare_qat, EpochStart, QatConfig, QatModel};
pub use qconfig::{Backend, QConfig, QConfigMap};
pub use runtime::QExecutor;
