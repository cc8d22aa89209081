//! Unpacking a downloaded `.tar.gz` (CIFAR-10's binary version) into the cache.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Component, Path, PathBuf};

use flate2::read::GzDecoder;

use super::fetch::Partial;
use super::registry::Archive;

/// Extracts the members that `archive` lists from the `.tar.gz` at `path` into
/// `<root>/<archive.folder>/`. Only those members are read, each checked against its expected
/// size; anything else in the archive is skipped, so no path from the archive is ever trusted.
/// The members go to a temporary folder first, renamed once all of them are there.
pub(crate) fn unpack_tar_gz(path: &Path, archive: &Archive, root: &Path) -> std::result::Result<(), String> {
    let dest = root.join(&archive.folder);
    let partial = Partial::beside(&dest);
    std::fs::create_dir_all(partial.path()).map_err(|e| format!("cannot create {}: {e}", partial.path().display()))?;
    let file = File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let mut tar = tar::Archive::new(GzDecoder::new(BufReader::new(file)));
    let mut found = HashSet::new();
    let entries = tar.entries().map_err(|e| format!("{}: not a tar.gz archive: {e}", path.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: broken archive: {e}", path.display()))?;
        let entry_path = entry.path().map_err(|e| format!("{}: bad member name: {e}", path.display()))?.into_owned();
        let Some((name, expected)) = wanted_member(&entry_path, archive) else { continue };
        if entry.size() != expected {
            return Err(format!("{}: member {} has {} bytes, expected {expected}", path.display(), entry_path.display(), entry.size()));
        }
        let out_path = partial.path().join(&name);
        let mut out = File::create(&out_path).map_err(|e| format!("cannot create {}: {e}", out_path.display()))?;
        let written = std::io::copy(&mut entry.take(expected), &mut out)
            .map_err(|e| format!("{}: cannot unpack {}: {e}", path.display(), entry_path.display()))?;
        if written != expected {
            return Err(format!("{}: member {} ends after {written} of {expected} bytes", path.display(), entry_path.display()));
        }
        found.insert(name);
    }
    let missing: Vec<&str> = archive.members.iter().map(|(m, _)| m.as_str()).filter(|m| !found.contains(*m)).collect();
    if !missing.is_empty() {
        return Err(format!("{}: archive lacks {}/{}", path.display(), archive.folder, missing.join(", ")));
    }
    match partial.keep(&dest) {
        Ok(()) => Ok(()),
        // Another process unpacked the same archive first: its folder is as good as ours.
        Err(_) if dest.is_dir() => Ok(()),
        Err(e) => Err(format!("cannot rename the unpacked folder to {}: {e}", dest.display())),
    }
}

/// `(file name, expected size)` when `entry_path` is `<archive.folder>/<member>` for a listed member.
fn wanted_member(entry_path: &Path, archive: &Archive) -> Option<(String, u64)> {
    let parent: PathBuf = entry_path.parent()?.components().filter(|c| !matches!(c, Component::CurDir)).collect();
    if parent != Path::new(&archive.folder) {
        return None;
    }
    let name = entry_path.file_name()?.to_str()?;
    archive.members.iter().find(|(m, _)| m == name).map(|(m, bytes)| (m.clone(), *bytes))
}
