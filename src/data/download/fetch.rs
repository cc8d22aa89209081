//! One verified download: GET a URL into a temporary file, hashing the bytes as they arrive,
//! and keep the file only when its size and SHA-256 are the expected ones.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

use super::registry::RemoteFile;
use crate::{Error, Result};

/// Bytes read from the network (and hashed) per step.
const CHUNK: usize = 64 * 1024;

/// A file or folder that is deleted when dropped, unless [`Partial::keep`] was called:
/// whatever goes wrong between its creation and its rename leaves nothing behind.
pub(crate) struct Partial {
    path: PathBuf,
    kept: bool,
}

impl Partial {
    /// `<dir>/<name>.part-<process id>-<n>`: no two downloads, in one process or in two, write
    /// the same temporary path. Leftovers of killed runs are removed first ([`remove_stale`]).
    pub(crate) fn beside(dest: &Path) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        remove_stale(dest);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = dest.with_file_name(format!("{}{}-{n}", part_prefix(dest), std::process::id()));
        remove_any(&path); // a killed run whose process id is ours again may have left it
        Partial { path, kept: false }
    }

    /// The temporary path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Renames the temporary file or folder to `dest`; it is no longer deleted on drop.
    pub(crate) fn keep(mut self, dest: &Path) -> std::io::Result<()> {
        std::fs::rename(&self.path, dest)?;
        self.kept = true;
        Ok(())
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.kept {
            remove_any(&self.path);
        }
    }
}

/// `<name>.part-`: the start of every temporary path for `dest`.
fn part_prefix(dest: &Path) -> String {
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    format!("{name}.part-")
}

/// A temporary file or folder untouched for this long belongs to a run that was killed (a
/// live download writes at least once per read timeout, 60 s).
const STALE_AFTER: Duration = Duration::from_secs(10 * 60);

/// Removes the temporary files or folders for `dest` that a killed run left behind.
fn remove_stale(dest: &Path) {
    let (Some(dir), prefix) = (dest.parent(), part_prefix(dest)) else { return };
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let stale = entry.metadata().and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok()).is_some_and(|age| age > STALE_AFTER);
        if stale && entry.file_name().to_string_lossy().starts_with(&prefix) {
            remove_any(&entry.path());
        }
    }
}

/// Removes a file or a folder tree if it exists (best effort: used to clean up).
fn remove_any(path: &Path) {
    if path.is_dir() {
        let _ = std::fs::remove_dir_all(path);
    } else {
        let _ = std::fs::remove_file(path);
    }
}

/// The HTTP client: rustls for TLS, redirects followed up to 10 times (more is an error: a
/// loop), and timeouts on connecting and on each read, never on the whole body (a slow link
/// may take minutes for CIFAR-10). No `Accept-Encoding`: a `.gz` file arrives as its bytes.
pub(crate) fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .timeout_per_read(Some(Duration::from_secs(60)))
        .max_redirects(10)
        .user_agent(concat!("dalle-from-scratch/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// Downloads `url` to `dest`, which is written only if the body is exactly `file.bytes` long
/// and its SHA-256 is `file.sha256`. On failure, returns why in words (for a list of attempts).
pub(crate) fn fetch_verified(agent: &ureq::Agent, url: &str, file: &RemoteFile, dest: &Path, bar: &ProgressBar) -> std::result::Result<(), String> {
    let response = agent.get(url).call().map_err(describe_http_error)?;
    let body = response.into_body();
    if let Some(announced) = body.content_length() {
        if announced != file.bytes {
            return Err(format!("the server announces {announced} bytes, expected {} (not the official file)", file.bytes));
        }
    }
    let partial = Partial::beside(dest);
    let mut out = File::create(partial.path()).map_err(|e| format!("cannot create {}: {e}", partial.path().display()))?;
    bar.set_message(file.name.clone());
    bar.set_position(0);
    bar.set_length(file.bytes);

    // At most one byte more than expected is read: a server that sends more is caught
    // without filling the disk.
    let mut reader = body.into_reader().take(file.bytes + 1);
    let mut hasher = Sha256::new();
    let mut received = 0u64;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("the connection broke after {received} of {} bytes: {e}", file.bytes)),
        };
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(|e| format!("cannot write {}: {e}", partial.path().display()))?;
        received += n as u64;
        bar.set_position(received);
    }
    if received != file.bytes {
        return Err(if received < file.bytes {
            format!("the body ended after {received} of {} bytes (a truncated download)", file.bytes)
        } else {
            format!("the body is longer than the expected {} bytes (not the official file)", file.bytes)
        });
    }
    // SHA-256 (FIPS 180-4) of the whole body, as 64 hex digits.
    let sha256 = format!("{:x}", hasher.finalize());
    if sha256 != file.sha256 {
        return Err(format!("SHA-256 is {sha256}, expected {} (a corrupted or different file)", file.sha256));
    }
    out.sync_all().map_err(|e| format!("cannot write {}: {e}", partial.path().display()))?;
    drop(out);
    let from = partial.path().to_path_buf();
    partial.keep(dest).map_err(|e| format!("cannot rename {} to {}: {e}", from.display(), dest.display()))
}

/// ureq's error in a reader's words: the HTTP status, a redirect loop, or the network error.
fn describe_http_error(e: ureq::Error) -> String {
    match e {
        ureq::Error::StatusCode(code) => format!("HTTP status {code}"),
        ureq::Error::TooManyRedirects => "more than 10 redirects (a redirect loop)".to_string(),
        ureq::Error::HostNotFound => "host not found (no internet connection, or DNS fails)".to_string(),
        ureq::Error::ConnectionFailed => "could not connect".to_string(),
        ureq::Error::Io(e) => format!("network error: {e}"),
        other => other.to_string(),
    }
}

/// SHA-256 of a file on disk, as 64 lower-case hex digits.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut reader = BufReader::new(File::open(path).map_err(|e| Error::io(path, e))?);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = reader.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(format!("{:x}", hasher.finalize()))
}

/// A byte-counting progress bar on stderr (hidden when `show` is false; indicatif
/// also hides it when stderr is not a terminal).
pub(crate) fn progress_bar(show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {decimal_bytes}/{decimal_total_bytes} {decimal_bytes_per_sec} eta {eta}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar
}
