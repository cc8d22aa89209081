// Batched, register-tiled matrix multiply C[b] = op(A[b]) · op(B[b]); the contract
// (Params, bindings, edge-safe loads, store4) is in `matmul_common.wgsl`, put in front.
//
// Tiling: a workgroup of 16 x 16 invocations owns a 64 x 64 tile of C; each invocation
// owns a 4 x 4 block of it, kept in registers. The K dimension is walked 16 at a time:
// the workgroup copies a 64 x 16 slab of op(A) and a 16 x 64 slab of op(B) into shared
// memory (one vec4 per invocation per slab), then every invocation does 16 rank-1
// updates of its 4 x 4 block.

const TILE: u32 = 64u;   // rows and columns of C per workgroup
const TK: u32 = 16u;     // depth of one shared-memory slab
const LANES: u32 = 16u;  // TILE / 4: vec4 columns per slab row

// a_slab[kk * 16 + r4][e] = op(A)(row0 + 4 r4 + e, k0 + kk)
var<workgroup> a_slab: array<vec4<f32>, 256>;
// b_slab[kk * 16 + c4][e] = op(B)(k0 + kk, col0 + 4 c4 + e)
var<workgroup> b_slab: array<vec4<f32>, 256>;

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

    for (var bi = batch_first(wid.z); bi < batch_end(wid.z); bi++) {
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

    let base = c_offset(wid.z);
    let r0 = row0 + lid.y * 4u;
    let c0 = col0 + lid.x * 4u;
    // Constant indices into acc only: a dynamic index would make the driver keep the
    // whole array in (slow) local memory instead of registers.
    store4(base, r0, c0, acc[0]);
    store4(base, r0 + 1u, c0, acc[1]);
    store4(base, r0 + 2u, c0, acc[2]);
    store4(base, r0 + 3u, c0, acc[3]);
}
