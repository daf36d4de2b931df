//! The shape-only and element-wise ops: Relu, Add (same shapes: the residual join) and
//! Flatten, forward and backward.

use super::Buf;

pub(crate) fn relu(x: &Buf) -> Buf {
    Buf::new(
        x.shape.clone(),
        x.data.iter().map(|&v| v.max(0.0)).collect(),
    )
}

/// Reads the forward output: where it is positive the input was, and the gradient passes.
pub(crate) fn relu_backward(y: &Buf, dy: &Buf) -> Buf {
    let d = y
        .data
        .iter()
        .zip(&dy.data)
        .map(|(&y, &g)| if y > 0.0 { g } else { 0.0 })
        .collect();
    Buf::new(y.shape.clone(), d)
}

pub(crate) fn add(a: &Buf, b: &Buf) -> Buf {
    Buf::new(
        a.shape.clone(),
        a.data.iter().zip(&b.data).map(|(x, y)| x + y).collect(),
    )
}

/// ONNX Flatten: `[prod(shape[..axis]), prod(shape[axis..])]`.
pub(crate) fn flatten_shape(shape: &[usize], axis: usize) -> Vec<usize> {
    vec![
        shape[..axis].iter().product(),
        shape[axis..].iter().product(),
    ]
}
