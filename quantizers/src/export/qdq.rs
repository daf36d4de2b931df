//! The QDQ form (not yet implemented).
use crate::error::{QuantError, Result};
use crate::model::QuantizedModel;
use tract_onnx::pb;
pub fn to_model_proto(_model: &QuantizedModel) -> Result<pb::ModelProto> {
    Err(QuantError::Config {
        key: "qdq".into(),
        msg: "not implemented".into(),
    })
}
