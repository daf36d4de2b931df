//! IDX reader: the real MNIST / Fashion-MNIST files, and crafted malformed files that must
//! fail with an error naming the file (never a panic).

use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::Compression;
use qbench_models::idx::{encode_idx, parse_idx, read_idx, read_idx_rank, IdxError};

fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data").join(rel)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// A scratch file unique to this test process and `name`.
fn scratch(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("qbench-idx-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Asserts the error's message names the file, and returns it for matching.
fn expect_err(path: &Path) -> IdxError {
    let err = read_idx(path).expect_err("malformed file must not parse");
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()),
        "error does not name the file: {msg}"
    );
    err
}

#[test]
fn mnist_files_have_standard_shapes_and_known_values() {
    let train_x = read_idx_rank(data("mnist/train-images-idx3-ubyte.gz"), 3).unwrap();
    let train_y = read_idx_rank(data("mnist/train-labels-idx1-ubyte.gz"), 1).unwrap();
    let test_x = read_idx_rank(data("mnist/t10k-images-idx3-ubyte.gz"), 3).unwrap();
    let test_y = read_idx_rank(data("mnist/t10k-labels-idx1-ubyte.gz"), 1).unwrap();
    assert_eq!(train_x.dims, [60000, 28, 28]);
    assert_eq!(train_y.dims, [60000]);
    assert_eq!(test_x.dims, [10000, 28, 28]);
    assert_eq!(test_y.dims, [10000]);
    assert_eq!(train_x.data.len(), 60000 * 784);
    // Values checked independently with Python's gzip + numpy.
    assert_eq!(&train_y.data[..5], &[5, 0, 4, 1, 9]);
    assert_eq!(&test_y.data[..5], &[7, 2, 1, 0, 4]);
    let sum0: u32 = train_x.data[..784].iter().map(|&p| u32::from(p)).sum();
    assert_eq!(sum0, 27525);
    assert_eq!(train_x.data[14 * 28 + 14], 240);
    // Class counts from the MNIST README (the standard split).
    let mut counts = [0usize; 10];
    for &l in &test_y.data {
        counts[usize::from(l)] += 1;
    }
    assert_eq!(
        counts,
        [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    );
    assert!(train_y.data.iter().all(|&l| l <= 9));
}

#[test]
fn fashion_mnist_files_have_standard_shapes_and_known_values() {
    let train_y = read_idx_rank(data("fashion-mnist/train-labels-idx1-ubyte.gz"), 1).unwrap();
    let test_x = read_idx_rank(data("fashion-mnist/t10k-images-idx3-ubyte.gz"), 3).unwrap();
    let test_y = read_idx_rank(data("fashion-mnist/t10k-labels-idx1-ubyte.gz"), 1).unwrap();
    assert_eq!(train_y.dims, [60000]);
    assert_eq!(test_x.dims, [10000, 28, 28]);
    assert_eq!(test_y.dims, [10000]);
    assert_eq!(&train_y.data[..5], &[9, 0, 0, 3, 0]);
    assert_eq!(&test_y.data[..5], &[9, 2, 1, 1, 6]);
    let sum0: u32 = test_x.data[..784].iter().map(|&p| u32::from(p)).sum();
    assert_eq!(sum0, 33456);
    // Fashion-MNIST is balanced: 6000 per class in train, 1000 in test.
    for (labels, per_class) in [(&train_y.data, 6000), (&test_y.data, 1000)] {
        let mut counts = [0usize; 10];
        for &l in labels.iter() {
            counts[usize::from(l)] += 1;
        }
        assert_eq!(counts, [per_class; 10]);
    }
}

#[test]
fn plain_and_gzip_files_read_the_same() {
    let dims = [2usize, 3, 4];
    let data: Vec<u8> = (0..24).collect();
    let bytes = encode_idx(&dims, &data);
    let plain = read_idx(scratch("plain.idx", &bytes)).unwrap();
    let gz = read_idx(scratch("packed.idx.gz", &gzip(&bytes))).unwrap();
    assert_eq!(plain.dims, dims);
    assert_eq!(plain.data, data);
    assert_eq!(plain, gz);
    // Detection is by content, not by name.
    let misnamed = read_idx(scratch("plain-named.gz", &bytes)).unwrap();
    assert_eq!(misnamed, plain);
}

#[test]
fn any_rank_reads_and_wrong_rank_is_named() {
    let rank4 = encode_idx(&[1, 2, 1, 3], &[1, 2, 3, 4, 5, 6]);
    let path = scratch("rank4.idx", &rank4);
    assert_eq!(read_idx(&path).unwrap().dims, [1, 2, 1, 3]);
    let err = read_idx_rank(&path, 3).unwrap_err();
    assert!(
        matches!(err, IdxError::WrongRank { expected: 3, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("rank4.idx"));
    // A zero-length first dimension is a valid empty array.
    let empty = parse_idx(&encode_idx(&[0, 28, 28], &[]), Path::new("empty")).unwrap();
    assert!(empty.is_empty());
}

#[test]
fn bad_magic_is_rejected() {
    let mut bytes = encode_idx(&[3], &[1, 2, 3]);
    bytes[0] = 0x12;
    let err = expect_err(&scratch("bad-magic.idx", &bytes));
    assert!(matches!(err, IdxError::BadMagic { .. }), "{err}");
}

#[test]
fn non_u8_dtype_is_rejected_with_its_code() {
    let mut bytes = encode_idx(&[1], &[0]);
    bytes[2] = 0x0d; // f32
    let err = expect_err(&scratch("f32.idx", &bytes));
    assert!(
        matches!(err, IdxError::UnsupportedDtype { code: 0x0d, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("0x0d (f32)"), "{err}");
    bytes[2] = 0x42;
    let err = expect_err(&scratch("dtype42.idx", &bytes));
    assert!(
        matches!(err, IdxError::UnsupportedDtype { code: 0x42, .. }),
        "{err}"
    );
}

#[test]
fn truncated_header_and_data_are_rejected() {
    let bytes = encode_idx(&[4, 5], &[7; 20]);
    for cut in [0, 3, 4, 7, 11] {
        let err = expect_err(&scratch(&format!("header-cut-{cut}.idx"), &bytes[..cut]));
        assert!(
            matches!(err, IdxError::TruncatedHeader { .. }),
            "cut {cut}: {err}"
        );
    }
    let err = expect_err(&scratch("data-cut.idx", &bytes[..bytes.len() - 1]));
    assert!(
        matches!(
            err,
            IdxError::TruncatedData {
                expected: 20,
                found: 19,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn zero_rank_is_rejected() {
    let err = expect_err(&scratch("rank0.idx", &[0, 0, 8, 0, 1, 2]));
    assert!(matches!(err, IdxError::ZeroRank { .. }), "{err}");
}

#[test]
fn dimension_product_mismatch_is_rejected() {
    // Header says 2x2 = 4 bytes; 6 follow.
    let mut bytes = encode_idx(&[2, 2], &[1, 2, 3, 4]);
    bytes.extend_from_slice(&[5, 6]);
    let err = expect_err(&scratch("trailing.idx", &bytes));
    assert!(
        matches!(err, IdxError::TrailingData { extra: 2, .. }),
        "{err}"
    );
}

#[test]
fn huge_dimensions_do_not_allocate_or_overflow() {
    // 2^32-1 cubed-ish: the product overflows usize on any platform with rank 3.
    let mut bytes = vec![0, 0, 8, 3];
    for _ in 0..3 {
        bytes.extend_from_slice(&u32::MAX.to_be_bytes());
    }
    let err = expect_err(&scratch("overflow.idx", &bytes));
    assert!(matches!(err, IdxError::DimsOverflow { .. }), "{err}");
    // A large but representable product (16 EiB) is over the memory budget, refused
    // before any data is read.
    let mut bytes = vec![0, 0, 8, 2];
    for _ in 0..2 {
        bytes.extend_from_slice(&u32::MAX.to_be_bytes());
    }
    let err = expect_err(&scratch("huge.idx", &bytes));
    assert!(matches!(err, IdxError::OverBudget { .. }), "{err}");
    // Within the budget but with no data: truncated.
    let err = expect_err(&scratch("short.idx", &[0, 0, 8, 1, 0, 0, 1, 0, 7]));
    assert!(
        matches!(
            err,
            IdxError::TruncatedData {
                expected: 256,
                found: 1,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn truncated_and_corrupt_gzip_are_rejected() {
    let bytes = encode_idx(&[100], &[3; 100]);
    let gz = gzip(&bytes);
    // Every prefix of the stream (past the two magic bytes) must fail cleanly.
    for cut in 2..gz.len() {
        let err = expect_err(&scratch("cut.idx.gz", &gz[..cut]));
        assert!(
            matches!(err, IdxError::Gzip { .. } | IdxError::TruncatedData { .. }),
            "cut {cut}: {err}"
        );
    }
    // A flipped byte inside the CRC32 trailer.
    let mut bad = gz.clone();
    let n = bad.len();
    bad[n - 6] ^= 0xff;
    let err = expect_err(&scratch("crc.idx.gz", &bad));
    assert!(matches!(err, IdxError::Gzip { .. }), "{err}");
    // Garbage after the gzip magic.
    let err = expect_err(&scratch(
        "garbage.idx.gz",
        &[0x1f, 0x8b, 1, 2, 3, 4, 5, 6, 7],
    ));
    assert!(matches!(err, IdxError::Gzip { .. }), "{err}");
}

#[test]
fn missing_file_is_an_io_error_naming_it() {
    let path = data("no-such-dir/no-such-file.idx");
    let err = expect_err(&path);
    assert!(matches!(err, IdxError::Io { .. }), "{err}");
}

#[test]
fn random_bytes_never_panic() {
    // A cheap deterministic fuzz: random headers and lengths, plain and gzipped.
    let mut state = 0x1234_5678_9abc_def0u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..2000 {
        let len = (next() % 40) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if len >= 4 && next() % 2 == 0 {
            bytes[0] = 0;
            bytes[1] = 0;
            bytes[2] = 8;
            bytes[3] %= 4;
        }
        let _ = parse_idx(&bytes, Path::new("fuzz"));
        if next() % 8 == 0 {
            let mut gz = gzip(&bytes);
            let cut = (next() as usize) % (gz.len() + 1);
            gz.truncate(cut.max(2));
            let _ = read_idx(scratch("fuzz.gz", &gz));
        }
    }
}
