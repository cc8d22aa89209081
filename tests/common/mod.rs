//! Helpers shared by the integration tests: the golden files written by the
//! PyTorch scripts in tests/golden/, and temporary folders.
#![allow(dead_code)] // each test file uses a different part

#[cfg(feature = "wgpu")]
pub mod gpu;

use ndarray::{ArrayD, IxDyn};
use safetensors::{Dtype, SafeTensors};

/// A safetensors file from tests/golden/, kept for the whole test run.
pub struct Golden {
    st: SafeTensors<'static>,
}

impl Golden {
    /// Load `tests/golden/<file>`.
    pub fn load(file: &str) -> Golden {
        let path = format!("{}/tests/golden/{file}", env!("CARGO_MANIFEST_DIR"));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e} (written by the script beside it)"));
        // Leaked on purpose: the views borrow the bytes for the rest of the test run.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        Golden { st: SafeTensors::deserialize(bytes).unwrap_or_else(|e| panic!("{path}: {e}")) }
    }

    /// Whether the file holds `key`.
    pub fn has(&self, key: &str) -> bool {
        self.st.tensor(key).is_ok()
    }

    fn view(&self, key: &str, dtype: Dtype) -> (Vec<usize>, &[u8]) {
        let t = self.st.tensor(key).unwrap_or_else(|_| panic!("golden file has no {key}"));
        assert_eq!(t.dtype(), dtype, "{key}");
        (t.shape().to_vec(), t.data())
    }

    /// An f32 tensor.
    pub fn f32s(&self, key: &str) -> ArrayD<f32> {
        let (shape, data) = self.view(key, Dtype::F32);
        let v = data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        ArrayD::from_shape_vec(IxDyn(&shape), v).unwrap()
    }

    /// An int64 tensor of indices.
    pub fn indices(&self, key: &str) -> ArrayD<usize> {
        let (shape, data) = self.view(key, Dtype::I64);
        let v = data.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap()) as usize).collect();
        ArrayD::from_shape_vec(IxDyn(&shape), v).unwrap()
    }

    /// An int64 tensor of indices, flattened.
    pub fn flat(&self, key: &str) -> Vec<usize> {
        self.indices(key).iter().copied().collect()
    }

    /// A bool tensor.
    pub fn mask(&self, key: &str) -> ArrayD<bool> {
        let (shape, data) = self.view(key, Dtype::BOOL);
        ArrayD::from_shape_vec(IxDyn(&shape), data.iter().map(|&b| b != 0).collect()).unwrap()
    }
}

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fresh, empty folder under the system temp dir, removed when dropped.
pub struct TempDir(PathBuf);

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A new empty folder named after the test, the process and a counter.
pub fn temp_dir(name: &str) -> TempDir {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!("dalle-{name}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}
