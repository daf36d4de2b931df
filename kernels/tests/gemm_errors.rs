//! Bad calls are refused with an error naming the parameter, and nothing is written.

use qbench_kernels::{
    gemm, ActZeroPoints, Dequant, KernelError, MatA, MatB, PackedB, Requant, Rung, Scales,
};

fn operands() -> (Vec<u8>, Vec<i8>) {
    (vec![3u8; 2 * 4], vec![1i8; 4 * 3])
}

#[test]
fn mismatched_k_is_a_shape_error() {
    let (a, w) = operands();
    let packed = PackedB::new(&MatB {
        data: &w,
        rows: 4,
        cols: 3,
        zero_points: &[0],
        transposed: false,
    })
    .unwrap();
    let mat_a = MatA::new(&a[..6], 2, 3, 0);
    let mut c = [7i32; 6];
    let err = gemm::gemm_i32(&mat_a, &packed, &mut c, 3, 1).unwrap_err();
    assert!(
        matches!(err, KernelError::Shape(_)) && err.to_string().contains("k = 4"),
        "{err}"
    );
    assert_eq!(c, [7; 6], "output was touched");
}

#[test]
fn bad_parameters_name_themselves() {
    let (a, w) = operands();
    let packed = PackedB::new(&MatB {
        data: &w,
        rows: 4,
        cols: 3,
        zero_points: &[0],
        transposed: false,
    })
    .unwrap();
    let mat_a = MatA::new(&a, 2, 4, 0);
    let mut c = [0f32; 6];
    let nan = Dequant {
        a_scale: Scales::PerTensor(f32::NAN),
        b_scale: &[1.0],
        bias: None,
    };
    assert!(gemm::gemm_dequant(&mat_a, &packed, &nan, &mut c, 3, 1)
        .unwrap_err()
        .to_string()
        .contains("activation scale"));
    let short_bias = Dequant {
        a_scale: Scales::PerTensor(1.0),
        b_scale: &[1.0],
        bias: Some(&[0.0]),
    };
    assert!(
        gemm::gemm_dequant(&mat_a, &packed, &short_bias, &mut c, 3, 1)
            .unwrap_err()
            .to_string()
            .contains("bias")
    );
    let mut q = [0u8; 6];
    let empty = Requant {
        bias: None,
        multiplier: &[0.5],
        out_zero_point: 0,
        qmin: 9,
        qmax: 3,
    };
    assert!(gemm::gemm_requant(&mat_a, &packed, &empty, &mut q, 3, 1)
        .unwrap_err()
        .to_string()
        .contains("qmin 9 > qmax 3"));
    let zero_mul = Requant {
        bias: None,
        multiplier: &[0.0],
        out_zero_point: 0,
        qmin: 0,
        qmax: 255,
    };
    assert!(gemm::gemm_requant(&mat_a, &packed, &zero_mul, &mut q, 3, 1)
        .unwrap_err()
        .to_string()
        .contains("multiplier"));
    let bad_zp = MatA {
        zero_point: ActZeroPoints::PerRow(&[0, 300]),
        ..mat_a
    };
    assert!(gemm::gemm_i32(&bad_zp, &packed, &mut [0; 6], 3, 1)
        .unwrap_err()
        .to_string()
        .contains("300"));
    let mut small = [0i32; 5];
    assert!(gemm::gemm_i32(&mat_a, &packed, &mut small, 3, 1)
        .unwrap_err()
        .to_string()
        .contains("output buffer"));
}

#[test]
fn packing_for_a_foreign_rung_is_refused() {
    let (_, w) = operands();
    let foreign = if cfg!(target_arch = "x86_64") {
        Rung::Neon
    } else {
        Rung::Avx2
    };
    let b = MatB {
        data: &w,
        rows: 4,
        cols: 3,
        zero_points: &[0],
        transposed: false,
    };
    assert!(PackedB::for_rung(&b, foreign)
        .unwrap_err()
        .to_string()
        .contains("needs"));
}
