//! Keep freed memory in the process, so that the next step reuses it.
//!
//! A training step allocates the same large buffers every time (activations,
//! gradients, GEMM outputs: megabytes each) and frees them all when the graph
//! is dropped. With glibc's default settings those buffers go back to the
//! operating system (large blocks are `mmap`ed and unmapped; the heap top is
//! trimmed past a threshold), and the next step pays a page fault, and the
//! kernel's zeroing, for every 4 KiB page it touches again: a quarter of the
//! time of a transformer block's forward and backward on two cores. Raising
//! the two thresholds keeps the pages: a freed block is reused by the next
//! allocation of that size. The process then holds on to its peak usage, as
//! PyTorch's caching allocator does on a GPU.

use std::sync::Once;

/// glibc's `mallopt` parameters (from `<malloc.h>`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod glibc {
    pub const M_TRIM_THRESHOLD: i32 = -1;
    pub const M_MMAP_THRESHOLD: i32 = -3;
    extern "C" {
        pub fn mallopt(param: i32, value: i32) -> i32;
    }
}

/// Blocks up to this size come from the heap (glibc's largest allowed value, 32 MiB);
/// larger ones are still `mmap`ed and returned at once.
const MMAP_THRESHOLD: i32 = 32 << 20;
/// Free memory at the top of the heap is returned to the system only past this much.
const TRIM_THRESHOLD: i32 = 1 << 30;

/// Set the allocator's thresholds once per process (glibc on Linux; elsewhere a no-op).
/// Called when the first tensor is made.
pub fn keep_freed_memory() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: mallopt only changes two tuning parameters of glibc's allocator.
        unsafe {
            glibc::mallopt(glibc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
            glibc::mallopt(glibc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
        }
    });
}
