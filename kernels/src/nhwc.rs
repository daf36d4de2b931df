//! The activation layout of the quantized path: NHWC, dense, row-major.
//!
//! NHWC puts the channels of a pixel next to each other, so a 1x1 convolution is a GEMM
//! on the tensor as it lies (`(n·h·w) × c` times `c × c_out`), an im2col row is a
//! concatenation of contiguous channel runs, and depthwise kernels vectorise across
//! channels. This is why FBGEMM, QNNPACK/XNNPACK and TFLite all quantize in NHWC.

use crate::error::KernelError;

/// Shape of a dense NHWC tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Nhwc {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub c: usize,
}

impl Nhwc {
    pub const fn new(n: usize, h: usize, w: usize, c: usize) -> Nhwc {
        Nhwc { n, h, w, c }
    }

    /// Number of elements.
    pub const fn len(&self) -> usize {
        self.n * self.h * self.w * self.c
    }

    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Index of element (n, y, x, c).
    #[inline(always)]
    pub const fn index(&self, n: usize, y: usize, x: usize, c: usize) -> usize {
        ((n * self.h + y) * self.w + x) * self.c + c
    }

    /// Checks that a buffer of `len` elements holds this shape.
    pub fn check(&self, what: &str, len: usize) -> Result<(), KernelError> {
        if len == self.len() {
            Ok(())
        } else {
            Err(KernelError::Shape(format!(
                "{what}: NHWC {}x{}x{}x{} needs {} values, the buffer has {len}",
                self.n,
                self.h,
                self.w,
                self.c,
                self.len()
            )))
        }
    }
}

/// Spatial window of a convolution or pooling: kernel, stride, dilation and padding
/// (asymmetric, as ONNX allows: `pads = [top, left, bottom, right]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Window {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub dilation: [usize; 2],
    pub pads: [usize; 4],
}

impl Window {
    /// A `kh × kw` window with unit stride and dilation and no padding.
    pub const fn new(kh: usize, kw: usize) -> Window {
        Window {
            kernel: [kh, kw],
            stride: [1, 1],
            dilation: [1, 1],
            pads: [0; 4],
        }
    }

    pub const fn stride(mut self, sh: usize, sw: usize) -> Window {
        self.stride = [sh, sw];
        self
    }

    pub const fn dilation(mut self, dh: usize, dw: usize) -> Window {
        self.dilation = [dh, dw];
        self
    }

    /// `[top, left, bottom, right]`.
    pub const fn pads(mut self, pads: [usize; 4]) -> Window {
        self.pads = pads;
        self
    }

    /// Output height and width for an input of `h × w` (floor division, as ONNX without
    /// ceil_mode); an error when the window does not fit or a stride or dilation is zero.
    pub fn output_hw(&self, h: usize, w: usize) -> Result<(usize, usize), KernelError> {
        if self.kernel.contains(&0) || self.stride.contains(&0) || self.dilation.contains(&0) {
            return Err(KernelError::Param(format!(
                "window {self:?}: kernel, stride and dilation must be positive"
            )));
        }
        let dim = |input: usize, pad: usize, k: usize, d: usize, s: usize| {
            let span = d * (k - 1) + 1;
            (input + pad >= span).then(|| (input + pad - span) / s + 1)
        };
        let oh = dim(
            h,
            self.pads[0] + self.pads[2],
            self.kernel[0],
            self.dilation[0],
            self.stride[0],
        );
        let ow = dim(
            w,
            self.pads[1] + self.pads[3],
            self.kernel[1],
            self.dilation[1],
            self.stride[1],
        );
        match (oh, ow) {
            (Some(oh), Some(ow)) => Ok((oh, ow)),
            _ => Err(KernelError::Shape(format!(
                "window {:?} (dilation {:?}, pads {:?}) does not fit a {h}x{w} input",
                self.kernel, self.dilation, self.pads
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_sizes_follow_onnx() {
        // ResNet stem: 224, k7, s2, pad 3 → 112. MaxPool k3 s2 pad 1: 112 → 56.
        assert_eq!(
            Window::new(7, 7)
                .stride(2, 2)
                .pads([3; 4])
                .output_hw(224, 224)
                .unwrap(),
            (112, 112)
        );
        assert_eq!(
            Window::new(3, 3)
                .stride(2, 2)
                .pads([1; 4])
                .output_hw(112, 112)
                .unwrap(),
            (56, 56)
        );
        // Dilation 2 widens a 3-tap window to 5; asymmetric pads add up.
        assert_eq!(
            Window::new(3, 3)
                .dilation(2, 2)
                .pads([0, 1, 1, 0])
                .output_hw(9, 9)
                .unwrap(),
            (6, 6)
        );
        assert!(Window::new(5, 5).output_hw(3, 3).is_err());
        assert!(Window::new(3, 3).stride(0, 1).output_hw(9, 9).is_err());
    }
}
