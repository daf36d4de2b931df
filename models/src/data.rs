//! Image classification datasets shipped in the repo: MNIST and Fashion-MNIST.
//!
//! A [`Dataset`] holds images as normalised f32 in NCHW (`[n, 1, 28, 28]`, contiguous) and
//! their labels. It owns loading from `models/data/<dataset>/` (through [`crate::idx`]),
//! normalisation `(x/255 − mean)/std`, slicing, deterministic shuffling and batching. It
//! does not know about tensors or models: batches are plain slices plus a shape, so any
//! executor can wrap them without a copy.
//!
//! The data directory is `$QBENCH_DATA_DIR` if set, else `models/data` found from this
//! crate's manifest directory at compile time, so tests and binaries work from any
//! working directory.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::idx::{self, IdxError};

/// Environment variable that overrides where the dataset directories are looked for.
pub const DATA_DIR_ENV: &str = "QBENCH_DATA_DIR";

/// Errors loading or building a dataset. Each names the file or the dataset at fault.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error(transparent)]
    Idx(#[from] IdxError),
    /// The dataset as f32 would be over the memory budget.
    #[error("{}: {msg}", path.display())]
    OverBudget { path: PathBuf, msg: String },
    #[error(
        "{dataset} {split}: images {images} has {n_images} items but labels {labels} has {n_labels}"
    )]
    CountMismatch {
        dataset: &'static str,
        split: &'static str,
        images: PathBuf,
        n_images: usize,
        labels: PathBuf,
        n_labels: usize,
    },
    #[error("{}: label {label} at index {index} is outside 0..{classes}", path.display())]
    LabelOutOfRange {
        path: PathBuf,
        index: usize,
        label: u8,
        classes: usize,
    },
    #[error("{}: images are {rows}x{cols}; {dataset} images are 28x28", path.display())]
    WrongImageSize {
        path: PathBuf,
        dataset: &'static str,
        rows: usize,
        cols: usize,
    },
}

/// Per-dataset normalisation: a model sees `(x/255 − mean)/std` for a raw pixel `x`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normalization {
    pub mean: f32,
    pub std: f32,
}

impl Normalization {
    /// Maps a raw pixel to the model's input domain.
    #[inline]
    pub fn apply(&self, x: u8) -> f32 {
        // Divide, subtract, divide, as torchvision's ToTensor + Normalize do, so the f32
        // inputs match a PyTorch pipeline's bit for bit rather than within rounding.
        (f32::from(x) / 255.0 - self.mean) / self.std
    }
}

/// Which dataset. Serialised by [`DatasetKind::name`] (`mnist`, `fashion-mnist`), as zoo
/// manifests and reports spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetKind {
    Mnist,
    FashionMnist,
}

impl DatasetKind {
    /// All datasets, for enumeration in tests and the CLI.
    pub const ALL: [DatasetKind; 2] = [DatasetKind::Mnist, DatasetKind::FashionMnist];

    /// The stable name used in manifests, reports and as the directory under `models/data`.
    pub fn name(self) -> &'static str {
        match self {
            DatasetKind::Mnist => "mnist",
            DatasetKind::FashionMnist => "fashion-mnist",
        }
    }

    /// Mean and std of the training set's pixels scaled to [0, 1]. The values are the
    /// conventional ones (torchvision examples; Zalando's README); recomputed from the
    /// training sets in this repo: MNIST 0.130660 / 0.308108, Fashion-MNIST 0.286041 /
    /// 0.353024 (population std over all 60000·784 pixels). See the data tests.
    pub fn normalization(self) -> Normalization {
        match self {
            DatasetKind::Mnist => Normalization {
                mean: 0.1307,
                std: 0.3081,
            },
            DatasetKind::FashionMnist => Normalization {
                mean: 0.2860,
                std: 0.3530,
            },
        }
    }

    /// Number of classes (labels are `0..num_classes`).
    pub fn num_classes(self) -> usize {
        10
    }

    /// Human-readable class names, indexed by label.
    pub fn class_names(self) -> [&'static str; 10] {
        match self {
            DatasetKind::Mnist => ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"],
            DatasetKind::FashionMnist => [
                "T-shirt/top",
                "Trouser",
                "Pullover",
                "Dress",
                "Coat",
                "Sandal",
                "Shirt",
                "Sneaker",
                "Bag",
                "Ankle boot",
            ],
        }
    }

    /// Parses a name as written by [`DatasetKind::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// Train or test split, serialised as `train` / `test`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Split {
    Train,
    Test,
}

impl Split {
    /// The stable name used in manifests and reports.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }

    /// The IDX file prefix: LeCun's original names use `t10k` for the test split.
    fn file_prefix(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "t10k",
        }
    }
}

/// The directory holding `mnist/` and `fashion-mnist/`: `$QBENCH_DATA_DIR` if set and
/// non-empty, else this crate's `data/` directory.
pub fn data_dir() -> PathBuf {
    match std::env::var_os(DATA_DIR_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("data"),
    }
}

/// The image and label files of a dataset split under `root`, `.gz` form.
pub fn split_files(root: &Path, kind: DatasetKind, split: Split) -> (PathBuf, PathBuf) {
    let dir = root.join(kind.name());
    let p = split.file_prefix();
    (
        dir.join(format!("{p}-images-idx3-ubyte.gz")),
        dir.join(format!("{p}-labels-idx1-ubyte.gz")),
    )
}

/// Loads a split of MNIST from [`data_dir`].
pub fn mnist(split: Split) -> Result<Dataset, DataError> {
    Dataset::load(DatasetKind::Mnist, split)
}

/// Loads a split of Fashion-MNIST from [`data_dir`].
pub fn fashion_mnist(split: Split) -> Result<Dataset, DataError> {
    Dataset::load(DatasetKind::FashionMnist, split)
}

/// Side of the square images.
pub const IMAGE_SIDE: usize = 28;
/// Pixels per image (one channel).
pub const IMAGE_LEN: usize = IMAGE_SIDE * IMAGE_SIDE;

/// A labelled image set, normalised, NCHW with one channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    kind: DatasetKind,
    split: Split,
    /// `len() * IMAGE_LEN` normalised pixels, image-major.
    images: Vec<f32>,
    labels: Vec<u8>,
}

impl Dataset {
    /// Loads a split from [`data_dir`].
    pub fn load(kind: DatasetKind, split: Split) -> Result<Self, DataError> {
        Self::load_from(&data_dir(), kind, split)
    }

    /// Loads a split from `root/<dataset name>/`.
    pub fn load_from(root: &Path, kind: DatasetKind, split: Split) -> Result<Self, DataError> {
        let (images_path, labels_path) = split_files(root, kind, split);
        let images = idx::read_idx_rank(&images_path, 3)?;
        let labels = idx::read_idx_rank(&labels_path, 1)?;
        let (rows, cols) = (images.dims[1], images.dims[2]);
        if rows != IMAGE_SIDE || cols != IMAGE_SIDE {
            return Err(DataError::WrongImageSize {
                path: images_path,
                dataset: kind.name(),
                rows,
                cols,
            });
        }
        if images.len() != labels.len() {
            return Err(DataError::CountMismatch {
                dataset: kind.name(),
                split: split.name(),
                images: images_path,
                n_images: images.len(),
                labels: labels_path,
                n_labels: labels.len(),
            });
        }
        if let Some((index, &label)) = labels
            .data
            .iter()
            .enumerate()
            .find(|(_, &l)| usize::from(l) >= kind.num_classes())
        {
            return Err(DataError::LabelOutOfRange {
                path: labels_path,
                index,
                label,
                classes: kind.num_classes(),
            });
        }
        // The reader budgeted the u8 pixels; normalised they take four times as much.
        crate::budget::check_shape(&"the normalised images", &images.dims, 4).map_err(|e| {
            DataError::OverBudget {
                path: images_path.clone(),
                msg: e.to_string(),
            }
        })?;
        Ok(Self::from_raw(kind, split, &images.data, labels.data))
    }

    /// Builds a dataset from raw u8 pixels (`labels.len() * 784` of them, image-major),
    /// normalising with `kind`'s constants.
    ///
    /// # Panics
    /// If the pixel count is not `labels.len() * 784` (a caller bug).
    pub fn from_raw(kind: DatasetKind, split: Split, pixels: &[u8], labels: Vec<u8>) -> Self {
        assert_eq!(
            pixels.len(),
            labels.len() * IMAGE_LEN,
            "pixel count must be labels.len() * 784"
        );
        let norm = kind.normalization();
        // A 256-entry table: each distinct byte is normalised once, and every pixel maps
        // through the same f32, so results do not depend on evaluation order.
        let table: Vec<f32> = (0..=255u8).map(|x| norm.apply(x)).collect();
        let images = pixels.iter().map(|&x| table[usize::from(x)]).collect();
        Self {
            kind,
            split,
            images,
            labels,
        }
    }

    pub fn kind(&self) -> DatasetKind {
        self.kind
    }

    pub fn split(&self) -> Split {
        self.split
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The NCHW shape of the whole set: `[n, 1, 28, 28]`.
    pub fn shape(&self) -> [usize; 4] {
        [self.len(), 1, IMAGE_SIDE, IMAGE_SIDE]
    }

    /// All normalised pixels, NCHW, contiguous.
    pub fn images(&self) -> &[f32] {
        &self.images
    }

    /// All labels, in image order.
    pub fn labels(&self) -> &[u8] {
        &self.labels
    }

    /// The normalised pixels of image `i` (`[1, 28, 28]`).
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn image(&self, i: usize) -> &[f32] {
        &self.images[i * IMAGE_LEN..(i + 1) * IMAGE_LEN]
    }

    /// The label of image `i` as an index.
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn label(&self, i: usize) -> usize {
        usize::from(self.labels[i])
    }

    /// The same labels with other pixels: the images as a model's own preprocessing
    /// makes them (a zoo manifest may normalise differently from the dataset).
    ///
    /// # Panics
    /// If `images.len()` is not `len() * 784` (a caller bug).
    pub fn with_images(mut self, images: Vec<f32>) -> Self {
        assert_eq!(
            images.len(),
            self.labels.len() * IMAGE_LEN,
            "pixel count must be len() * 784"
        );
        self.images = images;
        self
    }

    /// Keeps the first `n` images (all of them if there are fewer), for quick runs.
    pub fn take(mut self, n: usize) -> Self {
        let n = n.min(self.len());
        self.labels.truncate(n);
        self.images.truncate(n * IMAGE_LEN);
        self
    }

    /// Reorders the images with a seeded Fisher–Yates shuffle. The generator (SplitMix64)
    /// is fixed here rather than borrowed from a crate, so a seed gives the same order on
    /// every machine and every future version: report rows record seeds and must replay.
    pub fn shuffle(&mut self, seed: u64) {
        let perm = permutation(self.len(), seed);
        let mut images = Vec::with_capacity(self.images.len());
        for &i in &perm {
            images.extend_from_slice(self.image(i));
        }
        self.labels = perm.iter().map(|&i| self.labels[i]).collect();
        self.images = images;
    }

    /// A shuffled copy; see [`Dataset::shuffle`].
    pub fn shuffled(mut self, seed: u64) -> Self {
        self.shuffle(seed);
        self
    }

    /// Batches of `batch_size` images in order; the last batch holds the remainder.
    ///
    /// # Panics
    /// If `batch_size` is zero.
    pub fn batches(&self, batch_size: usize) -> Batches<'_> {
        assert!(batch_size > 0, "batch size must be positive");
        Batches {
            dataset: self,
            batch_size,
            next: 0,
        }
    }
}

/// A deterministic permutation of `0..n` (Fisher–Yates driven by SplitMix64).
pub use crate::rng::permutation;

/// One batch: borrowed slices of a [`Dataset`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Batch<'a> {
    /// Index of the first image of the batch in the dataset.
    pub start: usize,
    /// `len() * 784` normalised pixels, NCHW.
    pub images: &'a [f32],
    pub labels: &'a [u8],
}

impl Batch<'_> {
    /// Number of images in the batch.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The NCHW shape `[b, 1, 28, 28]`.
    pub fn shape(&self) -> [usize; 4] {
        [self.len(), 1, IMAGE_SIDE, IMAGE_SIDE]
    }
}

/// Iterator over a dataset's batches; see [`Dataset::batches`].
#[derive(Debug, Clone)]
pub struct Batches<'a> {
    dataset: &'a Dataset,
    batch_size: usize,
    next: usize,
}

impl<'a> Iterator for Batches<'a> {
    type Item = Batch<'a>;

    fn next(&mut self) -> Option<Batch<'a>> {
        let n = self.dataset.len();
        if self.next >= n {
            return None;
        }
        let start = self.next;
        let end = (start + self.batch_size).min(n);
        self.next = end;
        Some(Batch {
            start,
            images: &self.dataset.images[start * IMAGE_LEN..end * IMAGE_LEN],
            labels: &self.dataset.labels[start..end],
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.dataset.len() - self.next;
        let k = left.div_ceil(self.batch_size);
        (k, Some(k))
    }
}

impl ExactSizeIterator for Batches<'_> {}
