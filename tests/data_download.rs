//! The data cache and its downloads, against an HTTP server on 127.0.0.1 started by each test
//! (no test here touches the internet). The server counts connections, so "no download" can be
//! checked as "no connection".

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use clap::Parser;
use dalle::data::download::{official, sha256_file, Archive, DataCache, RemoteDataset, RemoteFile};
use dalle::data::{load_with, DatasetName, Split};
use dalle::train::CommonArgs;
use dalle::Error;
use sha2::{Digest, Sha256};

mod common;
use common::{temp_dir, TempDir};

/// What the test server answers for one path.
#[derive(Clone)]
enum Reply {
    /// 200 with the body and its Content-Length.
    Body(Vec<u8>),
    /// 200, Content-Length of the whole body, then only the first `n` bytes and a close.
    Truncated(Vec<u8>, usize),
    /// 200 with no Content-Length: the body ends when the connection closes.
    Unsized(Vec<u8>),
    /// 404 Not Found.
    NotFound,
    /// 302 to another path.
    Redirect(String),
    /// The request is read, then the connection is closed with no answer.
    Close,
}

/// A one-thread HTTP/1.1 server on an ephemeral loopback port; `routes` maps a path to a reply
/// (anything else is a 404).
struct Server {
    base: String,
    connections: Arc<AtomicUsize>,
}

impl Server {
    fn start(routes: Vec<(&str, Reply)>) -> Server {
        let routes: Vec<(String, Reply)> = routes.into_iter().map(|(p, r)| (p.to_string(), r)).collect();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        // The thread ends with the test process; each test has its own port.
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                count.fetch_add(1, Ordering::SeqCst);
                serve(stream, &routes);
            }
        });
        Server { base, connections }
    }

    /// `http://127.0.0.1:PORT/path`.
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

fn serve(mut stream: TcpStream, routes: &[(String, Reply)]) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head);
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
    let reply = routes.iter().find(|(p, _)| *p == path).map_or(Reply::NotFound, |(_, r)| r.clone());
    let _ = match reply {
        Reply::Body(body) => write_response(&mut stream, "200 OK", Some(body.len()), &body),
        Reply::Truncated(body, n) => write_response(&mut stream, "200 OK", Some(body.len()), &body[..n]),
        Reply::Unsized(body) => write_response(&mut stream, "200 OK", None, &body),
        Reply::NotFound => write_response(&mut stream, "404 Not Found", Some(9), b"not found"),
        Reply::Redirect(to) => stream.write_all(
            format!("HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes(),
        ),
        Reply::Close => Ok(()),
    };
}

fn write_response(stream: &mut TcpStream, status: &str, length: Option<usize>, body: &[u8]) -> std::io::Result<()> {
    let length = length.map_or(String::new(), |n| format!("Content-Length: {n}\r\n"));
    stream.write_all(format!("HTTP/1.1 {status}\r\n{length}Connection: close\r\n\r\n").as_bytes())?;
    stream.write_all(body)
}

fn sha256(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// A small MNIST in the official file layout: `n` images of 28x28 (the loader enforces MNIST's
/// size), image `i` all pixels `i`,
/// label `i % 10`; the four gzipped idx files, by name.
fn tiny_mnist(n: u8) -> Vec<(String, Vec<u8>)> {
    let idx = |ndim: u8, dims: &[u32], data: Vec<u8>| {
        let mut b = vec![0, 0, 8, ndim];
        dims.iter().for_each(|d| b.extend_from_slice(&d.to_be_bytes()));
        b.extend(data);
        gzip(&b)
    };
    let mut files = Vec::new();
    for prefix in ["train", "t10k"] {
        let images = (0..n).flat_map(|i| [i; 28 * 28]).collect();
        let labels = (0..n).map(|i| i % 10).collect();
        files.push((format!("{prefix}-images-idx3-ubyte.gz"), idx(3, &[n as u32, 28, 28], images)));
        files.push((format!("{prefix}-labels-idx1-ubyte.gz"), idx(1, &[n as u32], labels)));
    }
    files
}

/// A cache in `root` whose MNIST comes from `mirrors`, with these files' sizes and hashes.
fn cache_for(root: &Path, mirrors: Vec<String>, files: &[(String, Vec<u8>)], download: bool) -> DataCache {
    let source = RemoteDataset {
        dataset: DatasetName::Mnist,
        mirrors,
        files: files.iter().map(|(name, bytes)| RemoteFile::new(name, bytes.len() as u64, &sha256(bytes))).collect(),
        folder: "mnist".into(),
        archive: None,
    };
    DataCache { root: root.to_path_buf(), download, sources: vec![source], progress: false }
}

/// Every file under `dir`, recursively (the cache must hold none after a failure).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(files_under(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// Serve `files` under `/mnist/`, plus extra routes.
fn mnist_server(files: &[(String, Vec<u8>)], extra: Vec<(&str, Reply)>) -> Server {
    let paths: Vec<String> = files.iter().map(|(name, _)| format!("/mnist/{name}")).collect();
    let mut routes: Vec<(&str, Reply)> = paths.iter().zip(files).map(|(p, (_, b))| (p.as_str(), Reply::Body(b.clone()))).collect();
    routes.extend(extra);
    Server::start(routes)
}

#[test]
fn a_good_download_lands_in_the_cache_and_the_loader_reads_it_and_a_second_run_does_not_download() {
    let files = tiny_mnist(5);
    let server = mnist_server(&files, vec![]);
    let (data_dir, cache_root) = (temp_dir("dl-data"), temp_dir("dl-cache"));
    // With the progress bar on (indicatif hides it when stderr is not a terminal, but its
    // template is parsed and it is driven all the same).
    let cache = DataCache { progress: true, ..cache_for(&cache_root, vec![server.url("/mnist/")], &files, true) };

    // What a run killed mid-download leaves (11 minutes old): removed; a fresh one is left alone.
    std::fs::create_dir_all(cache_root.join("mnist")).unwrap();
    let stale = cache_root.join("mnist/train-images-idx3-ubyte.gz.part-4242-0");
    std::fs::write(&stale, b"half a file").unwrap();
    let eleven_minutes_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(11 * 60);
    std::fs::File::options().write(true).open(&stale).unwrap().set_modified(eleven_minutes_ago).unwrap();
    let live = cache_root.join("mnist/train-labels-idx1-ubyte.gz.part-4243-0");
    std::fs::write(&live, b"being written").unwrap();

    let train = load_with(DatasetName::Mnist, &data_dir, Split::Train, None, &cache).unwrap();
    assert!(!stale.exists(), "a killed run's leftover is removed");
    std::fs::remove_file(&live).expect("another live download's file is left alone");
    assert_eq!(train.images.dim(), (5, 1, 28, 28));
    assert_eq!(train.labels, vec![0, 1, 2, 3, 4]);
    assert_eq!(train.images[[3, 0, 27, 27]], 3.0 / 255.0);
    assert_eq!(server.connections(), 4, "the four files, one connection each");
    let mut kept: Vec<PathBuf> = files_under(&cache_root);
    kept.sort();
    let mut expected: Vec<PathBuf> = files.iter().map(|(n, _)| cache_root.join("mnist").join(n)).collect();
    expected.sort();
    assert_eq!(kept, expected, "exactly the four files under their own names, no .part left");
    for (name, bytes) in &files {
        assert_eq!(&std::fs::read(cache_root.join("mnist").join(name)).unwrap(), bytes, "{name}");
    }

    // A second run (a fresh cache value, as a new process would make) reads the cache.
    let again = cache_for(&cache_root, vec![server.url("/mnist/")], &files, true);
    let test = load_with(DatasetName::Mnist, &data_dir, Split::Test, Some(2), &again).unwrap();
    assert_eq!(test.labels, vec![0, 1]);
    load_with(DatasetName::Mnist, &data_dir, Split::Train, None, &again).unwrap();
    assert_eq!(server.connections(), 4, "nothing is downloaded twice");

    // An interrupted earlier run left two files: only the other two are fetched.
    std::fs::remove_file(cache_root.join("mnist/t10k-images-idx3-ubyte.gz")).unwrap();
    std::fs::remove_file(cache_root.join("mnist/t10k-labels-idx1-ubyte.gz")).unwrap();
    load_with(DatasetName::Mnist, &data_dir, Split::Test, None, &again).unwrap();
    assert_eq!(server.connections(), 6);
}

#[test]
fn two_threads_downloading_into_one_cache_both_get_the_verified_files() {
    let files = tiny_mnist(6);
    let server = mnist_server(&files, vec![]);
    let (data_dir, cache_root) = (temp_dir("dl-data"), temp_dir("dl-cache"));
    let cache = cache_for(&cache_root, vec![server.url("/mnist/")], &files, true);
    std::thread::scope(|s| {
        let load = |split| load_with(DatasetName::Mnist, &data_dir, split, None, &cache).map(|set| set.len());
        let train = s.spawn(move || load(Split::Train));
        let test = s.spawn(move || load(Split::Test));
        assert_eq!(train.join().unwrap().unwrap(), 6);
        assert_eq!(test.join().unwrap().unwrap(), 6);
    });
    assert_eq!(files_under(&cache_root).len(), 4, "no temporary file left");
    for (name, bytes) in &files {
        assert_eq!(&std::fs::read(cache_root.join("mnist").join(name)).unwrap(), bytes, "{name}");
    }
}

#[test]
fn the_data_folder_wins_over_the_cache_and_never_downloads() {
    let files = tiny_mnist(3);
    let server = mnist_server(&files, vec![]);
    let (data_dir, cache_root) = (temp_dir("dl-data"), temp_dir("dl-cache"));
    std::fs::create_dir_all(data_dir.join("mnist")).unwrap();
    for (name, bytes) in &files {
        std::fs::write(data_dir.join("mnist").join(name), bytes).unwrap();
    }
    let cache = cache_for(&cache_root, vec![server.url("/mnist/")], &files, true);
    assert_eq!(load_with(DatasetName::Mnist, &data_dir, Split::Train, None, &cache).unwrap().len(), 3);
    assert_eq!(server.connections(), 0);
    assert!(files_under(&cache_root).is_empty());
}

#[test]
fn mirrors_are_tried_in_order_and_a_redirect_is_followed() {
    let files = tiny_mnist(2);
    let server = mnist_server(
        &files,
        vec![
            ("/moved/train-images-idx3-ubyte.gz", Reply::Redirect("/mnist/train-images-idx3-ubyte.gz".into())),
            ("/moved/train-labels-idx1-ubyte.gz", Reply::Redirect("/mnist/train-labels-idx1-ubyte.gz".into())),
        ],
    );
    let (data_dir, cache_root) = (temp_dir("dl-data"), temp_dir("dl-cache"));
    // The first mirror has nothing (404 for all), the second redirects two files and 404s two.
    let mirrors = vec![server.url("/gone/"), server.url("/moved/"), server.url("/mnist/")];
    let cache = cache_for(&cache_root, mirrors, &files, true);
    let set = load_with(DatasetName::Mnist, &data_dir, Split::Train, None, &cache).unwrap();
    assert_eq!(set.labels, vec![0, 1]);
    assert_eq!(files_under(&cache_root).len(), 4);
}

/// Downloads MNIST from a server whose train images answer `reply`; returns the error, after
/// checking that the cache holds no file at all.
fn failed_download(reply: Reply) -> String {
    let files = tiny_mnist(4);
    let server = Server::start(vec![("/mnist/train-images-idx3-ubyte.gz", reply)]);
    let (data_dir, cache_root): (TempDir, TempDir) = (temp_dir("dl-data"), temp_dir("dl-cache"));
    let cache = cache_for(&cache_root, vec![server.url("/mnist/")], &files, true);
    let err = load_with(DatasetName::Mnist, &data_dir, Split::Train, None, &cache).unwrap_err();
    assert!(matches!(err, Error::Download(_)), "{err}");
    let left = files_under(&cache_root);
    assert!(left.is_empty(), "a failed download left {left:?}");
    let msg = err.to_string();
    // Every failure names the URL, the folder for a manual copy and what to do.
    assert!(msg.contains(&server.url("/mnist/train-images-idx3-ubyte.gz")), "{msg}");
    assert!(msg.contains(&data_dir.join("mnist").display().to_string()), "{msg}");
    assert!(msg.contains("No partial file was kept") && msg.contains("run again"), "{msg}");
    msg
}

#[test]
fn a_wrong_checksum_keeps_nothing() {
    let mut body = tiny_mnist(4)[0].1.clone();
    let last = body.len() - 1;
    body[last] ^= 1; // same size, one bit off
    let msg = failed_download(Reply::Body(body));
    assert!(msg.contains("SHA-256 is") && msg.contains("expected"), "{msg}");
}

#[test]
fn a_truncated_body_keeps_nothing() {
    let body = tiny_mnist(4)[0].1.clone();
    let msg = failed_download(Reply::Truncated(body.clone(), body.len() / 2));
    assert!(msg.contains(&format!("of {} bytes", body.len())), "{msg}");
    // Without a Content-Length, the short body is caught by counting.
    let msg = failed_download(Reply::Unsized(body[..10].to_vec()));
    assert!(msg.contains(&format!("ended after 10 of {} bytes", body.len())), "{msg}");
    // A Content-Length that differs from the official size is refused before the body.
    let msg = failed_download(Reply::Body(body[..20].to_vec()));
    assert!(msg.contains(&format!("announces 20 bytes, expected {}", body.len())), "{msg}");
}

#[test]
fn a_server_that_closes_early_keeps_nothing() {
    let msg = failed_download(Reply::Close);
    assert!(msg.contains("train-images-idx3-ubyte.gz:"), "{msg}");
}

#[test]
fn a_404_keeps_nothing() {
    let msg = failed_download(Reply::NotFound);
    assert!(msg.contains("HTTP status 404"), "{msg}");
}

#[test]
fn a_redirect_loop_keeps_nothing() {
    let msg = failed_download(Reply::Redirect("/mnist/train-images-idx3-ubyte.gz".into()));
    assert!(msg.contains("redirect loop"), "{msg}");
}

#[test]
fn no_download_never_opens_a_connection_and_says_where_to_put_the_files() {
    let files = tiny_mnist(2);
    let server = mnist_server(&files, vec![]);
    let (data_dir, cache_root) = (temp_dir("dl-data"), temp_dir("dl-cache"));
    let cache = cache_for(&cache_root, vec![server.url("/mnist/")], &files, false);
    let err = load_with(DatasetName::Mnist, &data_dir, Split::Train, None, &cache).unwrap_err();
    assert!(matches!(err, Error::MissingData(_)), "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&data_dir.join("mnist").display().to_string()), "{msg}");
    assert!(msg.contains(&cache_root.join("mnist").display().to_string()), "{msg}");
    assert!(msg.contains("train-images-idx3-ubyte.gz") && msg.contains("--no-download"), "{msg}");
    assert!(msg.contains(&server.url("/mnist/")), "names where the files come from: {msg}");
    assert_eq!(server.connections(), 0);
    assert!(files_under(&cache_root).is_empty());

    // The flag: `--no-download` on the command line turns the cache's downloads off.
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        common: CommonArgs,
    }
    let args = Cli::try_parse_from(["example", "--no-download"]).unwrap().common;
    assert!(args.no_download && !args.data_cache().download);
}

/// A `.tar.gz` holding `members` (path, bytes).
fn tar_gz(members: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
    for (path, bytes) in members {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        // set_path refuses `..`; the raw name field takes any bytes, as a hostile archive would.
        header.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        header.set_cksum();
        builder.append(&header, bytes.as_slice()).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

/// CIFAR-10's binary version in miniature: 2 records per batch, record `r` of batch `b` has
/// label `(b + r) % 10` and every pixel `10 b + r`.
fn tiny_cifar_members() -> Vec<(String, Vec<u8>)> {
    let names = ["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin", "test_batch.bin"];
    names
        .iter()
        .enumerate()
        .map(|(b, name)| {
            let bytes = (0..2u8).flat_map(|r| std::iter::once((b as u8 + r) % 10).chain(std::iter::repeat_n(10 * b as u8 + r, 3072))).collect();
            (name.to_string(), bytes)
        })
        .collect()
}

fn cifar_cache(root: &Path, server: &Server, archive_bytes: &[u8], members: &[(String, Vec<u8>)]) -> DataCache {
    let source = RemoteDataset {
        dataset: DatasetName::Cifar10,
        mirrors: vec![server.url("/kriz/")],
        files: vec![RemoteFile::new("cifar-10-binary.tar.gz", archive_bytes.len() as u64, &sha256(archive_bytes))],
        folder: "cifar-10-batches-bin".into(),
        archive: Some(Archive {
            folder: "cifar-10-batches-bin".into(),
            members: members.iter().map(|(n, b)| (n.clone(), b.len() as u64)).collect(),
        }),
    };
    DataCache { root: root.to_path_buf(), download: true, sources: vec![source], progress: false }
}

#[test]
fn the_cifar_archive_is_unpacked_member_by_member_then_deleted() {
    let members = tiny_cifar_members();
    let mut entries: Vec<(String, Vec<u8>)> = members.iter().map(|(n, b)| (format!("cifar-10-batches-bin/{n}"), b.clone())).collect();
    entries.push(("cifar-10-batches-bin/readme.html".into(), b"<html>".to_vec()));
    entries.push(("../escaped.bin".into(), b"outside".to_vec()));
    let entries: Vec<(&str, Vec<u8>)> = entries.iter().map(|(p, b)| (p.as_str(), b.clone())).collect();
    let archive = tar_gz(&entries);
    let server = Server::start(vec![("/kriz/cifar-10-binary.tar.gz", Reply::Body(archive.clone()))]);
    let (data_dir, cache_root) = (temp_dir("dl-data"), temp_dir("dl-cache"));
    let cache = cifar_cache(&cache_root, &server, &archive, &members);

    let test = load_with(DatasetName::Cifar10, &data_dir, Split::Test, None, &cache).unwrap();
    assert_eq!(test.images.dim(), (2, 3, 32, 32));
    assert_eq!(test.labels, vec![5, 6]); // batch index 5
    assert_eq!(test.images[[1, 2, 31, 31]], 51.0 / 255.0);
    let mut kept: Vec<String> = files_under(&cache_root).iter().map(|p| p.strip_prefix(&*cache_root).unwrap().display().to_string()).collect();
    kept.sort();
    let mut expected: Vec<String> = members.iter().map(|(n, _)| format!("cifar-10-batches-bin/{n}")).collect();
    expected.sort();
    assert_eq!(kept, expected, "only the listed batches; the archive is gone, nothing escaped");
    assert!(!cache_root.parent().unwrap().join("escaped.bin").exists());

    let train = load_with(DatasetName::Cifar10, &data_dir, Split::Train, None, &cache).unwrap();
    assert_eq!(train.labels, vec![0, 1, 1, 2, 2, 3, 3, 4, 4, 5]);
    assert_eq!(server.connections(), 1);
}

#[test]
fn an_archive_that_lacks_a_batch_keeps_nothing() {
    let members = tiny_cifar_members();
    let entries: Vec<(String, Vec<u8>)> = members[..5].iter().map(|(n, b)| (format!("cifar-10-batches-bin/{n}"), b.clone())).collect();
    let entries: Vec<(&str, Vec<u8>)> = entries.iter().map(|(p, b)| (p.as_str(), b.clone())).collect();
    let archive = tar_gz(&entries);
    let server = Server::start(vec![("/kriz/cifar-10-binary.tar.gz", Reply::Body(archive.clone()))]);
    let (data_dir, cache_root) = (temp_dir("dl-data"), temp_dir("dl-cache"));
    let cache = cifar_cache(&cache_root, &server, &archive, &members);
    let err = load_with(DatasetName::Cifar10, &data_dir, Split::Test, None, &cache).unwrap_err();
    assert!(matches!(err, Error::Download(_)) && err.to_string().contains("lacks cifar-10-batches-bin/test_batch.bin"), "{err}");
    let left = files_under(&cache_root);
    assert!(left.is_empty() && !cache_root.join("cifar-10-batches-bin").exists(), "{left:?}");
}

#[test]
fn the_official_sources_are_complete() {
    for name in [DatasetName::Mnist, DatasetName::FashionMnist, DatasetName::Cifar10] {
        let source = official(name).unwrap();
        assert!(!source.mirrors.is_empty() && source.mirrors.iter().all(|m| m.starts_with("http") && m.ends_with('/')), "{name}");
        for file in &source.files {
            assert!(file.sha256.len() == 64 && file.sha256.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()), "{}", file.name);
        }
    }
    let mnist = official(DatasetName::Mnist).unwrap();
    assert!(mnist.mirrors.len() >= 2 && mnist.mirrors[0].contains("ossci-datasets"), "MNIST's own host is unreliable");
    assert_eq!(mnist.download_bytes(), 11_594_722);
    assert_eq!(official(DatasetName::Cifar10).unwrap().download_bytes(), 170_052_171);
    assert!(official(DatasetName::Shapes).is_none());
}

#[test]
fn sha256_matches_published_values() {
    // FIPS 180-2, appendix B.1: SHA-256("abc").
    let dir = temp_dir("dl-sha");
    std::fs::write(dir.join("abc"), b"abc").unwrap();
    assert_eq!(sha256_file(&dir.join("abc")).unwrap(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    // The shipped CLIP merges file is OpenAI's, byte for byte (value pinned by keras-cv and
    // open_clip, and in ../shared/data/README.md).
    let bpe = dalle::tokenizer::clip_bpe::default_bpe_path();
    assert_eq!(sha256_file(&bpe).unwrap(), "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a");
}
