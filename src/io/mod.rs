//! Reading and writing what a run produces: checkpoints, image grids, `.npy` arrays, plots, sample folders.
//!
//! Every file is written through [`atomic::write_atomic`], so a run killed
//! half-way never leaves a half-written PNG, array or checkpoint behind.

pub mod atomic;
pub mod checkpoint;
pub mod image_grid;
pub mod limits;
pub mod npy;
pub mod plot;
pub mod samples;

pub use atomic::{remove_stale_temps, write_atomic};
pub use image_grid::{make_grid, save_image_grid, save_reconstructions, GridOptions};
pub use npy::{read_npy, write_npy};
pub use plot::{plot_heatmap, plot_lines, plot_scatter, Series};
pub use samples::{read_samples, write_samples, SamplesFolder};

/// A shipped file: `weights/NAME` under the crate's folder, so that the examples
/// and tests find it from any working directory.
pub fn shipped_weights(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("weights").join(name)
}
