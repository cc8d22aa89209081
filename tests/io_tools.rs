//! The writers (npy, PNG grids, plots, sample folders, metrics) and the shared command line.

use std::path::{Path, PathBuf};

use clap::Parser;
use dalle::data::DatasetName;
use dalle::io::image_grid::{make_grid, save_image_grid, save_reconstructions, GridOptions};
use dalle::io::npy::{npy_bytes, read_npy, write_npy};
use dalle::io::plot::{plot_heatmap, plot_lines, plot_scatter, Series};
use dalle::io::{read_samples, write_atomic, write_samples};
use dalle::train::metrics::{read_metrics, series, MetricsLog};
use dalle::train::notebook::cell_heading;
use dalle::train::progress::{format_duration, format_metrics, Progress};
use dalle::train::{CommonArgs, DeviceArg};
use ndarray::{Array2, Array4, ArrayD, IxDyn};

mod common;
use common::temp_dir;

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[test]
fn npy_round_trips_and_has_the_v1_header() {
    let dir = temp_dir("io-npy");
    let a = Array4::from_shape_fn((2, 3, 4, 5), |(n, c, h, w)| n as f32 - 0.5 * c as f32 + 0.01 * (h * 5 + w) as f32);
    write_npy(dir.join("a.npy"), &a).unwrap();
    let back = read_npy(dir.join("a.npy")).unwrap();
    assert_eq!(back.shape(), &[2, 3, 4, 5]);
    assert_eq!(back, a.clone().into_dyn());

    let bytes = npy_bytes(&a);
    assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    assert_eq!((10 + header_len) % 64, 0, "data must start on a 64-byte boundary");
    let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
    assert!(header.starts_with("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, 4, 5), }"), "{header}");
    assert!(header.ends_with('\n'));
    assert_eq!(bytes.len(), 10 + header_len + 4 * 120);
    // First value, little-endian: a[0,0,0,0] = 0.0; second a[0,0,0,1] = 0.01.
    assert_eq!(&bytes[10 + header_len + 4..10 + header_len + 8], &0.01f32.to_le_bytes());

    // A 1-d array has the one-element tuple `(3,)`; a transposed view is written in logical order.
    let v = ndarray::arr1(&[1.0f32, 2.0, 3.0]);
    let h = String::from_utf8_lossy(&npy_bytes(&v)).into_owned();
    assert!(h.contains("'shape': (3,)"), "{h}");
    let m = ndarray::arr2(&[[1.0f32, 2.0], [3.0, 4.0]]);
    write_npy(dir.join("t.npy"), &m.t()).unwrap();
    assert_eq!(read_npy(dir.join("t.npy")).unwrap(), ArrayD::from_shape_vec(IxDyn(&[2, 2]), vec![1.0, 3.0, 2.0, 4.0]).unwrap());
}

#[test]
fn npy_bad_files_are_named() {
    let dir = temp_dir("io-npy-bad");
    let a = Array2::<f32>::zeros((3, 4));
    let bytes = npy_bytes(&a);
    std::fs::write(dir.join("cut.npy"), &bytes[..bytes.len() - 4]).unwrap();
    let msg = read_npy(dir.join("cut.npy")).unwrap_err().to_string();
    assert!(msg.contains("cut.npy") && msg.contains("needs 48 bytes") && msg.contains("has 44"), "{msg}");

    let mut f8 = bytes.clone();
    let at = f8.windows(3).position(|w| w == b"<f4").unwrap();
    f8[at + 2] = b'8';
    std::fs::write(dir.join("f8.npy"), f8).unwrap();
    let msg = read_npy(dir.join("f8.npy")).unwrap_err().to_string();
    assert!(msg.contains("'<f8'") && msg.contains("expected '<f4'"), "{msg}");

    std::fs::write(dir.join("junk.npy"), b"hello world").unwrap();
    let msg = read_npy(dir.join("junk.npy")).unwrap_err().to_string();
    assert!(msg.contains("not a .npy file"), "{msg}");
}

#[test]
fn image_grid_has_the_promised_size_and_pixels() {
    let dir = temp_dir("io-grid");
    // 10 grey images of 8x8, image i filled with i / 10.
    let images = Array4::from_shape_fn((10, 1, 8, 8), |(n, _, _, _)| n as f32 / 10.0);
    let opts = GridOptions { nrow: 4, padding: 2, scale: 2, pad_value: 1.0 };
    let path = dir.join("grid.png");
    save_image_grid(&path, &images, &opts).unwrap();
    let png = image::open(&path).unwrap().to_rgb8();
    // cols = 4, rows = ceil(10 / 4) = 3: W = (4 (8 + 2) + 2) 2 = 84, H = (3 (8 + 2) + 2) 2 = 64.
    assert_eq!(png.dimensions(), (84, 64));
    assert_eq!(png.get_pixel(0, 0).0, [255, 255, 255], "padding is white");
    // Image 5 sits at row 1, col 1: top-left (2 + 10, 2 + 10) before scaling, (24, 24) after.
    assert_eq!(png.get_pixel(25, 25).0, [128, 128, 128]);
    // Image 0 is black; the unused slots of the last row stay padding.
    assert_eq!(png.get_pixel(5, 5).0, [0, 0, 0]);
    assert_eq!(png.get_pixel(2 * (2 + 3 * 10) + 3, 2 * (2 + 2 * 10) + 3).0, [255, 255, 255]);

    let rgb = Array4::from_shape_fn((3, 3, 4, 4), |(_, c, _, _)| if c == 0 { 1.0 } else { 0.0 });
    let grid = make_grid(&rgb, &GridOptions { nrow: 8, padding: 1, scale: 1, pad_value: 0.0 }).unwrap();
    assert_eq!(grid.dim(), (3, 6, 16));
    assert_eq!((grid[[0, 1, 1]], grid[[1, 1, 1]], grid[[0, 0, 0]]), (1.0, 0.0, 0.0));

    let bad = Array4::<f32>::zeros((2, 2, 4, 4));
    let msg = make_grid(&bad, &GridOptions::default()).unwrap_err().to_string();
    assert!(msg.contains("C = 1 or 3") && msg.contains("[2, 2, 4, 4]"), "{msg}");
}

#[test]
fn reconstructions_sit_below_their_originals() {
    let dir = temp_dir("io-recon");
    // 3 black originals, 3 white reconstructions of 4x4: one row each, padding 2, scale 1.
    let originals = Array4::<f32>::zeros((3, 1, 4, 4));
    let reconstructions = Array4::<f32>::ones((3, 1, 4, 4));
    let path = dir.join("recon.png");
    save_reconstructions(&path, &originals, &reconstructions, 1).unwrap();
    let png = image::open(&path).unwrap().to_rgb8();
    // W = 3 (4 + 2) + 2 = 20, H = 2 (4 + 2) + 2 = 14
    assert_eq!(png.dimensions(), (20, 14));
    assert_eq!(png.get_pixel(9, 3).0, [0, 0, 0], "row 0, image 1: an original");
    assert_eq!(png.get_pixel(9, 9).0, [255, 255, 255], "row 1, image 1: its reconstruction");
    let other = Array4::<f32>::zeros((2, 1, 4, 4));
    let msg = save_reconstructions(&path, &originals, &other, 1).unwrap_err().to_string();
    assert!(msg.contains("[3, 1, 4, 4]") && msg.contains("[2, 1, 4, 4]"), "{msg}");
}

#[test]
fn atomic_writes_replace_files_and_leave_no_temporaries() {
    let dir = temp_dir("io-atomic");
    write_atomic(dir.join("a.bin"), b"first").unwrap();
    write_atomic(dir.join("a.bin"), b"second").unwrap();
    write_atomic(dir.join("nested/deeper/b.txt"), b"made the folders").unwrap();
    write_npy(dir.join("c.npy"), &Array2::<f32>::ones((2, 2))).unwrap();
    assert_eq!(std::fs::read(dir.join("a.bin")).unwrap(), b"second");
    assert_eq!(std::fs::read_to_string(dir.join("nested/deeper/b.txt")).unwrap(), "made the folders");
    assert_eq!(names_in(&dir), vec!["a.bin", "c.npy", "nested"]);

    // A target that cannot be written (its "folder" is a file): an error naming it, nothing left over.
    let err = write_atomic(dir.join("a.bin/inside"), b"x").unwrap_err().to_string();
    assert!(err.contains("a.bin"), "{err}");
    assert_eq!(names_in(&dir), vec!["a.bin", "c.npy", "nested"]);
}

/// Pixels with colour `rgb` in a PNG.
fn count_colour(path: &Path, rgb: [u8; 3]) -> usize {
    image::open(path).unwrap().to_rgb8().pixels().filter(|p| p.0 == rgb).count()
}

fn dark_pixels_in_rows(path: &Path, rows: std::ops::Range<u32>) -> usize {
    let img = image::open(path).unwrap().to_rgb8();
    rows.flat_map(|y| (0..img.width()).map(move |x| (x, y))).filter(|&(x, y)| img.get_pixel(x, y).0.iter().all(|&c| c < 100)).count()
}

#[test]
fn line_plots_draw_series_and_text() {
    let dir = temp_dir("io-plot");
    let loss: Vec<f32> = (0..100).map(|i| 2.0 * (-(i as f32) / 30.0).exp() + 0.1).collect();
    let s = [Series::from_values("train", &loss), Series::new("test", vec![(0.0, 2.0), (50.0, 0.5), (99.0, 0.3)])];
    let path = dir.join("loss.png");
    plot_lines(&path, "Loss curve", "step", "loss", &s, true).unwrap();
    let img = image::open(&path).unwrap();
    assert_eq!((img.width(), img.height()), (800, 500));
    // The title is rendered with the bundled font: dark pixels in the top band.
    assert!(dark_pixels_in_rows(&path, 0..35) > 50, "no title text drawn");
    // Palette99's first two colours draw the two lines.
    assert!(count_colour(&path, [230, 25, 75]) > 100, "first series missing");
    assert!(count_colour(&path, [60, 180, 75]) > 50, "second series missing");

    let empty = [Series::new("nothing", vec![(0.0, f64::NAN)])];
    let msg = plot_lines(dir.join("no.png"), "t", "x", "y", &empty, false).unwrap_err().to_string();
    assert!(msg.contains("no finite points"), "{msg}");
}

#[test]
fn heatmap_and_scatter_write_pngs() {
    let dir = temp_dir("io-heat");
    let m = Array2::from_shape_fn((4, 5), |(i, j)| (i * 5 + j) as f32 / 19.0);
    let rows: Vec<String> = ["a cat", "a dog", "a ship", "a frog"].iter().map(|s| s.to_string()).collect();
    let path = dir.join("heat.png");
    plot_heatmap(&path, "similarity", &m, &rows, &[]).unwrap();
    // The minimum cell is viridis(0) and the maximum viridis(1).
    assert!(count_colour(&path, [68, 1, 84]) > 100, "no cell at the minimum colour");
    assert!(count_colour(&path, [253, 231, 37]) > 100, "no cell at the maximum colour");

    let points: Vec<(f64, f64)> = (0..60).map(|i| ((i as f64).cos() * i as f64, (i as f64).sin() * i as f64)).collect();
    let groups: Vec<usize> = (0..60).map(|i| i % 3).collect();
    let names: Vec<String> = ["zero", "one", "two"].iter().map(|s| s.to_string()).collect();
    plot_scatter(dir.join("scatter.png"), "embeddings", &points, &groups, &names).unwrap();
    assert!(count_colour(&dir.join("scatter.png"), [230, 25, 75]) > 50);
    let msg = plot_scatter(dir.join("x.png"), "t", &points, &groups[..3], &names).unwrap_err().to_string();
    assert!(msg.contains("60 points but 3 group indices"), "{msg}");
}

#[test]
fn samples_folder_round_trips() {
    let dir = temp_dir("io-samples");
    let images = Array4::from_shape_fn((3, 1, 2, 2), |(n, _, h, w)| n as f32 * 0.6 - 0.1 + 0.1 * (h + w) as f32);
    let prompts: Vec<String> = vec!["a handwritten 1".into(), "two\nlines".into(), "a photo of a cat".into()];
    write_samples(&*dir, &images, &prompts, Some(&[1, 2, 3])).unwrap();
    assert_eq!(names_in(&dir), vec!["labels.txt", "prompts.txt", "samples.npy"]);
    let back = read_samples(&*dir).unwrap();
    assert_eq!(back.images.dim(), (3, 1, 2, 2));
    assert_eq!(back.images[[0, 0, 0, 0]], 0.0, "clamped from -0.1");
    assert_eq!(back.images[[2, 0, 1, 1]], 1.0, "clamped from 1.3");
    assert!((back.images[[1, 0, 0, 1]] - 0.6).abs() < 1e-6);
    assert_eq!(back.prompts, vec!["a handwritten 1", "two lines", "a photo of a cat"]);
    assert_eq!(back.labels, Some(vec![1, 2, 3]));

    let msg = write_samples(&*dir, &images, &prompts[..2], None).unwrap_err().to_string();
    assert!(msg.contains("3 images, 2 prompts"), "{msg}");
    let nan = Array4::from_elem((3, 1, 2, 2), f32::NAN);
    let msg = write_samples(&*dir, &nan, &prompts, None).unwrap_err().to_string();
    assert!(msg.contains("12 pixels are NaN"), "{msg}");
}

#[test]
fn metrics_log_round_trips_and_appends() {
    let dir = temp_dir("io-metrics");
    let mut log = MetricsLog::create_in(&*dir).unwrap();
    log.log(10, &[("loss", 0.5), ("lr", 1e-3)]).unwrap();
    log.log(20, &[("loss", f64::NAN)]).unwrap();
    drop(log);
    let mut resumed = MetricsLog::open(dir.join("metrics.jsonl"), true).unwrap();
    resumed.log(30, &[("loss", 0.25)]).unwrap();
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    assert_eq!(text.lines().next().unwrap(), r#"{"loss":0.5,"lr":0.001,"step":10}"#);
    let records = read_metrics(dir.join("metrics.jsonl")).unwrap();
    assert_eq!(records.iter().map(|r| r.step).collect::<Vec<_>>(), vec![10, 20, 30]);
    assert!(records[1].values["loss"].is_nan());
    let loss = series(&records, "loss");
    assert_eq!(loss.points[2], (30.0, 0.25));
    assert_eq!(series(&records, "lr").points, vec![(10.0, 1e-3)]);

    std::fs::write(dir.join("bad.jsonl"), "{\"step\": 1, \"loss\": 2}\n{\"loss\": 3}\n").unwrap();
    let msg = read_metrics(dir.join("bad.jsonl")).unwrap_err().to_string();
    assert!(msg.contains("bad.jsonl") && msg.contains("line 2") && msg.contains("step"), "{msg}");
}

/// An example's command line: its own flag plus the shared ones.
#[derive(Parser, Debug)]
#[command(name = "05_vq_vae")]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    /// Codebook size.
    #[arg(long, default_value_t = 64)]
    codes: usize,
}

#[test]
fn common_args_flatten_into_an_example() {
    let cli = Cli::try_parse_from(["05_vq_vae", "--smoke", "--lr", "0.01", "--dataset", "fashion-mnist", "--device", "wgpu", "--codes", "16"]).unwrap();
    let c = &cli.common;
    assert!(c.smoke);
    assert_eq!(c.steps_or(2000, 20), 20, "--smoke picks the smoke default");
    assert_eq!(c.batch_size_or(128, 8), 8);
    assert_eq!(c.lr_or(1e-3), 0.01);
    assert_eq!(c.dataset_or(DatasetName::Mnist), DatasetName::FashionMnist);
    assert_eq!(c.device, DeviceArg::Wgpu);
    assert_eq!(c.limit_or(256), Some(256));
    assert_eq!(cli.codes, 16);

    let plain = Cli::try_parse_from(["05_vq_vae", "--steps", "7"]).unwrap().common;
    assert_eq!(plain.steps_or(2000, 20), 7, "--steps wins");
    assert_eq!(plain.batch_size_or(128, 8), 128);
    assert_eq!(plain.device, DeviceArg::Cpu);
    assert_eq!(plain.seed, 0);
    assert_eq!(plain.limit_or(256), None);
    assert_eq!(plain.out_dir("05_vq_vae"), PathBuf::from("runs/05_vq_vae"));

    let err = Cli::try_parse_from(["05_vq_vae", "--device", "tpu"]).unwrap_err().to_string();
    assert!(err.contains("tpu") && err.contains("cpu") && err.contains("wgpu"), "{err}");
    let help = Cli::try_parse_from(["05_vq_vae", "--help"]).unwrap_err().to_string();
    for flag in ["--smoke", "--steps", "--batch-size", "--lr", "--seed", "--dataset", "--data-dir", "DALLE_DATA_DIR", "--out", "--device", "--resume", "--weights"] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
}

#[test]
fn progress_lines_and_headings_read_well() {
    assert_eq!(cell_heading(3, "Train the VQ-VAE"), "== [3] Train the VQ-VAE ==");
    assert_eq!(format_duration(42.0), "42s");
    assert_eq!(format_duration(144.0), "2m24s");
    assert_eq!(format_duration(3900.0), "1h05m");
    assert_eq!(format_metrics(&[("loss", 0.12345), ("kl", 0.00002)]), "loss 0.1235  kl 2.000e-5");
    let p = Progress::plain(2000, 100);
    let line = p.status_line(200, "loss 0.1234");
    assert!(line.starts_with("step  200/2000  loss 0.1234  "), "{line}");
    assert!(line.contains(" it/s  eta "), "{line}");
}
