//! Datasets: loading both splits of both datasets, normalisation constants recomputed from
//! the training data, slicing, seeded shuffling and batching.

use std::path::PathBuf;
use std::sync::OnceLock;

use qbench_models::data::{
    self, fashion_mnist, mnist, permutation, split_files, DataError, Dataset, DatasetKind, Split,
    IMAGE_LEN,
};
use qbench_models::idx::encode_idx;

/// The MNIST test set, loaded once for the tests that only read it.
fn mnist_test() -> &'static Dataset {
    static SET: OnceLock<Dataset> = OnceLock::new();
    SET.get_or_init(|| mnist(Split::Test).expect("MNIST test split loads"))
}

#[test]
fn all_splits_load_with_expected_shapes() {
    for kind in DatasetKind::ALL {
        for (split, n) in [(Split::Train, 60000), (Split::Test, 10000)] {
            let ds = Dataset::load(kind, split).unwrap();
            assert_eq!(
                ds.shape(),
                [n, 1, 28, 28],
                "{} {}",
                kind.name(),
                split.name()
            );
            assert_eq!(ds.images().len(), n * IMAGE_LEN);
            assert_eq!(ds.labels().len(), n);
            assert!(ds.labels().iter().all(|&l| l < 10));
            assert_eq!(ds.kind(), kind);
            assert_eq!(ds.split(), split);
        }
    }
}

#[test]
fn normalisation_constants_match_the_training_sets() {
    // Recompute mean and population std of x/255 over every training pixel (in f64) and
    // check the constants the loaders use are these, rounded to 4 places.
    for kind in DatasetKind::ALL {
        let (images, _) = split_files(&data::data_dir(), kind, Split::Train);
        let raw = qbench_models::idx::read_idx(images).unwrap();
        let n = raw.data.len() as f64;
        let mean = raw.data.iter().map(|&x| f64::from(x) / 255.0).sum::<f64>() / n;
        let var = raw
            .data
            .iter()
            .map(|&x| (f64::from(x) / 255.0 - mean).powi(2))
            .sum::<f64>()
            / n;
        let norm = kind.normalization();
        assert!(
            (f64::from(norm.mean) - mean).abs() < 5e-5,
            "{} mean {mean}",
            kind.name()
        );
        assert!(
            (f64::from(norm.std) - var.sqrt()).abs() < 5e-5,
            "{} std {}",
            kind.name(),
            var.sqrt()
        );
    }
}

#[test]
fn pixels_are_normalised_with_the_dataset_constants() {
    let ds = fashion_mnist(Split::Test).unwrap();
    let raw = qbench_models::idx::read_idx(
        split_files(&data::data_dir(), DatasetKind::FashionMnist, Split::Test).0,
    )
    .unwrap();
    let (m, s) = (0.2860f32, 0.3530f32);
    for i in [0, 1, 400, 783, 784 * 9999 + 500] {
        let want = (f32::from(raw.data[i]) / 255.0 - m) / s;
        assert_eq!(ds.images()[i], want, "pixel {i}");
    }
    // Zero pixels (the background) map to -mean/std.
    let mn = mnist_test();
    assert_eq!(mn.image(0)[0], (0.0 - 0.1307f32) / 0.3081);
    assert_eq!(mn.label(0), 7);
}

#[test]
fn take_keeps_a_prefix() {
    let small = mnist_test().clone().take(100);
    assert_eq!(small.len(), 100);
    assert_eq!(small.labels(), &mnist_test().labels()[..100]);
    assert_eq!(small.images(), &mnist_test().images()[..100 * IMAGE_LEN]);
    assert_eq!(mnist_test().clone().take(1_000_000).len(), 10000);
    assert!(mnist_test().clone().take(0).is_empty());
}

#[test]
fn shuffle_is_a_seeded_permutation() {
    let base = mnist_test().clone().take(1000);
    let a = base.clone().shuffled(42);
    let b = base.clone().shuffled(42);
    let c = base.clone().shuffled(43);
    assert_eq!(a, b, "same seed, same order");
    assert_ne!(a.labels(), c.labels(), "different seeds differ");
    assert_ne!(a.labels(), base.labels(), "shuffling moves things");
    // Images travel with their labels.
    let perm = permutation(1000, 42);
    for (k, &i) in perm.iter().enumerate().step_by(97) {
        assert_eq!(a.image(k), base.image(i));
        assert_eq!(a.label(k), base.label(i));
    }
    // A permutation: every index once.
    let mut sorted = perm.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
    // Frozen values: the generator must never change, or recorded seeds stop replaying.
    assert_eq!(permutation(8, 7), FROZEN_PERM_8_SEED_7);
    assert!(permutation(0, 1).is_empty());
    assert_eq!(permutation(1, 1), [0]);
}

/// `permutation(8, 7)`, cross-checked with an independent Python SplitMix64 + Lemire.
const FROZEN_PERM_8_SEED_7: [usize; 8] = [7, 4, 6, 1, 2, 5, 0, 3];

#[test]
fn batches_cover_everything_and_keep_the_last_partial_batch() {
    let ds = mnist_test().clone().take(250);
    let batches: Vec<_> = ds.batches(64).collect();
    assert_eq!(ds.batches(64).len(), 4);
    assert_eq!(
        batches.iter().map(|b| b.len()).collect::<Vec<_>>(),
        [64, 64, 64, 58]
    );
    assert_eq!(batches[3].shape(), [58, 1, 28, 28]);
    assert_eq!(batches[3].start, 192);
    assert_eq!(batches[3].images.len(), 58 * IMAGE_LEN);
    let labels: Vec<u8> = batches
        .iter()
        .flat_map(|b| b.labels.iter().copied())
        .collect();
    assert_eq!(labels, ds.labels());
    let pixels: Vec<f32> = batches
        .iter()
        .flat_map(|b| b.images.iter().copied())
        .collect();
    assert_eq!(pixels, ds.images());
    assert_eq!(ds.batches(250).count(), 1);
    assert_eq!(ds.batches(1000).next().unwrap().len(), 250);
    assert_eq!(ds.clone().take(0).batches(8).count(), 0);
}

#[test]
#[should_panic(expected = "batch size must be positive")]
fn zero_batch_size_panics() {
    let _ = mnist_test().batches(0);
}

/// The scratch root of the fake dataset `name`, per process.
fn fake_root_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("qbench-data-test-{}-{name}", std::process::id()))
}

/// Writes a tiny fake dataset under a scratch root and returns the root (the test removes
/// it when it passes; a failing run leaves it for inspection).
fn fake_root(name: &str, n_images: usize, labels: &[u8], side: usize) -> PathBuf {
    let root = fake_root_path(name);
    let dir = root.join("mnist");
    std::fs::create_dir_all(&dir).unwrap();
    let images = encode_idx(&[n_images, side, side], &vec![255; n_images * side * side]);
    std::fs::write(dir.join("t10k-images-idx3-ubyte.gz"), images).unwrap();
    std::fs::write(
        dir.join("t10k-labels-idx1-ubyte.gz"),
        encode_idx(&[labels.len()], labels),
    )
    .unwrap();
    root
}

#[test]
fn load_from_another_root_and_its_errors() {
    let root = fake_root("ok", 3, &[1, 2, 3], 28);
    let ds = Dataset::load_from(&root, DatasetKind::Mnist, Split::Test).unwrap();
    assert_eq!(ds.len(), 3);
    assert_eq!(ds.image(2)[0], (1.0 - 0.1307f32) / 0.3081);

    let root = fake_root("count", 3, &[1, 2], 28);
    let err = Dataset::load_from(&root, DatasetKind::Mnist, Split::Test).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::CountMismatch {
                n_images: 3,
                n_labels: 2,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("t10k-labels-idx1-ubyte.gz"),
        "{err}"
    );

    let root = fake_root("label", 2, &[1, 10], 28);
    let err = Dataset::load_from(&root, DatasetKind::Mnist, Split::Test).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::LabelOutOfRange {
                index: 1,
                label: 10,
                ..
            }
        ),
        "{err}"
    );

    let root = fake_root("side", 2, &[1, 2], 27);
    let err = Dataset::load_from(&root, DatasetKind::Mnist, Split::Test).unwrap_err();
    assert!(
        matches!(err, DataError::WrongImageSize { rows: 27, .. }),
        "{err}"
    );

    let err = Dataset::load_from(&root, DatasetKind::FashionMnist, Split::Test).unwrap_err();
    assert!(err.to_string().contains("fashion-mnist"), "{err}");
    for name in ["ok", "count", "label", "side"] {
        let root = fake_root_path(name);
        std::fs::remove_dir_all(&root).unwrap();
    }
}

#[test]
fn dataset_names_round_trip() {
    for kind in DatasetKind::ALL {
        assert_eq!(DatasetKind::from_name(kind.name()), Some(kind));
    }
    assert_eq!(DatasetKind::from_name("cifar10"), None);
    assert_eq!(DatasetKind::FashionMnist.class_names()[9], "Ankle boot");
}
