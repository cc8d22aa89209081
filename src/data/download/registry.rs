//! Where each data set comes from: the official files, their sizes and SHA-256 sums.
//!
//! The sums are not computed here (these machines have no internet); each one is the value
//! published for the official file, copied from the sources named beside it. A download is
//! kept only when its size and SHA-256 match these values exactly.

use crate::data::DatasetName;

/// One file on a server: its name, its exact size and its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteFile {
    /// The file name, appended to each mirror's base URL.
    pub name: String,
    /// The exact size in bytes.
    pub bytes: u64,
    /// SHA-256 of the whole file, 64 lower-case hex digits.
    pub sha256: String,
}

impl RemoteFile {
    /// A file of `bytes` bytes whose SHA-256 is `sha256`.
    pub fn new(name: &str, bytes: u64, sha256: &str) -> Self {
        RemoteFile { name: name.to_string(), bytes, sha256: sha256.to_string() }
    }
}

/// An archive to unpack after download: which members to keep, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archive {
    /// The folder, inside the archive and in the cache, that the members lie in.
    pub folder: String,
    /// The members to extract (file names inside `folder`) and their exact sizes.
    pub members: Vec<(String, u64)>,
}

/// A data set that can be downloaded: its files, the servers that hold them, how to unpack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteDataset {
    /// Which data set.
    pub dataset: DatasetName,
    /// Base URLs ending in `/`, tried in order for every file.
    pub mirrors: Vec<String>,
    /// The files to download, into `<cache>/<folder>/` (or, for an archive, into `<cache>/`).
    pub files: Vec<RemoteFile>,
    /// The cache sub-folder the files go to (`mnist`, `fashion-mnist`), when not an archive.
    pub folder: String,
    /// `Some` when `files` is one archive to unpack and then delete.
    pub archive: Option<Archive>,
}

impl RemoteDataset {
    /// Total bytes to download.
    pub fn download_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.bytes).sum()
    }
}

/// The official sources of `name`; `None` for Shapes, which is generated.
pub fn official(name: DatasetName) -> Option<RemoteDataset> {
    match name {
        DatasetName::Mnist => Some(mnist()),
        DatasetName::FashionMnist => Some(fashion_mnist()),
        DatasetName::Cifar10 => Some(cifar10_binary()),
        DatasetName::Shapes => None,
    }
}

/// MNIST's four gzipped idx files (60,000 + 10,000 digits, 11.6 MB in all).
///
/// Sizes and SHA-256: TensorFlow Datasets, `tensorflow_datasets/url_checksums/mnist.txt`
/// (for the same files on its Google Cloud mirror). The ossci-datasets mirror is the one
/// torchvision downloads from; its files have the MD5 sums torchvision pins
/// (`f68b3c2dcbeaaa9fbdd348bbdeb94873` for train-images ...), i.e. the same bytes.
/// The decompressed files match the sums in `../shared/data/README.md`.
fn mnist() -> RemoteDataset {
    RemoteDataset {
        dataset: DatasetName::Mnist,
        // yann.lecun.com often answers 403 or times out, so the mirrors come first.
        mirrors: vec![
            "https://ossci-datasets.s3.amazonaws.com/mnist/".into(),
            "https://storage.googleapis.com/cvdf-datasets/mnist/".into(),
            "https://yann.lecun.com/exdb/mnist/".into(),
        ],
        files: vec![
            RemoteFile::new("train-images-idx3-ubyte.gz", 9_912_422, "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
            RemoteFile::new("train-labels-idx1-ubyte.gz", 28_881, "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
            RemoteFile::new("t10k-images-idx3-ubyte.gz", 1_648_877, "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
            RemoteFile::new("t10k-labels-idx1-ubyte.gz", 4_542, "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
        ],
        folder: "mnist".into(),
        archive: None,
    }
}

/// Fashion-MNIST's four gzipped idx files (same layout as MNIST, 30.9 MB in all).
///
/// Sizes and SHA-256: TensorFlow Datasets, `tensorflow_datasets/url_checksums/fashion_mnist.txt`
/// (the files of Zalando's S3 site, whose MD5 sums the Fashion-MNIST README lists). The same
/// bytes are in the `data/fashion/` folder of Zalando's GitHub repository, the second mirror.
fn fashion_mnist() -> RemoteDataset {
    RemoteDataset {
        dataset: DatasetName::FashionMnist,
        mirrors: vec![
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/".into(),
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/".into(),
        ],
        files: vec![
            RemoteFile::new("train-images-idx3-ubyte.gz", 26_421_880, "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
            RemoteFile::new("train-labels-idx1-ubyte.gz", 29_515, "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
            RemoteFile::new("t10k-images-idx3-ubyte.gz", 4_422_102, "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"),
            RemoteFile::new("t10k-labels-idx1-ubyte.gz", 5_148, "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"),
        ],
        folder: "fashion-mnist".into(),
        archive: None,
    }
}

/// Bytes of one CIFAR-10 binary batch: 10,000 records of 1 + 3,072 bytes.
const CIFAR_BATCH_BYTES: u64 = 10_000 * 3_073;

/// CIFAR-10's binary version, one archive of 170 MB that unpacks to `cifar-10-batches-bin/`
/// (six batches of 30.7 MB; the archive is deleted once they are out).
///
/// Size and SHA-256: TensorFlow Datasets, `tensorflow_datasets/url_checksums/cifar10.txt`;
/// the same SHA-256 is pinned by torchvision-ruby's CIFAR10 loader, and the MD5 on the
/// CIFAR page (`c32a1d4ab5d03f1284b67883e8d87530`) is of the same 170,052,171 bytes.
fn cifar10_binary() -> RemoteDataset {
    let batches = ["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin", "test_batch.bin"];
    RemoteDataset {
        dataset: DatasetName::Cifar10,
        mirrors: vec!["https://www.cs.toronto.edu/~kriz/".into()],
        files: vec![RemoteFile::new(
            "cifar-10-binary.tar.gz",
            170_052_171,
            "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
        )],
        folder: "cifar-10-batches-bin".into(),
        archive: Some(Archive {
            folder: "cifar-10-batches-bin".into(),
            members: batches.iter().map(|b| (b.to_string(), CIFAR_BATCH_BYTES)).collect(),
        }),
    }
}
