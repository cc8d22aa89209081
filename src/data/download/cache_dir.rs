//! The per-user cache folder that downloaded data sets go to.

use std::path::PathBuf;

/// The environment variable that overrides the cache folder.
pub const CACHE_DIR_ENV: &str = "DALLE_CACHE_DIR";

/// This project's folder name inside the platform's cache directory.
const APP_FOLDER: &str = "dalle-from-scratch";

/// `$DALLE_CACHE_DIR` if set, else the platform's cache directory plus `dalle-from-scratch/`:
/// `$XDG_CACHE_HOME` or `~/.cache` on Linux, `~/Library/Caches` on macOS,
/// `%LOCALAPPDATA%` on Windows (as the `dirs` crate finds them). Where none is known (no home
/// folder), `./.cache/dalle-from-scratch`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(CACHE_DIR_ENV).filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    dirs::cache_dir().unwrap_or_else(|| PathBuf::from(".cache")).join(APP_FOLDER)
}
