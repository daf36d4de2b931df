//! NEON pooling and elementwise-add kernels (`neon_maxpool_u8`, `neon_avgpool_u8`,
//! `neon_global_avgpool_u8`, `neon_add_u8`), run by both the neon and neon-dotprod rungs
//! (these ops have no dot products).
//!
//! This file owns the NEON channel-row primitives of [`PoolRows`] and the
//! `#[target_feature]` entry points that instantiate the shared drivers of
//! [`crate::pool`] with them, plus the whole add loop. Everything vectorises across
//! contiguous elements (channels in NHWC); tails shorter than a vector use the scalar
//! formula the generic rung uses, so they are exact by construction.
//!
//! Exactness of the vector requantization: i32 → f32 conversion, the f32 multiply and
//! add (separate `fmul`/`fadd`, never `fmla`), min/max and the clamp to ±2^30 are the same
//! IEEE operations as the scalar code; `fcvtns` (`vcvtnq_s32_f32`) rounds to nearest
//! even, so after the clamp it equals `round_ties_even() as i32`.

use core::arch::aarch64::{
    float32x4_t, int32x4_t, uint8x8_t, vaddq_f32, vaddq_s32, vaddw_high_u16, vaddw_u16,
    vcombine_s16, vcvtnq_s32_f32, vcvtq_f32_s32, vdupq_n_f32, vdupq_n_s32, vget_low_u16, vld1_u8,
    vld1q_s32, vld1q_u8, vmax_u8, vmaxq_f32, vmaxq_s32, vmaxq_u8, vminq_f32, vminq_s32,
    vmovl_high_u16, vmovl_u16, vmovl_u8, vmovn_s32, vmulq_f32, vqmovun_s16, vreinterpretq_s32_u32,
    vreinterpretq_u32_s32, vst1_u8, vst1q_s32, vst1q_u8, vsubq_s32,
};

use crate::eltwise::{AddConsts, LIMIT};
use crate::nhwc::{Nhwc, Window};
use crate::pool::{
    avg_pool_with, global_avg_pool_with, max_pool_with, AvgJob, PoolQuant, PoolRows, RowRequant,
};

/// NEON channel-row primitives.
struct Neon;

/// Splat constants of the final stage.
#[derive(Clone, Copy)]
struct Finish {
    lo: float32x4_t,
    hi: float32x4_t,
    zo: int32x4_t,
    qmin: int32x4_t,
    qmax: int32x4_t,
}

impl Finish {
    /// # Safety
    /// NEON is available.
    #[inline(always)]
    unsafe fn new(zo: i32, qmin: i32, qmax: i32) -> Finish {
        // SAFETY: NEON is available (caller's contract).
        unsafe {
            Finish {
                lo: vdupq_n_f32(-LIMIT),
                hi: vdupq_n_f32(LIMIT),
                zo: vdupq_n_s32(zo),
                qmin: vdupq_n_s32(qmin),
                qmax: vdupq_n_s32(qmax),
            }
        }
    }

    /// Rounds 4 finite f32 to nearest even, adds the zero point and clamps: the vector
    /// form of `(v.clamp(±2^30).round_ties_even() as i32 + zo).clamp(qmin, qmax)`.
    ///
    /// # Safety
    /// NEON is available.
    #[inline(always)]
    unsafe fn four(&self, v: float32x4_t) -> int32x4_t {
        // SAFETY: NEON is available (caller's contract).
        unsafe {
            let v = vminq_f32(vmaxq_f32(v, self.lo), self.hi);
            let q = vaddq_s32(vcvtnq_s32_f32(v), self.zo);
            vminq_s32(vmaxq_s32(q, self.qmin), self.qmax)
        }
    }

    /// Eight results (two halves, each in `qmin..=qmax`) narrowed to bytes.
    ///
    /// # Safety
    /// NEON is available.
    #[inline(always)]
    unsafe fn eight(&self, lo: float32x4_t, hi: float32x4_t) -> uint8x8_t {
        // SAFETY: NEON is available (caller's contract); values fit i16 and u8 exactly.
        unsafe {
            vqmovun_s16(vcombine_s16(
                vmovn_s32(self.four(lo)),
                vmovn_s32(self.four(hi)),
            ))
        }
    }
}

/// Loads 8 bytes at `p` and zero-extends them to two i32x4.
///
/// # Safety
/// NEON is available and `p` points to 8 readable bytes.
#[inline(always)]
unsafe fn load8_s32(p: *const u8) -> (int32x4_t, int32x4_t) {
    // SAFETY: NEON is available and 8 bytes are readable at p (caller's contract).
    unsafe {
        let w = vmovl_u8(vld1_u8(p));
        let lo = vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(w)));
        let hi = vreinterpretq_s32_u32(vmovl_high_u16(w));
        (lo, hi)
    }
}

impl PoolRows for Neon {
    #[inline(always)]
    unsafe fn max_row(dst: &mut [u8], src: &[u8]) {
        let n = dst.len().min(src.len());
        let (d, s) = (dst.as_mut_ptr(), src.as_ptr());
        let mut i = 0;
        // SAFETY: NEON is available (caller's contract); every access is within the first
        // n elements of both slices (i + 16 ≤ n, i + 8 ≤ n).
        unsafe {
            while i + 16 <= n {
                vst1q_u8(d.add(i), vmaxq_u8(vld1q_u8(d.add(i)), vld1q_u8(s.add(i))));
                i += 16;
            }
            if i + 8 <= n {
                vst1_u8(d.add(i), vmax_u8(vld1_u8(d.add(i)), vld1_u8(s.add(i))));
                i += 8;
            }
        }
        for (d, &s) in dst[i..n].iter_mut().zip(&src[i..n]) {
            *d = (*d).max(s);
        }
    }

    #[inline(always)]
    unsafe fn sum_row(acc: &mut [i32], src: &[u8]) {
        let n = acc.len().min(src.len());
        let (a, s) = (acc.as_mut_ptr(), src.as_ptr());
        let mut i = 0;
        // SAFETY: NEON is available (caller's contract); i + 8 ≤ n keeps the 8-byte load
        // and the two 4-lane i32 loads/stores inside both slices.
        unsafe {
            while i + 8 <= n {
                let w = vmovl_u8(vld1_u8(s.add(i)));
                let lo = vreinterpretq_u32_s32(vld1q_s32(a.add(i)));
                let hi = vreinterpretq_u32_s32(vld1q_s32(a.add(i + 4)));
                // Modular u32 addition is the i32 addition (no overflow: caller's contract).
                vst1q_s32(
                    a.add(i),
                    vreinterpretq_s32_u32(vaddw_u16(lo, vget_low_u16(w))),
                );
                vst1q_s32(a.add(i + 4), vreinterpretq_s32_u32(vaddw_high_u16(hi, w)));
                i += 8;
            }
        }
        for (a, &s) in acc[i..n].iter_mut().zip(&src[i..n]) {
            *a += i32::from(s);
        }
    }

    #[inline(always)]
    unsafe fn requant_row(acc: &[i32], r: &RowRequant, dst: &mut [u8]) {
        let n = acc.len().min(dst.len());
        let (a, d) = (acc.as_ptr(), dst.as_mut_ptr());
        let mut i = 0;
        // SAFETY: NEON is available (caller's contract); i + 8 ≤ n keeps the two 4-lane
        // i32 loads and the 8-byte store inside both slices.
        unsafe {
            let fin = Finish::new(r.zero_point, r.qmin, r.qmax);
            let offset = vdupq_n_s32(r.offset);
            let m = vdupq_n_f32(r.multiplier);
            while i + 8 <= n {
                let lo = vcvtq_f32_s32(vaddq_s32(vld1q_s32(a.add(i)), offset));
                let hi = vcvtq_f32_s32(vaddq_s32(vld1q_s32(a.add(i + 4)), offset));
                vst1_u8(d.add(i), fin.eight(vmulq_f32(lo, m), vmulq_f32(hi, m)));
                i += 8;
            }
        }
        for (d, &a) in dst[i..n].iter_mut().zip(&acc[i..n]) {
            *d = r.one(a);
        }
    }
}

/// NEON max pool over validated buffers.
///
/// # Safety
/// The CPU supports NEON.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn max_pool_neon(
    input: &[u8],
    shape: Nhwc,
    window: &Window,
    out_shape: Nhwc,
    out: &mut [u8],
) {
    // SAFETY: NEON is enabled on this function (caller's contract).
    unsafe { max_pool_with::<Neon>(input, shape, window, out_shape, out) }
}

/// NEON average pool over a validated job.
///
/// # Safety
/// The CPU supports NEON.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn avg_pool_neon(job: &AvgJob, out: &mut [u8]) {
    // SAFETY: NEON is enabled on this function (caller's contract).
    unsafe { avg_pool_with::<Neon>(job, out) }
}

/// NEON global average pool over validated buffers.
///
/// # Safety
/// The CPU supports NEON.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn global_avg_pool_neon(
    input: &[u8],
    shape: Nhwc,
    q: &PoolQuant,
    out: &mut [u8],
) {
    // SAFETY: NEON is enabled on this function (caller's contract).
    unsafe { global_avg_pool_with::<Neon>(input, shape, q, out) }
}

/// NEON add of two same-length u8 tensors, 8 elements per step.
///
/// # Safety
/// The CPU supports NEON.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn add_neon(a: &[u8], b: &[u8], k: &AddConsts, out: &mut [u8]) {
    let n = out.len().min(a.len()).min(b.len());
    let (pa, pb, po) = (a.as_ptr(), b.as_ptr(), out.as_mut_ptr());
    let mut i = 0;
    // SAFETY: NEON is enabled on this function (caller's contract); i + 8 ≤ n keeps the
    // 8-byte loads and the 8-byte store inside the three slices.
    unsafe {
        let fin = Finish::new(k.zo, k.qmin, k.qmax);
        let za = vdupq_n_s32(k.za);
        let zb = vdupq_n_s32(k.zb);
        let ra = vdupq_n_f32(k.ra);
        let rb = vdupq_n_f32(k.rb);
        // Two multiplies and an add per lane: no FMA, as the contract requires.
        let real = |x: int32x4_t, y: int32x4_t| {
            let x = vmulq_f32(vcvtq_f32_s32(vsubq_s32(x, za)), ra);
            let y = vmulq_f32(vcvtq_f32_s32(vsubq_s32(y, zb)), rb);
            vaddq_f32(x, y)
        };
        while i + 8 <= n {
            let (a_lo, a_hi) = load8_s32(pa.add(i));
            let (b_lo, b_hi) = load8_s32(pb.add(i));
            vst1_u8(po.add(i), fin.eight(real(a_lo, b_lo), real(a_hi, b_hi)));
            i += 8;
        }
    }
    for ((o, &a), &b) in out[i..n].iter_mut().zip(&a[i..n]).zip(&b[i..n]) {
        *o = k.one(a, b);
    }
}
