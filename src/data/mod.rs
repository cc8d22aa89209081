//! Data sets: MNIST, Fashion-MNIST, CIFAR-10 and the procedural Shapes set.
//!
//! Every image loader returns the same [`ImageDataset`]: images as an
//! `(N, C, H, W)` array of `f32` in `[0, 1]`, one class label per image and the
//! class names. [`load`] picks the loader by [`DatasetName`] and finds the files
//! under a data directory resolved by [`resolve_data_dir`]:
//!
//! ```text
//! <data-dir>/mnist/train-images-idx3-ubyte.gz ...        (idx, gzipped or not)
//! <data-dir>/fashion-mnist/train-images-idx3-ubyte.gz ...
//! <data-dir>/cifar10-jpeg/{train,test}/<class>/*.jpg      (image folders)
//! <data-dir>/cifar-10-batches-bin/data_batch_1.bin ...    (official binary)
//! ```
//!
//! A data set that is not in the data directory is looked for in a per-user cache and, where
//! missing there too, downloaded into it and verified ([`download`]); [`load_with`] takes the
//! cache explicitly.
//!
//! Loaders never trust a header: sizes are checked against the bytes that are
//! really there before anything is allocated, and every error names the file.

pub mod batch;
pub mod captions;
pub mod cifar;
pub mod download;
pub mod idx;
pub mod shapes;

use std::fmt;
use std::path::{Path, PathBuf};

use ndarray::{Array4, Axis};

use crate::{Error, Result};

/// A labelled image data set held in memory.
#[derive(Debug, Clone)]
pub struct ImageDataset {
    /// Pixels, `(N, C, H, W)`, values in `[0, 1]`.
    pub images: Array4<f32>,
    /// One class index per image, each `< classes.len()`.
    pub labels: Vec<usize>,
    /// Class names, indexed by label.
    pub classes: Vec<String>,
    /// One caption per image where the data set has its own (Shapes); `None` for
    /// class-labelled sets, whose captions come from [`captions::captions_for`].
    pub captions: Option<Vec<String>>,
}

impl ImageDataset {
    /// Number of images `N`.
    pub fn len(&self) -> usize {
        self.images.len_of(Axis(0))
    }

    /// `true` when the set holds no image.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `(C, H, W)` of one image.
    pub fn image_shape(&self) -> (usize, usize, usize) {
        let (_, c, h, w) = self.images.dim();
        (c, h, w)
    }

    /// Gathers the images and labels at `indices` (a batch from [`batch::BatchSampler`]).
    pub fn batch(&self, indices: &[usize]) -> (Array4<f32>, Vec<usize>) {
        (batch::gather_images(&self.images, indices), batch::gather_labels(&self.labels, indices))
    }

    /// How many images each class has: `counts[label]`.
    pub fn label_histogram(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes.len()];
        for &l in &self.labels {
            counts[l] += 1;
        }
        counts
    }
}

/// The data sets this crate knows by name (the `--dataset` flag).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum DatasetName {
    /// Handwritten digits, 28x28 grey (LeCun, Cortes, Burges).
    Mnist,
    /// Zalando's clothing images, 28x28 grey, MNIST's file layout.
    FashionMnist,
    /// 32x32 colour photos in 10 classes (Krizhevsky, 2009).
    Cifar10,
    /// Procedural coloured shapes with captions ([`shapes`]); needs no files.
    Shapes,
}

impl DatasetName {
    /// The name used on the command line and in folder names: `mnist`, `fashion-mnist`, `cifar10`, `shapes`.
    pub fn as_str(self) -> &'static str {
        match self {
            DatasetName::Mnist => "mnist",
            DatasetName::FashionMnist => "fashion-mnist",
            DatasetName::Cifar10 => "cifar10",
            DatasetName::Shapes => "shapes",
        }
    }

    /// The class names, in label order.
    pub fn classes(self) -> Vec<String> {
        captions::class_names(self).iter().map(|s| s.to_string()).collect()
    }
}

impl fmt::Display for DatasetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for DatasetName {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "mnist" => Ok(DatasetName::Mnist),
            "fashion-mnist" | "fashion" | "fashionmnist" => Ok(DatasetName::FashionMnist),
            "cifar10" | "cifar-10" => Ok(DatasetName::Cifar10),
            "shapes" => Ok(DatasetName::Shapes),
            other => Err(Error::Config(format!(
                "unknown data set `{other}`: expected one of mnist, fashion-mnist, cifar10, shapes"
            ))),
        }
    }
}

/// Which half of a data set: the training images or the held-out test images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    /// The training split (MNIST 60 000, CIFAR-10 50 000 images).
    Train,
    /// The test split (10 000 images for MNIST, Fashion-MNIST and CIFAR-10).
    Test,
}

impl Split {
    /// `"train"` or `"test"`, as in folder names.
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }
}

/// The environment variable that names the data directory.
pub const DATA_DIR_ENV: &str = "DALLE_DATA_DIR";

/// Finds the data directory: the `--data-dir` flag if given, else `$DALLE_DATA_DIR`,
/// else `../shared/data` if it exists, else `./data`.
pub fn resolve_data_dir(flag: Option<PathBuf>) -> PathBuf {
    if let Some(dir) = flag {
        return dir;
    }
    if let Some(dir) = std::env::var_os(DATA_DIR_ENV).filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    let shared = PathBuf::from("../shared/data");
    if shared.is_dir() {
        return shared;
    }
    PathBuf::from("data")
}

/// Loads `split` of data set `name` from the data directory `data_dir`, keeping at
/// most `limit` images (the first ones; for CIFAR image folders the order is
/// class-balanced, see [`cifar::load_image_folder`]). A data set that is not in `data_dir`
/// comes from the per-user cache, downloaded on first use ([`download::DataCache::from_env`]).
///
/// Shapes needs no files: it renders [`shapes::DEFAULT_TRAIN_SIZE`] or
/// [`shapes::DEFAULT_TEST_SIZE`] images (or `limit`) with a seed per split.
pub fn load(name: DatasetName, data_dir: &Path, split: Split, limit: Option<usize>) -> Result<ImageDataset> {
    load_with(name, data_dir, split, limit, &download::DataCache::from_env())
}

/// [`load`] with an explicit cache: its folder, whether it may download, and from where.
pub fn load_with(
    name: DatasetName,
    data_dir: &Path,
    split: Split,
    limit: Option<usize>,
    cache: &download::DataCache,
) -> Result<ImageDataset> {
    let folder = if download::found_in(name, data_dir, split) {
        data_dir.to_path_buf()
    } else {
        cache.provide(name, data_dir, split)?
    };
    let data_dir = folder.as_path();
    match name {
        DatasetName::Mnist | DatasetName::FashionMnist => {
            idx::load_idx_dataset(&data_dir.join(name.as_str()), name, split, limit)
        }
        DatasetName::Cifar10 => cifar::load_cifar10(data_dir, split, limit),
        DatasetName::Shapes => {
            let config = shapes::ShapesConfig::for_split(split);
            let n = limit.unwrap_or(match split {
                Split::Train => shapes::DEFAULT_TRAIN_SIZE,
                Split::Test => shapes::DEFAULT_TEST_SIZE,
            });
            shapes::Shapes::new(config)?.dataset(n)
        }
    }
}

/// The message for a data set that is not on disk: which files go in which folder,
/// and where the official copies come from.
pub(crate) fn missing_data(name: DatasetName, folder: &Path, files: &[&str]) -> Error {
    let source = match name {
        DatasetName::Mnist => {
            "http://yann.lecun.com/exdb/mnist/ (mirror: https://ossci-datasets.s3.amazonaws.com/mnist/)"
        }
        DatasetName::FashionMnist => "https://github.com/zalandoresearch/fashion-mnist (folder data/fashion)",
        DatasetName::Cifar10 => {
            "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz (unpack it to get cifar-10-batches-bin/)"
        }
        DatasetName::Shapes => "nowhere: it is generated",
    };
    Error::MissingData(format!(
        "{name}: expected {} in folder {}; download the official files from {source}, \
         or point --data-dir / ${DATA_DIR_ENV} at a folder that holds `{name}/`",
        files.join(", "),
        folder.display(),
    ))
}
