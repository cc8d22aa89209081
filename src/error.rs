//! One error type for the whole crate.
//!
//! Every variant names *what* was wrong and *where*: the file, the field or the
//! operation, and what was expected. Nothing in the library panics on bad input
//! from a file, a checkpoint or a user; it returns one of these.

use std::fmt;
use std::path::{Path, PathBuf};

/// Everything that can go wrong in this crate.
///
/// `Debug` prints the same sentence as `Display`, so that an example whose
/// `main` returns this error ends with a readable message, not a struct dump.
pub enum Error {
    /// An operating-system error while reading or writing `path`.
    Io {
        /// The file or folder being accessed.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file's content is not what its format promises (wrong magic, truncated, a lying header...).
    Format {
        /// The file that was being read.
        path: PathBuf,
        /// What was wrong, and what was expected.
        what: String,
    },
    /// Tensor shapes that an operation cannot combine, e.g. `matmul: [4, 3] x [5, 2]`.
    Shape {
        /// The operation, e.g. `matmul`.
        op: &'static str,
        /// The shapes involved and what was expected.
        what: String,
    },
    /// A checkpoint whose tensors do not match the model: missing, extra, wrong shape or dtype.
    Checkpoint(String),
    /// A hyper-parameter or configuration value that cannot work (names the value).
    Config(String),
    /// A compute device (wgpu adapter, shader, buffer) failed.
    Device(String),
    /// A data set that is missing: says which files to put where.
    MissingData(String),
    /// A data set download that failed: every URL tried, why, and what to do.
    Download(String),
    /// Anything else, with a message that says what and where.
    Msg(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io { path: path.as_ref().to_path_buf(), source }
    }
    /// A format error in `path`.
    pub fn format(path: impl AsRef<Path>, what: impl Into<String>) -> Self {
        Error::Format { path: path.as_ref().to_path_buf(), what: what.into() }
    }
    /// A shape error in operation `op`.
    pub fn shape(op: &'static str, what: impl Into<String>) -> Self {
        Error::Shape { op, what: what.into() }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { path, source } => write!(f, "{}: {}", path.display(), source),
            Error::Format { path, what } => write!(f, "{}: {}", path.display(), what),
            Error::Shape { op, what } => write!(f, "{op}: {what}"),
            Error::Checkpoint(m) => write!(f, "checkpoint: {m}"),
            Error::Config(m) => write!(f, "config: {m}"),
            Error::Device(m) => write!(f, "device: {m}"),
            Error::MissingData(m) => write!(f, "missing data: {m}"),
            Error::Download(m) => write!(f, "download: {m}"),
            Error::Msg(m) => write!(f, "{m}"),
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
