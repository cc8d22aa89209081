//! Data sets fetched and verified on first use.
//!
//! [`super::load`] looks for a data set in the data folder first (`--data-dir`,
//! `$DALLE_DATA_DIR`, `../shared/data`). Where it is not there, it looks in a per-user cache
//! folder ([`default_cache_dir`], e.g. `~/.cache/dalle-from-scratch`), which has the data
//! folder's layout (`mnist/`, `fashion-mnist/`, `cifar-10-batches-bin/`). Where it is not there
//! either, [`DataCache::provide`] downloads the official files into the cache:
//!
//! 1. each file is asked of the mirrors in [`registry`] in order, until one delivers it;
//! 2. the body streams into `<file>.part-<pid>` and through SHA-256, with a progress bar;
//! 3. the file is renamed to its real name only when its size and SHA-256 are the values written
//!    in [`registry`], so the cache never holds a file that was not verified;
//! 4. an archive (CIFAR-10's binary version) is unpacked into a temporary folder, renamed when
//!    every batch is out, and then deleted.
//!
//! A network error, a 404, a redirect loop, a truncated body or a wrong hash removes the
//! temporary file and moves on to the next mirror; when none works, the error lists every
//! attempt and says what to do. `--no-download` or `DALLE_NO_DOWNLOAD=1` turns downloads off:
//! then a missing data set is an error that says where to put the files.

pub mod cache_dir;
pub mod fetch;
pub mod registry;
mod unpack;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use indicatif::DecimalBytes;

pub use cache_dir::{default_cache_dir, CACHE_DIR_ENV};
pub use fetch::sha256_file;
pub use registry::{official, Archive, RemoteDataset, RemoteFile};

use super::cifar::find_cifar10;
use super::idx::{find_idx_file, idx_file_stems};
use super::{DatasetName, Split, DATA_DIR_ENV};
use crate::{Error, Result};

/// The environment variable that turns downloads off (any value but `0`, `false`, `no`, `off`).
pub const NO_DOWNLOAD_ENV: &str = "DALLE_NO_DOWNLOAD";

/// The process-wide switch that `--no-download` turns off ([`allow_downloads`]).
static DOWNLOADS_ALLOWED: AtomicBool = AtomicBool::new(true);

/// Allows or forbids downloads for the rest of the process (the `--no-download` flag calls
/// this with `false` in [`crate::train::CommonArgs::start`]).
pub fn allow_downloads(allowed: bool) {
    DOWNLOADS_ALLOWED.store(allowed, Ordering::Relaxed);
}

/// `true` unless [`allow_downloads`]`(false)` was called or `$DALLE_NO_DOWNLOAD` is set.
pub fn downloads_allowed() -> bool {
    let env_says_no = std::env::var(NO_DOWNLOAD_ENV)
        .is_ok_and(|v| !matches!(v.trim().to_ascii_lowercase().as_str(), "" | "0" | "false" | "no" | "off" | "n" | "f"));
    DOWNLOADS_ALLOWED.load(Ordering::Relaxed) && !env_says_no
}

/// Whether `dir` holds some of `split` of `name`, in any layout the loaders read. Some is
/// enough: a data folder with half the files is the user's copy, and the loader then says
/// which file is missing rather than silently using another copy.
pub fn found_in(name: DatasetName, dir: &Path, split: Split) -> bool {
    match name {
        DatasetName::Mnist | DatasetName::FashionMnist => {
            let (images, labels) = idx_file_stems(split);
            let folder = dir.join(name.as_str());
            find_idx_file(&folder, images).is_some() || find_idx_file(&folder, labels).is_some()
        }
        DatasetName::Cifar10 => find_cifar10(dir, split).is_some(),
        DatasetName::Shapes => true,
    }
}

/// Whether `dir` holds all of `split` of `name` (a cache folder may hold an interrupted
/// download's first files; then the rest is fetched).
fn complete_in(name: DatasetName, dir: &Path, split: Split) -> bool {
    match name {
        DatasetName::Mnist | DatasetName::FashionMnist => {
            let (images, labels) = idx_file_stems(split);
            let folder = dir.join(name.as_str());
            find_idx_file(&folder, images).is_some() && find_idx_file(&folder, labels).is_some()
        }
        // The unpacked folder appears in one rename, with every batch in it.
        DatasetName::Cifar10 => find_cifar10(dir, split).is_some(),
        DatasetName::Shapes => true,
    }
}

/// The cache folder, whether it may download, and where the files come from.
#[derive(Debug, Clone)]
pub struct DataCache {
    /// The cache folder; data sets lie in it with the data folder's layout.
    pub root: PathBuf,
    /// Whether a data set missing from the cache may be downloaded.
    pub download: bool,
    /// Where each data set comes from: [`official`] sources, unless a test points them elsewhere.
    pub sources: Vec<RemoteDataset>,
    /// Draw a progress bar on stderr while downloading (only shown on a terminal).
    pub progress: bool,
}

impl DataCache {
    /// The cache of a normal run: [`default_cache_dir`], the official sources, downloads
    /// allowed unless [`downloads_allowed`] says no.
    pub fn from_env() -> Self {
        let names = [DatasetName::Mnist, DatasetName::FashionMnist, DatasetName::Cifar10];
        DataCache {
            root: default_cache_dir(),
            download: downloads_allowed(),
            sources: names.into_iter().filter_map(official).collect(),
            progress: true,
        }
    }

    /// Where `name` comes from, if it can be downloaded.
    pub fn source(&self, name: DatasetName) -> Option<&RemoteDataset> {
        self.sources.iter().find(|s| s.dataset == name)
    }

    /// The folder to load `split` of `name` from, for a data set that is not in `data_dir`:
    /// the cache root, after downloading the data set into it if needed and allowed.
    pub fn provide(&self, name: DatasetName, data_dir: &Path, split: Split) -> Result<PathBuf> {
        if complete_in(name, &self.root, split) {
            return Ok(self.root.clone());
        }
        let Some(source) = self.source(name) else {
            return Err(Error::MissingData(format!("{name}: not in {} and no download source is known", data_dir.display())));
        };
        if !self.download {
            return Err(self.not_found(source, data_dir));
        }
        self.download(source, data_dir)?;
        if !complete_in(name, &self.root, split) {
            return Err(Error::Download(format!(
                "{name}: the download finished but {} does not hold the {} split",
                self.root.display(),
                split.as_str()
            )));
        }
        Ok(self.root.clone())
    }

    /// Downloads every file of `source` that the cache lacks, verifies it, and unpacks an
    /// archive. `data_dir` is only named in the error message, as a place for a manual copy.
    pub fn download(&self, source: &RemoteDataset, data_dir: &Path) -> Result<()> {
        let folder = if source.archive.is_some() { self.root.clone() } else { self.root.join(&source.folder) };
        std::fs::create_dir_all(&folder).map_err(|e| Error::io(&folder, e))?;
        eprintln!(
            "{}: not in the data folder {}; downloading {} into {}",
            source.dataset,
            data_dir.display(),
            DecimalBytes(source.download_bytes()),
            folder.display()
        );
        let agent = fetch::agent();
        let bar = fetch::progress_bar(self.progress);
        for file in &source.files {
            let dest = folder.join(&file.name);
            if dest.is_file() {
                continue; // verified by an earlier run (only verified files get their real name)
            }
            let mut attempts = Vec::new();
            for base in &source.mirrors {
                let url = format!("{base}{}", file.name);
                match fetch::fetch_verified(&agent, &url, file, &dest, &bar) {
                    Ok(()) => break,
                    Err(why) => attempts.push(format!("{url}: {why}")),
                }
            }
            if !dest.is_file() {
                bar.finish_and_clear();
                return Err(self.download_failed(source, file, &attempts, data_dir));
            }
        }
        bar.finish_and_clear();
        if let Some(archive) = &source.archive {
            for file in &source.files {
                let path = folder.join(&file.name);
                unpack::unpack_tar_gz(&path, archive, &self.root).map_err(|why| {
                    let _ = std::fs::remove_file(&path);
                    Error::Download(format!("{}: {why}; the archive was deleted, run again to download it anew", source.dataset))
                })?;
                std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
            }
        }
        Ok(())
    }

    /// The error for a data set that is nowhere and may not be downloaded.
    fn not_found(&self, source: &RemoteDataset, data_dir: &Path) -> Error {
        let name = source.dataset;
        let cache_folder = self.root.join(&source.folder);
        // An archive is named in full; a set of files by the folders that hold them.
        let urls: Vec<String> = match &source.archive {
            Some(_) => source.mirrors.iter().map(|m| format!("{m}{}", source.files[0].name)).collect(),
            None => source.mirrors.clone(),
        };
        Error::MissingData(format!(
            "{name}: expected {} in folder {} or in the cache {}, and downloads are off \
             (--no-download or ${NO_DOWNLOAD_ENV}). Put the official files in one of those folders \
             ({}from {}), point --data-dir / ${DATA_DIR_ENV} at a folder that holds `{}/`, \
             or run without --no-download to fetch {} once",
            expected_files(source).join(", "),
            data_dir.join(&source.folder).display(),
            cache_folder.display(),
            if source.archive.is_some() { "unpack the archive, " } else { "" },
            urls.join(" or "),
            source.folder,
            DecimalBytes(source.download_bytes()),
        ))
    }

    /// The error for a file that no mirror delivered: every attempt, and what to do.
    fn download_failed(&self, source: &RemoteDataset, file: &RemoteFile, attempts: &[String], data_dir: &Path) -> Error {
        Error::Download(format!(
            "{}: could not download {} ({} bytes, sha256 {}):\n  {}\nNo partial file was kept in {}. \
             Check the internet connection (behind a proxy, set HTTPS_PROXY) and run again; or download \
             the file yourself from one of the URLs above and put {} in {}; or point --data-dir at a \
             folder that holds `{}/` (see chapters/datasets.md)",
            source.dataset,
            file.name,
            file.bytes,
            file.sha256,
            attempts.join("\n  "),
            self.root.display(),
            if source.archive.is_some() { "its unpacked folder" } else { "it" },
            data_dir.join(&source.folder).display(),
            source.folder,
        ))
    }
}

/// The files a loader expects for `source`: the downloaded names, or an archive's members.
fn expected_files(source: &RemoteDataset) -> Vec<String> {
    match &source.archive {
        Some(archive) => archive.members.iter().map(|(m, _)| m.clone()).collect(),
        None => source.files.iter().map(|f| f.name.clone()).collect(),
    }
}
