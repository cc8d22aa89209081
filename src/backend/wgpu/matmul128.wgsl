// Batched matrix multiply for large matrices: the contract of `matmul_common.wgsl`
// (put in front; the same as `matmul.wgsl`'s), with a bigger tile.
//
// Tiling: a workgroup of 16 x 16 invocations owns a 128 x 128 tile of C; each invocation
// owns an 8 x 8 block of it in registers: rows {4 ly + r, 64 + 4 ly + r} and columns
// {4 lx + e, 64 + 4 lx + e} for r, e in 0..4. Splitting the block in two halves 64 apart
// makes the 16 invocations of a row read 16 consecutive vec4s of shared memory (no bank
// conflicts). K is walked 8 at a time: a 128 x 8 slab of op(A) and an 8 x 128 slab of
// op(B) (one vec4 each per invocation). The next slab's global reads are issued before
// the current slab's arithmetic, so their latency hides behind 512 multiply-adds.

const TILE: u32 = 128u;  // rows and columns of C per workgroup
const TK: u32 = 8u;      // depth of one shared-memory slab
const LANES: u32 = 32u;  // TILE / 4: vec4s across one slab row

// a_slab[kk * 32 + r4][e] = op(A)(row0 + 4 r4 + e, k0 + kk)
var<workgroup> a_slab: array<vec4<f32>, 256>;
// b_slab[kk * 32 + c4][e] = op(B)(k0 + kk, col0 + 4 c4 + e)
var<workgroup> b_slab: array<vec4<f32>, 256>;

// Invocation t's vec4 of the op(A) slab at depth k0 (see store_a for where it goes).
fn load_a(t: u32, base: u32, row0: u32, k0: u32) -> vec4<f32> {
    if (p.trans_a == 0u) {
        // A stored (M, K): 4 consecutive k of row row0 + t / 2
        let row = row0 + t / 2u;
        let kg = k0 + (t % 2u) * 4u;
        return a_run(base + row * p.k + kg, remaining(kg, p.k, row < p.m));
    }
    // A stored (K, M): 4 consecutive rows from row0 + 4 (t % 32) at k0 + t / 32
    let kg = k0 + t / LANES;
    let row = row0 + (t % LANES) * 4u;
    return a_run(base + kg * p.m + row, remaining(row, p.m, kg < p.k));
}

fn store_a(t: u32, v: vec4<f32>) {
    if (p.trans_a == 0u) {
        let r = t / 2u;
        let kq = (t % 2u) * 4u;
        for (var e = 0u; e < 4u; e++) { a_slab[(kq + e) * LANES + r / 4u][r % 4u] = v[e]; }
    } else {
        a_slab[t] = v;
    }
}

fn load_b(t: u32, base: u32, col0: u32, k0: u32) -> vec4<f32> {
    if (p.trans_b == 0u) {
        // B stored (K, N): 4 consecutive columns from col0 + 4 (t % 32) at k0 + t / 32
        let kg = k0 + t / LANES;
        let col = col0 + (t % LANES) * 4u;
        return b_run(base + kg * p.n + col, remaining(col, p.n, kg < p.k));
    }
    // B stored (N, K): 4 consecutive k of column col0 + t / 2
    let col = col0 + t / 2u;
    let kg = k0 + (t % 2u) * 4u;
    return b_run(base + col * p.k + kg, remaining(kg, p.k, col < p.n));
}

fn store_b(t: u32, v: vec4<f32>) {
    if (p.trans_b == 0u) {
        b_slab[t] = v;
    } else {
        let cl = t / 2u;
        let kq = (t % 2u) * 4u;
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

    // acc[2 i + h][e] = C(row i of the block, column 64 h + 4 lx + e), where block row
    // i < 4 is C row row0 + 4 ly + i and i >= 4 is row0 + 64 + 4 ly + (i - 4)
    var acc: array<vec4<f32>, 16>; // WGSL zero-initialises function variables

    for (var bi = batch_first(wid.z); bi < batch_end(wid.z); bi++) {
        let a_base = bi * p.stride_a;
        let b_base = bi * p.stride_b;
        var next_a = load_a(t, a_base, row0, 0u);
        var next_b = load_b(t, b_base, col0, 0u);
        for (var k0 = 0u; k0 < p.k; k0 += TK) {
            store_a(t, next_a);
            store_b(t, next_b);
            workgroupBarrier();
            if (k0 + TK < p.k) {
                // issue the next slab's reads now; they land while we compute
                next_a = load_a(t, a_base, row0, k0 + TK);
                next_b = load_b(t, b_base, col0, k0 + TK);
            }
            for (var kk = 0u; kk < TK; kk++) {
                let a0 = a_slab[kk * LANES + lid.y];
                let a1 = a_slab[kk * LANES + 16u + lid.y];
                let b0 = b_slab[kk * LANES + lid.x];
                let b1 = b_slab[kk * LANES + 16u + lid.x];
                // C(i, j) += A(i, k) B(k, j): a rank-1 update of the 8 x 8 block
                acc[0] += a0.x * b0;
                acc[1] += a0.x * b1;
                acc[2] += a0.y * b0;
                acc[3] += a0.y * b1;
                acc[4] += a0.z * b0;
                acc[5] += a0.z * b1;
                acc[6] += a0.w * b0;
                acc[7] += a0.w * b1;
                acc[8] += a1.x * b0;
                acc[9] += a1.x * b1;
                acc[10] += a1.y * b0;
                acc[11] += a1.y * b1;
                acc[12] += a1.z * b0;
                acc[13] += a1.z * b1;
                acc[14] += a1.w * b0;
                acc[15] += a1.w * b1;
            }
            workgroupBarrier();
        }
    }

    let base = c_offset(wid.z);
    let r_lo = row0 + lid.y * 4u;
    let r_hi = row0 + 64u + lid.y * 4u;
    let c_lo = col0 + lid.x * 4u;
    let c_hi = col0 + 64u + lid.x * 4u;
    // Constant indices into acc only: a dynamic index would make the driver keep the
    // whole array in (slow) local memory instead of registers.
    store4(base, r_lo, c_lo, acc[0]);
    store4(base, r_lo, c_hi, acc[1]);
    store4(base, r_lo + 1u, c_lo, acc[2]);
    store4(base, r_lo + 1u, c_hi, acc[3]);
    store4(base, r_lo + 2u, c_lo, acc[4]);
    store4(base, r_lo + 2u, c_hi, acc[5]);
    store4(base, r_lo + 3u, c_lo, acc[6]);
    store4(base, r_lo + 3u, c_hi, acc[7]);
    store4(base, r_hi, c_lo, acc[8]);
    store4(base, r_hi, c_hi, acc[9]);
    store4(base, r_hi + 1u, c_lo, acc[10]);
    store4(base, r_hi + 1u, c_hi, acc[11]);
    store4(base, r_hi + 2u, c_lo, acc[12]);
    store4(base, r_hi + 2u, c_hi, acc[13]);
    store4(base, r_hi + 3u, c_lo, acc[14]);
    store4(base, r_hi + 3u, c_hi, acc[15]);
}
