//! Reference elementwise add: the naive loop that defines [`crate::eltwise::add`].
//!
//! `x = (a − za) as f32 · (sa / so)`, `y = (b − zb) as f32 · (sb / so)` (each ratio
//! computed once, in f32), `v = x + y` (two multiplies and an add, never an FMA), then
//! `q = round_half_even(v)` converted to i32 saturating, `q + zo` saturating, clamped to
//! `[qmin, qmax]`. Validation is shared with the fast path.

use crate::eltwise::{check_add, AddQuant};
use crate::error::KernelError;

/// Reference add of two same-length u8 tensors.
pub fn add(a: &[u8], b: &[u8], q: &AddQuant, out: &mut [u8]) -> Result<(), KernelError> {
    check_add(a, b, q, out)?;
    let ratio_a = q.a_q.scale / q.out_q.scale;
    let ratio_b = q.b_q.scale / q.out_q.scale;
    for i in 0..out.len() {
        let x = (i32::from(a[i]) - q.a_q.zero_point) as f32 * ratio_a;
        let y = (i32::from(b[i]) - q.b_q.zero_point) as f32 * ratio_b;
        let v = x + y;
        let r = v.round_ties_even() as i32; // `as` saturates out-of-range floats
        let r = r.saturating_add(q.out_q.zero_point);
        out[i] = r.clamp(i32::from(q.qmin), i32::from(q.qmax)) as u8;
    }
    Ok(())
}
