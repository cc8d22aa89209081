// The contract both matmul kernels share (`matmul.wgsl`, 64 x 64 tiles, and
// `matmul128.wgsl`, 128 x 128 tiles); the Rust side puts this file in front of each.
//
//   C[b] = op(A[b]) · op(B[b])        op(X) = X or Xᵀ (the trans_a / trans_b flags)
//
// op(A[b]) is (M, K), op(B[b]) is (K, N), C[b] is (M, N), all row-major.
// A[b] starts at element b * stride_a of buffer `a` (stride 0 = one matrix shared by
// every batch entry), B[b] likewise. With `reduce_batch` the batch is summed instead:
// C = Σ_b op(A[b]) · op(B[b]) (a convolution's weight gradient sums over samples).
// With `accumulate` the result is added to C instead of overwriting it.
// `a` and `b` are bound as arrays of vec4 so an aligned load is one 16-byte read;
// unaligned or ragged edges fall back to scalar reads. Every index is guarded, so the
// kernels run without wgpu's injected bounds checks.

struct Params {
    m: u32,
    n: u32,
    k: u32,
    batch: u32,
    trans_a: u32,
    trans_b: u32,
    stride_a: u32,
    stride_b: u32,
    stride_c: u32,
    reduce_batch: u32,
    accumulate: u32,
    // 1 when 4 consecutive elements along the contiguous axis of A (resp. B)
    // start at a multiple of 4: then a vec4 read is one aligned load.
    vec4_a: u32,
    vec4_b: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

fn a_scalar(i: u32) -> f32 { return a[i >> 2u][i & 3u]; }
fn b_scalar(i: u32) -> f32 { return b[i >> 2u][i & 3u]; }

// Four elements of A starting at flat index `start` and stepping by 1, each kept only
// if `count` > its offset (elements past the matrix edge read as 0).
fn a_run(start: u32, count: u32) -> vec4<f32> {
    if (count >= 4u && p.vec4_a == 1u) {
        return a[start >> 2u];
    }
    var v = vec4<f32>(0.0);
    for (var e = 0u; e < min(count, 4u); e++) { v[e] = a_scalar(start + e); }
    return v;
}

fn b_run(start: u32, count: u32) -> vec4<f32> {
    if (count >= 4u && p.vec4_b == 1u) {
        return b[start >> 2u];
    }
    var v = vec4<f32>(0.0);
    for (var e = 0u; e < min(count, 4u); e++) { v[e] = b_scalar(start + e); }
    return v;
}

// The batch entries workgroup layer `z` sums over: entry z alone, or all of them
// with `reduce_batch` (the grid then has one layer).
fn batch_first(z: u32) -> u32 {
    if (p.reduce_batch == 1u) { return 0u; }
    return z;
}

fn batch_end(z: u32) -> u32 {
    if (p.reduce_batch == 1u) { return p.batch; }
    return z + 1u;
}

// Where layer `z`'s C starts in `c`.
fn c_offset(z: u32) -> u32 {
    if (p.reduce_batch == 1u) { return 0u; }
    return z * p.stride_c;
}

// Elements left on a row of length `len` from `pos`, or 0 if `valid` is false.
fn remaining(pos: u32, len: u32, valid: bool) -> u32 {
    if (!valid || pos >= len) { return 0u; }
    return len - pos;
}

// C(row, col + e) = v[e] (or += with `accumulate`) for the e in 0..4 inside the matrix.
fn store4(base: u32, row: u32, col: u32, v: vec4<f32>) {
    if (row >= p.m) { return; }
    for (var e = 0u; e < 4u; e++) {
        if (col + e >= p.n) { return; }
        let idx = base + row * p.n + col + e;
        if (p.accumulate == 1u) {
            c[idx] = c[idx] + v[e];
        } else {
            c[idx] = v[e];
        }
    }
}
