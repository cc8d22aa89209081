// Batched, register-tiled matrix multiply:
//
//   C[b] = op(A[b]) · op(B[b])        op(X) = X or Xᵀ (the trans_a / trans_b flags)
//
// op(A[b]) is (M, K), op(B[b]) is (K, N), C[b] is (M, N), all row-major.
// A[b] starts at element b * stride_a of buffer `a` (stride 0 = one matrix shared by
// every batch entry), B[b] likewise. With `reduce_batch` the batch is summed instead:
// C = Σ_b op(A[b]) · op(B[b]) (a convolution's weight gradient sums over samples).
// With `accumulate` the result is added to C instead of overwriting it.
//
// Tiling: a workgroup of 16 x 16 invocations owns a 64 x 64 tile of C; each invocation
// owns a 4 x 4 block of it, kept in registers. The K dimension is walked 16 at a time:
// the workgroup copies a 64 x 16 slab of op(A) and a 16 x 64 slab of op(B) into shared
// memory (one vec4 per invocation per slab), then every invocation does 16 rank-1
// updates of its 4 x 4 block. `a` and `b` are bound as arrays of vec4 so an aligned
// load is one 16-byte read; unaligned or ragged edges fall back to scalar reads.

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

const TILE: u32 = 64u;   // rows and columns of C per workgroup
const TK: u32 = 16u;     // depth of one shared-memory slab
const LANES: u32 = 16u;  // TILE / 4: vec4 columns per slab row

// a_slab[kk * 16 + r4][e] = op(A)(row0 + 4 r4 + e, k0 + kk)
var<workgroup> a_slab: array<vec4<f32>, 256>;
// b_slab[kk * 16 + c4][e] = op(B)(k0 + kk, col0 + 4 c4 + e)
var<workgroup> b_slab: array<vec4<f32>, 256>;

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

// Elements left on a row of length `len` from `pos`, or 0 if `valid` is false.
fn remaining(pos: u32, len: u32, valid: bool) -> u32 {
    if (!valid || pos >= len) { return 0u; }
    return len - pos;
}

fn load_a_slab(t: u32, base: u32, row0: u32, k0: u32) {
    if (p.trans_a == 0u) {
        // A stored (M, K): a run of 4 is 4 consecutive k of one row.
        let r = t / 4u;
        let kq = (t % 4u) * 4u;
        let row = row0 + r;
        let v = a_run(base + row * p.k + k0 + kq, remaining(k0 + kq, p.k, row < p.m));
        for (var e = 0u; e < 4u; e++) { a_slab[(kq + e) * LANES + r / 4u][r % 4u] = v[e]; }
    } else {
        // A stored (K, M): a run of 4 is 4 consecutive rows at one k.
        let kk = t / LANES;
        let rq = (t % LANES) * 4u;
        let kg = k0 + kk;
        a_slab[kk * LANES + rq / 4u] = a_run(base + kg * p.m + row0 + rq, remaining(row0 + rq, p.m, kg < p.k));
    }
}

fn load_b_slab(t: u32, base: u32, col0: u32, k0: u32) {
    if (p.trans_b == 0u) {
        // B stored (K, N): a run of 4 is 4 consecutive columns at one k.
        let kk = t / LANES;
        let cq = (t % LANES) * 4u;
        let kg = k0 + kk;
        b_slab[kk * LANES + cq / 4u] = b_run(base + kg * p.n + col0 + cq, remaining(col0 + cq, p.n, kg < p.k));
    } else {
        // B stored (N, K): a run of 4 is 4 consecutive k of one column.
        let cl = t / 4u;
        let kq = (t % 4u) * 4u;
        let col = col0 + cl;
        let v = b_run(base + col * p.k + k0 + kq, remaining(k0 + kq, p.k, col < p.n));
        for (var e = 0u; e < 4u; e++) { b_slab[(kq + e) * LANES + cl / 4u][cl % 4u] = v[e]; }
    }
}

@compute @workgroup_size(16, 16, 1)
fn matmul(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
) {
    let t = lid.y * 16u + lid.x;
    let row0 = wid.y * TILE;
    let col0 = wid.x * TILE;

    // acc[r][e] = C(row0 + 4 lid.y + r, col0 + 4 lid.x + e)
    var acc: array<vec4<f32>, 4>; // WGSL zero-initialises function variables

    var b_first = wid.z;
    var b_last = wid.z + 1u;
    if (p.reduce_batch == 1u) {
        b_first = 0u;
        b_last = p.batch;
    }
    for (var bi = b_first; bi < b_last; bi++) {
        let a_base = bi * p.stride_a;
        let b_base = bi * p.stride_b;
        for (var k0 = 0u; k0 < p.k; k0 += TK) {
            load_a_slab(t, a_base, row0, k0);
            load_b_slab(t, b_base, col0, k0);
            workgroupBarrier();
            for (var kk = 0u; kk < TK; kk++) {
                let av = a_slab[kk * LANES + lid.y];
                let bv = b_slab[kk * LANES + lid.x];
                // C(i, j) += A(i, k) B(k, j): a rank-1 update of the 4 x 4 block
                acc[0] += av[0] * bv;
                acc[1] += av[1] * bv;
                acc[2] += av[2] * bv;
                acc[3] += av[3] * bv;
            }
            workgroupBarrier();
        }
    }

    var c_batch = wid.z;
    if (p.reduce_batch == 1u) { c_batch = 0u; }
    let base = c_batch * p.stride_c;
    let r0 = row0 + lid.y * 4u;
    let c0 = col0 + lid.x * 4u;
    // Constant indices into acc only: a dynamic index would make the driver keep the
    // whole array in (slow) local memory instead of registers.
    store4(base, r0, c0, acc[0]);
    store4(base, r0 + 1u, c0, acc[1]);
    store4(base, r0 + 2u, c0, acc[2]);
    store4(base, r0 + 3u, c0, acc[3]);
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
