//! Reading and writing: checkpoints, images, arrays, plots.

pub mod checkpoint;
