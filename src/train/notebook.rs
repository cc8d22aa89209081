//! Examples read like notebooks: numbered cells, each with a heading.

use std::path::Path;

/// The heading of cell `n`: `== [3] Train the VQ-VAE ==`.
pub fn cell_heading(n: usize, title: &str) -> String {
    format!("== [{n}] {title} ==")
}

/// Prints the heading of cell `n` (with a blank line before it, except for the first cell).
pub fn cell(n: usize, title: &str) {
    if n > 1 {
        println!();
    }
    println!("{}", cell_heading(n, title));
}

/// Prints where a cell left its artefact: `   -> wrote runs/05_vq_vae/recon.png`.
pub fn wrote(path: impl AsRef<Path>) {
    println!("   -> wrote {}", path.as_ref().display());
}
