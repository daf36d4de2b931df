//! Shared test support: the workspace's seeded generator, the rungs under test, and `check_case`, which
//! runs one GEMM case through all three output stages on a rung and compares every output
//! bit for bit with the reference, with poisoned output buffers.

#![allow(dead_code)]

use qbench_kernels::gemm::kernels_of;
use qbench_kernels::{
    gemm, isa, reference, ActZeroPoints, Dequant, MatA, MatB, PackedB, Requant, Rung, Scales,
};

/// The workspace's seeded generator ([`qbench_kernels::rng`]) with the draws the kernel
/// tests use.
pub struct Rng(qbench_kernels::rng::Rng);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(qbench_kernels::rng::Rng::new(seed))
    }
    pub fn next(&mut self) -> u64 {
        self.0.next_u64()
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn u8_up_to(&mut self, max: u8) -> u8 {
        self.below(u64::from(max) + 1) as u8
    }
    pub fn i8(&mut self) -> i8 {
        self.next() as i8
    }
    pub fn f32_in(&mut self, lo: f32, hi: f32) -> f32 {
        self.0.uniform_f32(lo, hi)
    }
}

/// The rungs this test run covers: only the forced one when `QBENCH_KERNEL` is set (CI
/// runs the suite once per rung), else every rung this CPU supports.
pub fn rungs_under_test() -> Vec<Rung> {
    let selection = isa::selection();
    if selection.requested.is_some() {
        vec![selection.active]
    } else {
        isa::ladder()
            .iter()
            .copied()
            .filter(|r| r.is_available())
            .collect()
    }
}

/// One GEMM problem with every parameter the contract has.
#[derive(Clone, Debug)]
pub struct Case {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: Vec<u8>,
    pub a_stride: usize,
    pub a_zero: Vec<i32>, // 1 (per tensor) or m values
    pub w: Vec<i8>,
    pub w_transposed: bool,
    pub w_zero: Vec<i32>,  // 1 or n values
    pub a_scale: Vec<f32>, // 1 or m values
    pub w_scale: Vec<f32>, // 1 or n values
    pub bias_f32: Option<Vec<f32>>,
    pub bias_i32: Option<Vec<i32>>,
    pub multiplier: Vec<f32>, // 1 or n values
    pub out_zero: i32,
    pub qmin: u8,
    pub qmax: u8,
}

impl Case {
    /// A random case of the given shape; `max_a` bounds the activations (127 = 7-bit).
    pub fn random(rng: &mut Rng, m: usize, n: usize, k: usize, max_a: u8) -> Case {
        let a_stride = k + rng.below(3) as usize;
        let per_row = rng.below(2) == 0;
        let per_col = rng.below(2) == 0;
        let a_zero = (0..if per_row { m } else { 1 })
            .map(|_| i32::from(rng.u8_up_to(max_a)))
            .collect();
        let w_zero = if rng.below(3) == 0 {
            (0..if per_col { n } else { 1 })
                .map(|_| i32::from(rng.i8()))
                .collect()
        } else {
            vec![0]
        };
        let qmin = rng.u8_up_to(100);
        let qmax = 155 + rng.u8_up_to(100);
        Case {
            m,
            n,
            k,
            a: (0..m.saturating_sub(1) * a_stride + k)
                .map(|_| rng.u8_up_to(max_a))
                .collect(),
            a_stride,
            a_zero,
            w: (0..k * n).map(|_| rng.i8()).collect(),
            w_transposed: rng.below(2) == 0,
            w_zero,
            a_scale: (0..if per_row { m } else { 1 })
                .map(|_| rng.f32_in(1e-3, 0.1))
                .collect(),
            w_scale: (0..if per_col { n } else { 1 })
                .map(|_| rng.f32_in(1e-3, 0.1))
                .collect(),
            bias_f32: (rng.below(2) == 0)
                .then(|| (0..n).map(|_| rng.f32_in(-10.0, 10.0)).collect()),
            bias_i32: (rng.below(2) == 0)
                .then(|| (0..n).map(|_| rng.below(20_001) as i32 - 10_000).collect()),
            multiplier: (0..if per_col { n } else { 1 })
                .map(|_| rng.f32_in(1e-5, 1e-2) / (k.max(1) as f32).sqrt())
                .collect(),
            out_zero: i32::from(rng.u8_up_to(255)),
            qmin,
            qmax,
        }
    }

    pub fn mat_a(&self) -> MatA<'_> {
        MatA {
            data: &self.a,
            rows: self.m,
            cols: self.k,
            stride: self.a_stride,
            zero_point: if self.a_zero.len() == 1 {
                ActZeroPoints::PerTensor(self.a_zero[0])
            } else {
                ActZeroPoints::PerRow(&self.a_zero)
            },
        }
    }

    pub fn mat_b(&self) -> MatB<'_> {
        MatB {
            data: &self.w,
            rows: self.k,
            cols: self.n,
            zero_points: &self.w_zero,
            transposed: self.w_transposed,
        }
    }

    pub fn dequant(&self) -> Dequant<'_> {
        Dequant {
            a_scale: if self.a_scale.len() == 1 {
                Scales::PerTensor(self.a_scale[0])
            } else {
                Scales::PerRow(&self.a_scale)
            },
            b_scale: &self.w_scale,
            bias: self.bias_f32.as_deref(),
        }
    }

    pub fn requant(&self) -> Requant<'_> {
        Requant {
            bias: self.bias_i32.as_deref(),
            multiplier: &self.multiplier,
            out_zero_point: self.out_zero,
            qmin: self.qmin,
            qmax: self.qmax,
        }
    }
}

/// The thread counts every case runs at: the calling thread alone, and splits into two
/// and three bands of rows (forced even on small shapes by `split_every_call`).
pub const THREAD_COUNTS: [usize; 3] = [1, 2, 3];

/// Runs `case` on `rung` through all three output stages, on each of [`THREAD_COUNTS`],
/// and asserts bit-exact equality with the reference. Outputs are written at a stride
/// wider than n into poisoned buffers; every value outside the m×n window must come back
/// untouched. Returns the kernel names.
pub fn check_case(rung: Rung, case: &Case) -> Vec<&'static str> {
    gemm::split_every_call();
    let mut names = Vec::new();
    for threads in THREAD_COUNTS {
        names = check_case_on(rung, case, threads);
    }
    names
}

fn check_case_on(rung: Rung, case: &Case, threads: usize) -> Vec<&'static str> {
    let (m, n) = (case.m, case.n);
    let ldc = n + 3;
    let len = m * ldc + 5;
    let packed = PackedB::for_rung(&case.mat_b(), rung).expect("pack");
    let a = case.mat_a();
    let b = case.mat_b();
    let mut names = Vec::new();

    const POISON_I32: i32 = 0x5A5A_5A5A;
    let mut want = vec![POISON_I32; len];
    let mut got = vec![POISON_I32; len];
    reference::gemm_i32(&a, &b, &mut want, ldc).unwrap();
    names.push(gemm::gemm_i32(&a, &packed, &mut got, ldc, threads).unwrap());
    assert_eq!(
        got,
        want,
        "i32 output differs on {rung} on {threads} threads for {}",
        describe(case)
    );

    let poison_f32 = f32::from_bits(0x7FC0_DEAD); // a NaN with a recognisable payload
    let mut want = vec![poison_f32; len];
    let mut got = vec![poison_f32; len];
    reference::gemm_dequant(&a, &b, &case.dequant(), &mut want, ldc).unwrap();
    names.push(gemm::gemm_dequant(&a, &packed, &case.dequant(), &mut got, ldc, threads).unwrap());
    let want_bits: Vec<u32> = want.iter().map(|v| v.to_bits()).collect();
    let got_bits: Vec<u32> = got.iter().map(|v| v.to_bits()).collect();
    assert_eq!(
        got_bits,
        want_bits,
        "dequantized output differs on {rung} on {threads} threads for {}",
        describe(case)
    );

    let mut want = vec![0xA5u8; len];
    let mut got = vec![0xA5u8; len];
    reference::gemm_requant(&a, &b, &case.requant(), &mut want, ldc).unwrap();
    names.push(gemm::gemm_requant(&a, &packed, &case.requant(), &mut got, ldc, threads).unwrap());
    assert_eq!(
        got,
        want,
        "requantized output differs on {rung} on {threads} threads for {}",
        describe(case)
    );

    // The domain is decided by the elements of the matrix, not the bytes between rows.
    let max = (0..m)
        .flat_map(|r| &case.a[r * case.a_stride..r * case.a_stride + case.k])
        .copied()
        .max()
        .unwrap_or(0);
    for name in &names {
        let info = kernels_of(rung)
            .into_iter()
            .find(|k| k.name == *name)
            .expect("kernel is registered");
        assert!(
            max <= info.max_activation,
            "{name} ran on activations up to {max}, outside its domain"
        );
    }
    names
}

fn describe(case: &Case) -> String {
    format!(
        "m={} n={} k={} a_stride={} za={:?} zw={:?} transposed={} qmin={} qmax={}",
        case.m,
        case.n,
        case.k,
        case.a_stride,
        &case.a_zero[..case.a_zero.len().min(4)],
        &case.w_zero[..case.w_zero.len().min(4)],
        case.w_transposed,
        case.qmin,
        case.qmax
    )
}
