//! Every training example, stopped at step k and resumed, logs the same losses, bit
//! for bit, as a run that never stopped; and a run driven to a NaN loss stops with the
//! non-finite error and leaves no checkpoint.
//!
//! The examples are binaries: these tests run the ones `cargo test --release` built
//! beside this test (`target/release/examples/`), in `--smoke` size (seconds each).
//! "The same losses" is literal: `metrics.jsonl` of the resumed run (continued by
//! `MetricsLog::resume`, so without repeated steps) must equal the unbroken run's byte
//! for byte, since every generator and the data order are restored exactly.

use std::path::{Path, PathBuf};
use std::process::Command;

fn example(name: &str) -> PathBuf {
    // target/release/deps/<this test> -> target/release/examples/<name>
    let exe = std::env::current_exe().expect("test path");
    let path = exe.parent().and_then(Path::parent).expect("target dir").join("examples").join(name);
    assert!(path.is_file(), "{} not built: run `cargo test --release` (which builds the examples) or `cargo build --release --examples`", path.display());
    path
}

fn run(name: &str, args: &[&str], out: &Path) -> std::process::Output {
    let output = Command::new(example(name))
        .args(["--smoke"])
        .args(args)
        .arg("--out")
        .arg(out)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run example");
    output
}

fn text(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn fresh(dir: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("dalle-resume-{}-{dir}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// The metrics.jsonl under `dir` (03 writes into a per-data-set sub-folder).
fn metrics(dir: &Path) -> String {
    let found = walk(dir).into_iter().find(|p| p.file_name().is_some_and(|n| n == "metrics.jsonl")).expect("metrics.jsonl");
    std::fs::read_to_string(found).expect("read metrics")
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn checkpoint(dir: &Path) -> PathBuf {
    walk(dir).into_iter().find(|p| p.file_name().is_some_and(|n| n == "checkpoint.safetensors")).expect("checkpoint.safetensors")
}

/// Stop `name` after `stop` of `steps` steps, resume, and compare with an unbroken run.
fn stop_and_resume_matches(name: &str, steps: usize, stop: usize) {
    let steps_arg = steps.to_string();
    let base = ["--steps", steps_arg.as_str()];
    let full = fresh(&format!("{name}-full"));
    let o = run(name, &base, &full);
    assert!(o.status.success(), "{name} unbroken run failed:\n{}", text(&o));

    let split = fresh(&format!("{name}-split"));
    let stop_arg = stop.to_string();
    let o = run(name, &[&base[..], &["--stop-at", &stop_arg]].concat(), &split);
    assert!(o.status.success(), "{name} --stop-at {stop} failed:\n{}", text(&o));
    let stopped = metrics(&split);
    assert_eq!(stopped.lines().count(), stop, "{name}: the stopped run logs {stop} steps:\n{stopped}");
    let ckpt = checkpoint(&split);
    let ckpt_arg = ckpt.to_string_lossy().into_owned();
    let o = run(name, &[&base[..], &["--resume", &ckpt_arg]].concat(), &split);
    assert!(o.status.success(), "{name} --resume failed:\n{}", text(&o));
    assert!(text(&o).contains(&format!("at step {stop}")), "{name}: resumed where it stopped:\n{}", text(&o));

    let (a, b) = (metrics(&full), metrics(&split));
    assert_eq!(a, b, "{name}: the resumed run's metrics differ from the unbroken run's");
    let _ = std::fs::remove_dir_all(&full);
    let _ = std::fs::remove_dir_all(&split);
}

#[test]
fn resume_00_autograd() {
    stop_and_resume_matches("00_autograd", 8, 3);
}

#[test]
fn resume_01_attention() {
    stop_and_resume_matches("01_attention", 8, 3);
}

#[test]
fn resume_02_vit() {
    stop_and_resume_matches("02_vit", 8, 3);
}

#[test]
fn resume_03_clip() {
    stop_and_resume_matches("03_clip", 8, 3);
}

#[test]
fn resume_04_vae() {
    stop_and_resume_matches("04_vae", 8, 3);
}

/// At step 20 the quantizer restarts the codes idle since the start: a resumed run must
/// know how long each code has been idle (its counts and generator are saved too).
#[test]
fn resume_05_vq_vae() {
    stop_and_resume_matches("05_vq_vae", 30, 15);
}

#[test]
fn resume_06_dvae() {
    stop_and_resume_matches("06_dvae", 8, 3);
}

#[test]
fn resume_09_noised_clip() {
    stop_and_resume_matches("09_noised_clip", 8, 3);
}

#[test]
fn resume_09_glide() {
    stop_and_resume_matches("09_glide", 8, 3);
}

#[test]
fn resume_10_unclip_prior() {
    stop_and_resume_matches("10_unclip_prior", 6, 2);
}

#[test]
fn resume_11_unclip_decoder() {
    // the decoder's run (metrics.jsonl, checkpoint.safetensors); the upsampler's resumes the same way
    stop_and_resume_matches("11_unclip_decoder", 6, 2);
}

/// Chapters 10 and 11 on Shapes (`--dataset shapes`): the smoke runs finish and write the
/// samples and the Shapes judge's lines.
#[test]
fn unclip_examples_run_on_shapes() {
    for (name, wrote) in [("10_unclip_prior", "eval.csv"), ("11_unclip_decoder", "eval.jsonl")] {
        let out = fresh(&format!("{name}-shapes"));
        let o = run(name, &["--dataset", "shapes"], &out);
        assert!(o.status.success(), "{name} --dataset shapes:\n{}", text(&o));
        assert!(out.join("samples.npy").is_file() && out.join(wrote).is_file(), "{name}: {:?}", walk(&out));
        let _ = std::fs::remove_dir_all(&out);
    }
}

/// `--lr 1e9` makes every example's loss NaN within a few steps: the run must fail
/// with the non-finite error naming the step, and write no checkpoint.
#[test]
fn nan_loss_stops_every_example_without_a_checkpoint() {
    for name in ["00_autograd", "01_attention", "02_vit", "03_clip", "04_vae", "05_vq_vae", "06_dvae", "09_noised_clip", "09_glide", "11_unclip_decoder"] {
        let out = fresh(&format!("{name}-nan"));
        let o = run(name, &["--steps", "8", "--lr", "1e9"], &out);
        let msg = text(&o);
        assert!(!o.status.success(), "{name} exited 0 on a NaN loss:\n{msg}");
        assert!(msg.contains("non-finite values: step ") && msg.contains("loss NaN"), "{name}:\n{msg}");
        let saved: Vec<PathBuf> = walk(&out).into_iter().filter(|p| p.extension().is_some_and(|e| e == "safetensors")).collect();
        assert!(saved.is_empty(), "{name} wrote {saved:?} from a non-finite state");
        let _ = std::fs::remove_dir_all(&out);
    }
}

/// A checkpoint whose `step` is beyond `--steps` is refused at once (it used to replay
/// `step` batches first: a huge value hung the run).
#[test]
fn resume_beyond_the_last_step_is_refused() {
    let out = fresh("00-beyond");
    let o = run("00_autograd", &["--steps", "4", "--stop-at", "2"], &out);
    assert!(o.status.success(), "{}", text(&o));
    let ck = checkpoint(&out);
    let o = run("00_autograd", &["--steps", "1", "--resume", &ck.to_string_lossy()], &out);
    let msg = text(&o);
    assert!(!o.status.success() && msg.contains("saved at step 2, beyond this run's 1 steps"), "{msg}");
    let _ = std::fs::remove_dir_all(&out);
}

/// Flags that cannot work are refused by every example before anything runs.
#[test]
fn bad_flags_are_refused() {
    let out = fresh("flags");
    for args in [
        &["--lr", "nan"][..],
        &["--lr=-1"],
        &["--lr", "inf"],
        &["--lr", "0"],
        &["--batch-size", "0"],
        &["--steps", "0"],
        &["--stop-at", "0"],
        &["--resume", "a.safetensors", "--weights", "b.safetensors"],
    ] {
        let o = run("04_vae", args, &out);
        let msg = text(&o);
        assert!(!o.status.success(), "{args:?} accepted:\n{msg}");
        assert!(msg.contains("invalid value") || msg.contains("--resume and --weights together"), "{args:?}:\n{msg}");
        assert!(!msg.contains("panicked"), "{args:?}:\n{msg}");
    }
    let o = run("04_vae", &["--latent-dim", "0"], &out);
    assert!(!o.status.success() && text(&o).contains("invalid value"), "{}", text(&o));
    let o = run("06_dvae", &["--kl-weight", "NaN"], &out);
    assert!(!o.status.success() && text(&o).contains("invalid value"), "{}", text(&o));
    let _ = std::fs::remove_dir_all(&out);
}

/// 03's zero-shot command: a template without `{}` would give every label the same
/// prompt (a coin toss), and a checkpoint whose vision tower wants 4 channels cannot
/// read an image file; both are refused with a message, not a panic.
#[test]
fn zero_shot_refuses_a_template_without_braces_and_odd_channel_counts() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = fresh("zero-shot");
    std::fs::create_dir_all(&dir).unwrap();
    let image = dir.join("digit.png");
    image::GrayImage::from_pixel(28, 28, image::Luma([200])).save(&image).unwrap();
    let zero_shot = |weights: &Path, template: &str| {
        Command::new(example("03_clip"))
            .args(["zero-shot", "--weights"])
            .arg(weights)
            .arg("--image")
            .arg(&image)
            .args(["--labels", "zero,one", "--template", template])
            .current_dir(root)
            .output()
            .expect("run 03_clip")
    };
    let shipped = root.join("weights/clip_mnist.safetensors");
    let o = zero_shot(&shipped, "a photo of a digit");
    assert!(!o.status.success() && text(&o).contains("must hold `{}` once"), "{}", text(&o));

    // The shipped checkpoint with a config that claims 4 channels (and a patch
    // embedding of 4 channels, so that the weights still match the config).
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(root.join("weights/clip_mnist.config.json")).unwrap()).unwrap();
    config["vision_config"]["num_channels"] = 4.into();
    let ck = dalle::io::checkpoint::load(&shipped).unwrap();
    let mut tensors: Vec<(String, ndarray::ArrayD<f32>)> = ck.tensors.into_iter().collect();
    for (name, t) in tensors.iter_mut().filter(|(n, _)| n.ends_with("patch_embedding.weight")) {
        let s = t.shape().to_vec();
        *t = ndarray::ArrayD::zeros(vec![s[0], 4, s[2], s[3]]);
        let _ = name;
    }
    let four = dir.join("four.safetensors");
    dalle::io::checkpoint::save_tensors(&four, &tensors, &Default::default()).unwrap();
    std::fs::write(dir.join("four.config.json"), config.to_string()).unwrap();
    std::fs::copy(root.join("weights/clip_mnist.tokenizer.json"), dir.join("four.tokenizer.json")).unwrap();
    let o = zero_shot(&four, "a photo of the digit {}");
    let msg = text(&o);
    assert!(!o.status.success() && msg.contains("num_channels = 4") && !msg.contains("panicked"), "{msg}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A data set of one image (a valid MNIST file that happens to be tiny): every
/// image example runs to the end instead of panicking on a batch of two.
#[test]
fn a_one_image_data_set_trains_without_panics() {
    let data = fresh("tiny-data");
    let mnist = data.join("mnist");
    std::fs::create_dir_all(&mnist).unwrap();
    let idx = |dims: &[u32], body: Vec<u8>| {
        let mut b = vec![0, 0, 8, dims.len() as u8];
        dims.iter().for_each(|d| b.extend_from_slice(&d.to_be_bytes()));
        b.extend(body);
        b
    };
    for prefix in ["train", "t10k"] {
        std::fs::write(mnist.join(format!("{prefix}-images-idx3-ubyte")), idx(&[1, 28, 28], (0..784).map(|i| i as u8).collect())).unwrap();
        std::fs::write(mnist.join(format!("{prefix}-labels-idx1-ubyte")), idx(&[1], vec![3])).unwrap();
    }
    let data_arg = data.to_string_lossy().into_owned();
    for name in ["00_autograd", "02_vit", "03_clip", "04_vae", "05_vq_vae", "06_dvae"] {
        let out = fresh(&format!("{name}-tiny"));
        let o = run(name, &["--steps", "2", "--data-dir", &data_arg], &out);
        assert!(o.status.success() && !text(&o).contains("panicked"), "{name} on one image:\n{}", text(&o));
        let _ = std::fs::remove_dir_all(&out);
    }
    let _ = std::fs::remove_dir_all(&data);
}
