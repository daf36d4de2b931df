//! Affine u8 quantization parameters of a whole tensor: `real = scale · (q − zero_point)`.

use crate::error::KernelError;

/// Per-tensor affine quantization of u8 data.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Affine {
    pub scale: f32,
    pub zero_point: i32,
}

impl Affine {
    pub const fn new(scale: f32, zero_point: i32) -> Affine {
        Affine { scale, zero_point }
    }

    /// Checks `scale` is finite and positive and `zero_point` in 0..=255; `what` names
    /// the tensor in the error.
    pub fn check(&self, what: &str) -> Result<(), KernelError> {
        if !(self.scale.is_finite() && self.scale > 0.0) {
            return Err(KernelError::Param(format!(
                "{what}: scale {} must be finite and positive",
                self.scale
            )));
        }
        if !(0..=255).contains(&self.zero_point) {
            return Err(KernelError::Param(format!(
                "{what}: zero point {} is outside 0..=255",
                self.zero_point
            )));
        }
        Ok(())
    }
}

/// Checks a clamp range `[qmin, qmax]` is not empty.
pub fn check_clamp(qmin: u8, qmax: u8) -> Result<(), KernelError> {
    if qmin > qmax {
        return Err(KernelError::Param(format!(
            "clamp range is empty: qmin {qmin} > qmax {qmax}"
        )));
    }
    Ok(())
}
