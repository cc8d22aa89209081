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
//!
//! The examples run on a rayon worker ([`crate::backend::on_worker`]), and a
//! thread other than main gets its own glibc arena, which grows in separate
//! `mmap`ed heaps of at most 64 MiB. When the newest heap empties, glibc
//! unmaps it whatever the trim threshold says, unless the free space would be
//! under the top pad: a step whose buffers need a second heap mapped and
//! unmapped it every time (GroupNorm + SiLU on a (64, 64, 28, 28) batch:
//! 500 000 page faults over `bench_engine`'s repetitions and 10.4 ms a step
//! at AVX2, against 5.0 ms with the pad). A pad of one heap's size keeps it.

use std::sync::Once;

/// glibc's `mallopt` parameters (from `<malloc.h>`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod glibc {
    pub const M_TRIM_THRESHOLD: i32 = -1;
    pub const M_TOP_PAD: i32 = -2;
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
/// Free space kept at the top of a heap (and asked for beyond each request when
/// a heap grows): one whole worker-arena heap, so that an emptied heap stays mapped.
const TOP_PAD: i32 = 64 << 20;

/// Set the allocator's thresholds once per process (glibc on Linux; elsewhere a no-op).
/// Called when the first tensor is made.
pub fn keep_freed_memory() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: mallopt only changes three tuning parameters of glibc's allocator.
        unsafe {
            glibc::mallopt(glibc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
            glibc::mallopt(glibc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
            glibc::mallopt(glibc::M_TOP_PAD, TOP_PAD);
        }
    });
}
