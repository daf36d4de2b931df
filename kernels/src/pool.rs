//! u8 NHWC pooling: max pool, average pool and global average pool.
//!
//! This file owns the public API, the validation (every error is raised before anything
//! is written), the dispatch on [`isa::active`], the windowing drivers shared by every
//! rung and the portable (generic) rung. [`crate::reference::pool`] defines the results;
//! every rung matches it bit for bit.
//!
//! A rung supplies three channel-row primitives ([`PoolRows`]): an element-wise max, a
//! widening sum into i32 accumulators and a requantization of those accumulators. NHWC
//! keeps a pixel's channels contiguous, so each primitive is a straight vector loop over
//! channels; the drivers here walk the windows and hand the primitives whole rows.
//!
//! Arithmetic of the average pools, as the reference states it:
//! `acc = Σ (x − z_in)` over the in-bounds taps (exact in i32: validation bounds the tap
//! count), `multiplier = in_scale / (count as f32 · out_scale)` in f32, then
//! `q = requantize(acc, multiplier, z_out, qmin, qmax)` (round half to even). The drivers
//! compute `acc` as `Σ x − taps · z_in`, which is the same integer.

use std::ops::Range;

use crate::affine::{check_clamp, Affine};
use crate::epilogue;
use crate::error::KernelError;
use crate::isa::{self, Rung};
use crate::nhwc::{Nhwc, Window};

/// Quantization of an average pool: input and output parameters, and the output clamp
/// `[qmin, qmax]` (a fused ReLU when `qmin` is the output zero point).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PoolQuant {
    pub in_q: Affine,
    pub out_q: Affine,
    pub qmin: u8,
    pub qmax: u8,
}

/// Largest number of taps an average may cover: `Σ (x − z)` then fits in i32.
pub const MAX_AVG_TAPS: usize = (i32::MAX / 255) as usize;

/// Bound on `in_scale / out_scale`: above it the output grid is absurdly fine, and
/// bounding it keeps every intermediate finite (no inf · 0 or inf − inf NaNs).
pub(crate) const MAX_SCALE_RATIO: f32 = 18_446_744_073_709_551_616.0; // 2^64

/// Max pool over the in-bounds taps of each window (padding never wins, as ONNX's −∞
/// padding); dilation is honoured. The output keeps the input's quantization.
/// Returns the output shape and the name of the implementation that ran.
pub fn max_pool(
    input: &[u8],
    shape: Nhwc,
    window: &Window,
    out: &mut [u8],
) -> Result<(Nhwc, &'static str), KernelError> {
    max_pool_on(isa::active(), input, shape, window, out)
}

/// [`max_pool`] on a given rung (tests and benchmarks); an error if the CPU lacks it.
pub fn max_pool_on(
    rung: Rung,
    input: &[u8],
    shape: Nhwc,
    window: &Window,
    out: &mut [u8],
) -> Result<(Nhwc, &'static str), KernelError> {
    let out_shape = check_max_pool(input, shape, window, out)?;
    check_rung(rung)?;
    let name = match rung.borrowed() {
        #[cfg(target_arch = "x86_64")]
        Rung::Avx2 | Rung::Avx512Vnni if std::arch::is_x86_feature_detected!("avx2") => {
            // SAFETY: AVX2 was detected on this CPU just above.
            unsafe { crate::x86_64::qops::max_pool_avx2(input, shape, window, out_shape, out) };
            "avx2_maxpool_u8"
        }
        #[cfg(target_arch = "aarch64")]
        Rung::Neon | Rung::NeonDotprod => {
            // SAFETY: `check_rung` confirmed the rung, hence NEON, runs on this CPU.
            unsafe { crate::aarch64::qops::max_pool_neon(input, shape, window, out_shape, out) };
            "neon_maxpool_u8"
        }
        _ => {
            // SAFETY: the generic primitives have no CPU requirement.
            unsafe { max_pool_with::<Generic>(input, shape, window, out_shape, out) };
            "generic_maxpool_u8"
        }
    };
    Ok((out_shape, name))
}

/// Average pool: `acc = Σ (x − z_in)` over the in-bounds taps, divided by their number,
/// or by `kh·kw` when `count_include_pad` (padded taps then count as real zeros).
/// Dilation must be 1. Returns the output shape and the name of the implementation.
pub fn avg_pool(
    input: &[u8],
    shape: Nhwc,
    window: &Window,
    count_include_pad: bool,
    q: &PoolQuant,
    out: &mut [u8],
) -> Result<(Nhwc, &'static str), KernelError> {
    avg_pool_on(
        isa::active(),
        input,
        shape,
        window,
        count_include_pad,
        q,
        out,
    )
}

/// [`avg_pool`] on a given rung (tests and benchmarks); an error if the CPU lacks it.
pub fn avg_pool_on(
    rung: Rung,
    input: &[u8],
    shape: Nhwc,
    window: &Window,
    count_include_pad: bool,
    q: &PoolQuant,
    out: &mut [u8],
) -> Result<(Nhwc, &'static str), KernelError> {
    let out_shape = check_avg_pool(input, shape, window, q, out)?;
    check_rung(rung)?;
    let job = AvgJob {
        input,
        shape,
        window,
        out_shape,
        count_include_pad,
        q,
    };
    let name = match rung.borrowed() {
        #[cfg(target_arch = "x86_64")]
        Rung::Avx2 | Rung::Avx512Vnni if std::arch::is_x86_feature_detected!("avx2") => {
            // SAFETY: AVX2 was detected on this CPU just above.
            unsafe { crate::x86_64::qops::avg_pool_avx2(&job, out) };
            "avx2_avgpool_u8"
        }
        #[cfg(target_arch = "aarch64")]
        Rung::Neon | Rung::NeonDotprod => {
            // SAFETY: `check_rung` confirmed the rung, hence NEON, runs on this CPU.
            unsafe { crate::aarch64::qops::avg_pool_neon(&job, out) };
            "neon_avgpool_u8"
        }
        _ => {
            // SAFETY: the generic primitives have no CPU requirement.
            unsafe { avg_pool_with::<Generic>(&job, out) };
            "generic_avgpool_u8"
        }
    };
    Ok((out_shape, name))
}

/// Global average pool: the average of all `h·w` pixels of each channel (count `h·w`),
/// with the same arithmetic as [`avg_pool`]. The output shape is `(n, 1, 1, c)`.
pub fn global_avg_pool(
    input: &[u8],
    shape: Nhwc,
    q: &PoolQuant,
    out: &mut [u8],
) -> Result<(Nhwc, &'static str), KernelError> {
    global_avg_pool_on(isa::active(), input, shape, q, out)
}

/// [`global_avg_pool`] on a given rung (tests and benchmarks); an error if the CPU lacks it.
pub fn global_avg_pool_on(
    rung: Rung,
    input: &[u8],
    shape: Nhwc,
    q: &PoolQuant,
    out: &mut [u8],
) -> Result<(Nhwc, &'static str), KernelError> {
    let out_shape = check_global_avg_pool(input, shape, q, out)?;
    check_rung(rung)?;
    let name = match rung.borrowed() {
        #[cfg(target_arch = "x86_64")]
        Rung::Avx2 | Rung::Avx512Vnni if std::arch::is_x86_feature_detected!("avx2") => {
            // SAFETY: AVX2 was detected on this CPU just above.
            unsafe { crate::x86_64::qops::global_avg_pool_avx2(input, shape, q, out) };
            "avx2_global_avgpool_u8"
        }
        #[cfg(target_arch = "aarch64")]
        Rung::Neon | Rung::NeonDotprod => {
            // SAFETY: `check_rung` confirmed the rung, hence NEON, runs on this CPU.
            unsafe { crate::aarch64::qops::global_avg_pool_neon(input, shape, q, out) };
            "neon_global_avgpool_u8"
        }
        _ => {
            // SAFETY: the generic primitives have no CPU requirement.
            unsafe { global_avg_pool_with::<Generic>(input, shape, q, out) };
            "generic_global_avgpool_u8"
        }
    };
    Ok((out_shape, name))
}

// ---------------------------------------------------------------------------------------
// Validation (shared with the reference).

/// Refuses a rung this CPU cannot run (only reachable through the `*_on` entry points).
pub(crate) fn check_rung(rung: Rung) -> Result<(), KernelError> {
    match rung.unavailable_reason() {
        None => Ok(()),
        Some(why) => Err(KernelError::Param(format!("rung {rung}: {why}"))),
    }
}

/// Checks input, window and output of a max pool; returns the output shape.
pub(crate) fn check_max_pool(
    input: &[u8],
    shape: Nhwc,
    window: &Window,
    out: &[u8],
) -> Result<Nhwc, KernelError> {
    shape.check("max_pool input", input.len())?;
    let out_shape = check_window(shape, window)?;
    out_shape.check("max_pool output", out.len())?;
    Ok(out_shape)
}

/// Checks input, window, quantization and output of an average pool.
pub(crate) fn check_avg_pool(
    input: &[u8],
    shape: Nhwc,
    window: &Window,
    q: &PoolQuant,
    out: &[u8],
) -> Result<Nhwc, KernelError> {
    shape.check("avg_pool input", input.len())?;
    if window.dilation != [1, 1] {
        return Err(KernelError::Param(format!(
            "avg_pool: dilation {:?} is not supported (only 1)",
            window.dilation
        )));
    }
    let taps = window.kernel[0].saturating_mul(window.kernel[1]);
    if taps > MAX_AVG_TAPS {
        return Err(KernelError::Param(format!(
            "avg_pool: a {:?} kernel has {taps} taps, more than {MAX_AVG_TAPS} (the i32 accumulator could overflow)",
            window.kernel
        )));
    }
    let out_shape = check_window(shape, window)?;
    check_quant("avg_pool", q)?;
    out_shape.check("avg_pool output", out.len())?;
    Ok(out_shape)
}

/// Checks input, quantization and output of a global average pool.
pub(crate) fn check_global_avg_pool(
    input: &[u8],
    shape: Nhwc,
    q: &PoolQuant,
    out: &[u8],
) -> Result<Nhwc, KernelError> {
    shape.check("global_avg_pool input", input.len())?;
    let pixels = shape.h * shape.w;
    if pixels == 0 {
        return Err(KernelError::Shape(format!(
            "global_avg_pool input: {}x{} has no pixels to average",
            shape.h, shape.w
        )));
    }
    if pixels > MAX_AVG_TAPS {
        return Err(KernelError::Shape(format!(
            "global_avg_pool input: {pixels} pixels, more than {MAX_AVG_TAPS} (the i32 accumulator could overflow)"
        )));
    }
    check_quant("global_avg_pool", q)?;
    let out_shape = Nhwc::new(shape.n, 1, 1, shape.c);
    out_shape.check("global_avg_pool output", out.len())?;
    Ok(out_shape)
}

fn check_quant(op: &str, q: &PoolQuant) -> Result<(), KernelError> {
    q.in_q.check(&format!("{op} input quantization"))?;
    q.out_q.check(&format!("{op} output quantization"))?;
    check_clamp(q.qmin, q.qmax)?;
    check_scale_ratio(op, "input", q.in_q.scale, q.out_q.scale)
}

/// Checks `scale / out_scale` stays at most [`MAX_SCALE_RATIO`].
pub(crate) fn check_scale_ratio(
    op: &str,
    what: &str,
    scale: f32,
    out_scale: f32,
) -> Result<(), KernelError> {
    let ratio = scale / out_scale;
    if ratio <= MAX_SCALE_RATIO {
        Ok(())
    } else {
        Err(KernelError::Param(format!(
            "{op}: {what} scale {scale} / output scale {out_scale} = {ratio} exceeds 2^64"
        )))
    }
}

/// Output shape of `window` over `shape`, refusing windows with no in-bounds tap.
fn check_window(shape: Nhwc, window: &Window) -> Result<Nhwc, KernelError> {
    let (oh, ow) = window.output_hw(shape.h, shape.w)?;
    for oy in 0..oh {
        if taps_y(window, oy, shape.h).is_empty() {
            return Err(KernelError::Shape(format!(
                "window {:?} (stride {:?}, dilation {:?}, pads {:?}): output row {oy} covers only padding of a {}x{} input",
                window.kernel, window.stride, window.dilation, window.pads, shape.h, shape.w
            )));
        }
    }
    for ox in 0..ow {
        if taps_x(window, ox, shape.w).is_empty() {
            return Err(KernelError::Shape(format!(
                "window {:?} (stride {:?}, dilation {:?}, pads {:?}): output column {ox} covers only padding of a {}x{} input",
                window.kernel, window.stride, window.dilation, window.pads, shape.h, shape.w
            )));
        }
    }
    Ok(Nhwc::new(shape.n, oh, ow, shape.c))
}

// ---------------------------------------------------------------------------------------
// Windowing.

/// Kernel indices `k` whose tap `o·stride + k·dilation − pad` lies in `0..len`: a range,
/// since the tap position grows with `k`. Empty when the window sees only padding.
fn tap_range(o: usize, stride: usize, pad: usize, k: usize, d: usize, len: usize) -> Range<usize> {
    let start = o * stride; // window origin in padded coordinates
    let lo = pad.saturating_sub(start).div_ceil(d);
    let hi = (pad + len).saturating_sub(start).div_ceil(d).min(k);
    lo..hi.max(lo)
}

fn taps_y(w: &Window, oy: usize, h: usize) -> Range<usize> {
    tap_range(oy, w.stride[0], w.pads[0], w.kernel[0], w.dilation[0], h)
}

fn taps_x(w: &Window, ox: usize, width: usize) -> Range<usize> {
    tap_range(
        ox,
        w.stride[1],
        w.pads[1],
        w.kernel[1],
        w.dilation[1],
        width,
    )
}

/// Calls `f(pixel, taps)` for every output pixel (index `(n·oh + oy)·ow + ox`) with the
/// input offsets of channel 0 of its in-bounds taps (never empty after validation).
#[inline(always)]
fn for_each_window(
    shape: Nhwc,
    window: &Window,
    out_shape: Nhwc,
    mut f: impl FnMut(usize, &[usize]),
) {
    let mut taps = Vec::with_capacity(window.kernel[0] * window.kernel[1]);
    let [sh, sw] = window.stride;
    let [dh, dw] = window.dilation;
    let mut pixel = 0;
    for n in 0..shape.n {
        for oy in 0..out_shape.h {
            let ys = taps_y(window, oy, shape.h);
            for ox in 0..out_shape.w {
                let xs = taps_x(window, ox, shape.w);
                taps.clear();
                for ky in ys.clone() {
                    let iy = oy * sh + ky * dh - window.pads[0];
                    for kx in xs.clone() {
                        let ix = ox * sw + kx * dw - window.pads[1];
                        taps.push(shape.index(n, iy, ix, 0));
                    }
                }
                f(pixel, &taps);
                pixel += 1;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Drivers, generic over a rung's channel-row primitives.

/// Requantization of one row of accumulators:
/// `dst[i] = requantize(acc[i] + offset, multiplier, zero_point, qmin, qmax)`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RowRequant {
    pub offset: i32,
    pub multiplier: f32,
    pub zero_point: i32,
    pub qmin: i32,
    pub qmax: i32,
}

impl RowRequant {
    /// One value, exactly as [`epilogue::requantize`]; SIMD rungs use it for tails.
    #[inline(always)]
    pub(crate) fn one(&self, acc: i32) -> u8 {
        epilogue::requantize(
            acc,
            self.offset,
            self.multiplier,
            self.zero_point,
            self.qmin,
            self.qmax,
        )
    }
}

/// The channel-row primitives a rung supplies. Each works on the common length of its
/// slices, so no call can read or write out of bounds.
pub(crate) trait PoolRows {
    /// `dst[i] = max(dst[i], src[i])`.
    ///
    /// # Safety
    /// The CPU supports the implementation's instruction set.
    unsafe fn max_row(dst: &mut [u8], src: &[u8]);

    /// `acc[i] += src[i]` (the caller guarantees no overflow).
    ///
    /// # Safety
    /// The CPU supports the implementation's instruction set.
    unsafe fn sum_row(acc: &mut [i32], src: &[u8]);

    /// `dst[i] = r.one(acc[i])`.
    ///
    /// # Safety
    /// The CPU supports the implementation's instruction set.
    unsafe fn requant_row(acc: &[i32], r: &RowRequant, dst: &mut [u8]);
}

/// Max pool driver; `out_shape` and the buffers are validated.
///
/// # Safety
/// The CPU supports `R`'s instruction set.
#[inline(always)]
pub(crate) unsafe fn max_pool_with<R: PoolRows>(
    input: &[u8],
    shape: Nhwc,
    window: &Window,
    out_shape: Nhwc,
    out: &mut [u8],
) {
    let c = shape.c;
    if c == 0 {
        return;
    }
    for_each_window(shape, window, out_shape, |pixel, taps| {
        let dst = &mut out[pixel * c..][..c];
        dst.copy_from_slice(&input[taps[0]..][..c]);
        for &t in &taps[1..] {
            // SAFETY: the CPU supports R's instruction set (caller's contract).
            unsafe { R::max_row(dst, &input[t..][..c]) };
        }
    });
}

/// An average pool call, validated.
pub(crate) struct AvgJob<'a> {
    pub input: &'a [u8],
    pub shape: Nhwc,
    pub window: &'a Window,
    pub out_shape: Nhwc,
    pub count_include_pad: bool,
    pub q: &'a PoolQuant,
}

/// Average pool driver.
///
/// # Safety
/// The CPU supports `R`'s instruction set.
#[inline(always)]
pub(crate) unsafe fn avg_pool_with<R: PoolRows>(job: &AvgJob, out: &mut [u8]) {
    let c = job.shape.c;
    if c == 0 {
        return;
    }
    let q = job.q;
    let full = job.window.kernel[0] * job.window.kernel[1];
    let mut acc = vec![0i32; c];
    for_each_window(job.shape, job.window, job.out_shape, |pixel, taps| {
        acc.fill(0);
        for &t in taps {
            // SAFETY: the CPU supports R's instruction set (caller's contract).
            unsafe { R::sum_row(&mut acc, &job.input[t..][..c]) };
        }
        let count = if job.count_include_pad {
            full
        } else {
            taps.len()
        };
        let r = row_requant(taps.len(), count, q);
        // SAFETY: as above.
        unsafe { R::requant_row(&acc, &r, &mut out[pixel * c..][..c]) };
    });
}

/// Global average pool driver.
///
/// # Safety
/// The CPU supports `R`'s instruction set.
#[inline(always)]
pub(crate) unsafe fn global_avg_pool_with<R: PoolRows>(
    input: &[u8],
    shape: Nhwc,
    q: &PoolQuant,
    out: &mut [u8],
) {
    let c = shape.c;
    if c == 0 {
        return;
    }
    let pixels = shape.h * shape.w;
    let r = row_requant(pixels, pixels, q);
    let mut acc = vec![0i32; c];
    for (image, dst) in input.chunks_exact(pixels * c).zip(out.chunks_exact_mut(c)) {
        acc.fill(0);
        for row in image.chunks_exact(c) {
            // SAFETY: the CPU supports R's instruction set (caller's contract).
            unsafe { R::sum_row(&mut acc, row) };
        }
        // SAFETY: as above.
        unsafe { R::requant_row(&acc, &r, dst) };
    }
}

/// Requantization of `Σ x` over `taps` inputs averaged over `count`: the offset
/// `−taps · z_in` turns `Σ x` into `Σ (x − z_in)`; the multiplier is the contract's.
fn row_requant(taps: usize, count: usize, q: &PoolQuant) -> RowRequant {
    RowRequant {
        // Exact: taps ≤ MAX_AVG_TAPS and z_in ≤ 255.
        offset: -(taps as i32 * q.in_q.zero_point),
        multiplier: q.in_q.scale / (count as f32 * q.out_q.scale),
        zero_point: q.out_q.zero_point,
        qmin: i32::from(q.qmin),
        qmax: i32::from(q.qmax),
    }
}

// ---------------------------------------------------------------------------------------
// The generic rung.

/// Portable primitives: plain loops (the compiler may vectorise them for the baseline ISA).
pub(crate) struct Generic;

impl PoolRows for Generic {
    #[inline(always)]
    unsafe fn max_row(dst: &mut [u8], src: &[u8]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = (*d).max(s);
        }
    }

    #[inline(always)]
    unsafe fn sum_row(acc: &mut [i32], src: &[u8]) {
        for (a, &s) in acc.iter_mut().zip(src) {
            *a += i32::from(s);
        }
    }

    #[inline(always)]
    unsafe fn requant_row(acc: &[i32], r: &RowRequant, dst: &mut [u8]) {
        for (d, &a) in dst.iter_mut().zip(acc) {
            *d = r.one(a);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_ranges_clip_to_the_input() {
        // k3 pad 1 on 4 wide: first window loses its first tap, last keeps 2 at stride 2.
        assert_eq!(tap_range(0, 1, 1, 3, 1, 4), 1..3);
        assert_eq!(tap_range(1, 1, 1, 3, 1, 4), 0..3);
        assert_eq!(tap_range(3, 1, 1, 3, 1, 4), 0..2);
        // Dilation 2: taps at −1, 1, 3 of a 1-wide input: none.
        assert!(tap_range(0, 1, 1, 3, 2, 1).is_empty());
        // Pads larger than the kernel: the window sees only padding.
        assert!(tap_range(0, 1, 3, 2, 1, 5).is_empty());
    }
}
