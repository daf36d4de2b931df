//! The fp32 row math (`fmath`): `exp` within 2 ulp of f64's over its whole range and
//! exact at its special values; softmax, layer norm and GELU close to an f64 evaluation;
//! the finiteness scan right at every position; and every vector build this CPU runs
//! bit-identical to the portable one on random rows of every length around the lane
//! count (masked attention scores and NaN rows included).

mod common;

use common::Rng;
use qbench_kernels::fmath::{
    self, all_finite_on, exp, gelu_erf_on, layer_norm_rows_on, softmax_rows_on, Width, LANES,
};

/// Distance in units in the last place between two finite f32 of the same sign.
fn ulps(a: f32, b: f32) -> u32 {
    (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
}

#[test]
fn exp_is_within_2_ulp_of_f64_over_the_normal_range() {
    let mut rng = Rng::new(7);
    let mut worst = (0u32, 0f32);
    let mut check = |x: f32| {
        let want = f64::from(x).exp() as f32;
        let got = exp(x);
        let d = ulps(got, want);
        if d > worst.0 {
            worst = (d, x);
        }
    };
    // A dense even grid, then random bit patterns inside the range.
    let (lo, hi) = (-87.33f32, 88.72f32);
    let steps = 2_000_000;
    for i in 0..=steps {
        check(lo + (hi - lo) * (i as f32 / steps as f32));
    }
    for _ in 0..2_000_000 {
        let x = f32::from_bits(rng.next() as u32);
        if x.is_finite() && (lo..=hi).contains(&x) {
            check(x);
        }
    }
    assert!(worst.0 <= 2, "exp({}) is {} ulp off", worst.1, worst.0);
}

#[test]
fn exp_special_values() {
    assert_eq!(exp(0.0), 1.0);
    assert_eq!(exp(-0.0), 1.0);
    assert_eq!(exp(f32::NEG_INFINITY), 0.0);
    assert_eq!(
        exp(-88.0),
        0.0,
        "below the smallest normal result: flushed to 0"
    );
    assert_eq!(exp(f32::MIN), 0.0);
    assert_eq!(exp(f32::INFINITY), f32::INFINITY);
    assert_eq!(exp(89.0), f32::INFINITY);
    assert!(exp(f32::NAN).is_nan());
    // The top of the range, where 2^n needs n = 128: finite and close to f64.
    let x = 88.72f32;
    assert!(exp(x).is_finite());
    assert!(ulps(exp(x), f64::from(x).exp() as f32) <= 2);
}

/// Random rows: ordinary scores, masked keys (the additive f32::MIN mask), a row of NaN,
/// constant rows, lengths 1..=3·LANES+1 and the sizes MiniLM uses.
fn rows(rng: &mut Rng) -> Vec<(usize, Vec<f32>)> {
    let mut out = Vec::new();
    let lens: Vec<usize> = (1..=3 * LANES + 1).chain([128, 384]).collect();
    for &n in &lens {
        let r = 3;
        let mut x: Vec<f32> = (0..n * r).map(|_| rng.f32_in(-12.0, 12.0)).collect();
        if n > 2 {
            x[n - 1] += f32::MIN; // a masked key in the first row
            x[2 * n] = f32::NAN; // the third row is NaN
        }
        out.push((n, x));
        out.push((n, vec![0.5; n * 2]));
    }
    out
}

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

#[test]
fn every_width_gives_the_portable_bits() {
    let widths = Width::available();
    let mut rng = Rng::new(11);
    for (n, x) in rows(&mut rng) {
        let g: Vec<f32> = (0..n).map(|_| rng.f32_in(0.5, 1.5)).collect();
        let b: Vec<f32> = (0..n).map(|_| rng.f32_in(-1.0, 1.0)).collect();
        let mut want_sm = vec![0f32; x.len()];
        softmax_rows_on(Width::Portable, &x, &mut want_sm, n);
        let mut want_ln = x.clone();
        layer_norm_rows_on(Width::Portable, &mut want_ln, &g, &b, 1e-12);
        let mut want_gelu = x.clone();
        gelu_erf_on(Width::Portable, &mut want_gelu);
        for &w in &widths {
            let mut sm = vec![f32::NAN; x.len()];
            softmax_rows_on(w, &x, &mut sm, n);
            assert!(same_bits(&sm, &want_sm), "softmax {w:?}, n = {n}");
            let mut ln = x.clone();
            layer_norm_rows_on(w, &mut ln, &g, &b, 1e-12);
            assert!(same_bits(&ln, &want_ln), "layer norm {w:?}, n = {n}");
            let mut ge = x.clone();
            gelu_erf_on(w, &mut ge);
            assert!(same_bits(&ge, &want_gelu), "gelu {w:?}, n = {n}");
            assert_eq!(
                all_finite_on(w, &x),
                all_finite_on(Width::Portable, &x),
                "all_finite {w:?}, n = {n}"
            );
        }
    }
    // The dispatching entry points run one of these builds.
    let x: Vec<f32> = (0..40).map(|i| i as f32 * 0.25 - 5.0).collect();
    let (mut a, mut b) = (vec![0f32; 40], vec![0f32; 40]);
    fmath::softmax_rows(&x, &mut a, 20);
    softmax_rows_on(Width::Portable, &x, &mut b, 20);
    assert!(same_bits(&a, &b));
}

#[test]
fn softmax_rows_match_f64() {
    let mut rng = Rng::new(3);
    for n in [1, 5, 16, 17, 33, 128] {
        let x: Vec<f32> = (0..n * 4).map(|_| rng.f32_in(-20.0, 20.0)).collect();
        let mut y = vec![0f32; x.len()];
        fmath::softmax_rows(&x, &mut y, n);
        for (xr, yr) in x.chunks(n).zip(y.chunks(n)) {
            // x − max rounded to f32 as the kernel must (an error of up to |x − max|·2⁻²⁴
            // in the exponent that no exp could undo); everything after it in f64.
            let m = xr.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let e: Vec<f64> = xr.iter().map(|&v| f64::from(v - m).exp()).collect();
            let s: f64 = e.iter().sum();
            for (&got, &ei) in yr.iter().zip(&e) {
                let want = ei / s;
                assert!(
                    (f64::from(got) - want).abs() <= 2e-6 * want.max(1e-30) + 1e-38,
                    "n = {n}: {got} vs {want}"
                );
            }
        }
    }
    // A masked key weighs exactly 0; a NaN row stays NaN.
    let x = [1.0, 2.0, 3.0 + f32::MIN, f32::NAN, 0.0, 0.0];
    let mut y = [0f32; 6];
    fmath::softmax_rows(&x, &mut y, 3);
    assert_eq!(y[2], 0.0);
    assert!((y[0] + y[1] - 1.0).abs() < 1e-6);
    assert!(y[3..].iter().all(|v| v.is_nan()));
}

#[test]
fn layer_norm_rows_match_f64() {
    let mut rng = Rng::new(5);
    for n in [1, 7, 16, 31, 384] {
        // A large mean next to a small spread: the case the two-pass form is for.
        let x: Vec<f32> = (0..n * 3).map(|_| 1000.0 + rng.f32_in(-1.0, 1.0)).collect();
        let g: Vec<f32> = (0..n).map(|_| rng.f32_in(0.5, 1.5)).collect();
        let b: Vec<f32> = (0..n).map(|_| rng.f32_in(-1.0, 1.0)).collect();
        let mut y = x.clone();
        fmath::layer_norm_rows(&mut y, &g, &b, 1e-5);
        for (xr, yr) in x.chunks(n).zip(y.chunks(n)) {
            let mean = xr.iter().map(|&v| f64::from(v)).sum::<f64>() / n as f64;
            let var = xr
                .iter()
                .map(|&v| (f64::from(v) - mean).powi(2))
                .sum::<f64>()
                / n as f64;
            for i in 0..n {
                let want = (f64::from(xr[i]) - mean) / (var + 1e-5).sqrt() * f64::from(g[i])
                    + f64::from(b[i]);
                // f32 inputs near 1000 carry 6e-5 of rounding; relative to the spread
                // (≈0.58) that bounds the normalised error near 1e-3.
                assert!(
                    (f64::from(yr[i]) - want).abs() < 2e-3,
                    "n = {n}, i = {i}: {} vs {want}",
                    yr[i]
                );
            }
        }
    }
}

#[test]
fn gelu_matches_f64() {
    let x: Vec<f32> = (0..=4000).map(|i| -10.0 + i as f32 * 0.005).collect();
    let mut y = x.clone();
    fmath::gelu_erf(&mut y);
    for (&xi, &yi) in x.iter().zip(&y) {
        let v = f64::from(xi);
        let want = 0.5 * v * (1.0 + erf_f64(v / 2f64.sqrt()));
        assert!(
            (f64::from(yi) - want).abs() < 2e-6,
            "gelu({xi}) = {yi}, want {want}"
        );
    }
}

/// erf in f64 by its Taylor series (|x| ≤ 3) and the complementary continued fraction
/// beyond: independent of the f32 rational approximation under test.
fn erf_f64(x: f64) -> f64 {
    let a = x.abs();
    let r = if a <= 3.0 {
        let (mut term, mut sum, mut k) = (a, a, 0.0);
        while term.abs() > 1e-17 * sum.abs() {
            k += 1.0;
            term *= -a * a / k;
            sum += term / (2.0 * k + 1.0);
        }
        2.0 / std::f64::consts::PI.sqrt() * sum
    } else {
        // erfc(a) = exp(−a²)/√π · 1/(a + 1/2/(a + 1/(a + 3/2/(a + ...))))
        let mut f = a;
        for k in (1..60).rev() {
            f = a + (k as f64 / 2.0) / f;
        }
        1.0 - (-a * a).exp() / std::f64::consts::PI.sqrt() / f
    };
    r.copysign(x)
}

#[test]
fn all_finite_finds_every_bad_value_at_every_position() {
    for n in [1, LANES - 1, LANES, LANES + 1, 3 * LANES + 5] {
        let ok: Vec<f32> = (0..n)
            .map(|i| if i % 2 == 0 { f32::MAX } else { -f32::MAX })
            .collect();
        for w in Width::available() {
            assert!(all_finite_on(w, &ok), "{w:?} n = {n}");
            for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -f32::NAN] {
                for at in 0..n {
                    let mut x = ok.clone();
                    x[at] = bad;
                    assert!(!all_finite_on(w, &x), "{w:?} missed {bad} at {at} of {n}");
                }
            }
        }
    }
    assert!(fmath::all_finite(&[]));
}

/// A rung without row-math builds of its own (amx) uses the one of the rung it borrows
/// from: without that, the amx rung ran softmax, layer norm and GELU in portable code.
#[test]
fn the_active_width_follows_the_rung_it_borrows_from() {
    use qbench_kernels::{isa, Rung};
    let expected = match isa::active().borrowed() {
        Rung::Avx512Vnni => Width::Avx512,
        Rung::Avx2 => Width::Avx2,
        _ => Width::Portable,
    };
    assert_eq!(Width::active(), expected, "active rung {}", isa::active());
    if isa::active() == Rung::Amx {
        assert_eq!(Width::active(), Width::Avx512);
    }
}
