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
    /// A size over a stated resource cap ([`crate::io::limits`]): names what, the size and the cap.
    Limit(String),
    /// Training produced a NaN or an infinity (the loss, a gradient or a parameter):
    /// names the step and the value.
    NonFinite(String),
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

    /// The message without the variant's prefix (`checkpoint: `, `config: `...), to
    /// wrap one error in another of the same kind without saying `checkpoint: checkpoint:`.
    pub fn message(&self) -> String {
        match self {
            Error::Checkpoint(m) | Error::Config(m) | Error::NonFinite(m) | Error::Limit(m) | Error::Device(m) | Error::MissingData(m) | Error::Msg(m) => {
                m.clone()
            }
            other => other.to_string(),
        }
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
            Error::NonFinite(m) => write!(f, "non-finite values: {m}"),
            Error::Limit(m) => write!(f, "too large: {m}"),
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

/// How many characters of a user's text an error message quotes.
pub const QUOTE_CHARS: usize = 40;

/// `text` quoted for an error message: in full when short, else its first
/// [`QUOTE_CHARS`] characters and its length, so a 1 MB input never becomes a 1 MB message.
pub fn quote(text: &str) -> String {
    match text.char_indices().nth(QUOTE_CHARS) {
        None => format!("{text:?}"),
        Some((cut, _)) => format!("{:?}... ({} bytes)", &text[..cut], text.len()),
    }
}

/// How many items of a list an error message shows.
pub const LIST_ITEMS: usize = 10;

/// The first [`LIST_ITEMS`] of `items` joined by `"; "`, and how many were left out.
pub fn capped_list(items: &[String]) -> String {
    let shown = items.iter().take(LIST_ITEMS).cloned().collect::<Vec<_>>().join("; ");
    match items.len().saturating_sub(LIST_ITEMS) {
        0 => shown,
        more => format!("{shown}; and {more} more"),
    }
}
