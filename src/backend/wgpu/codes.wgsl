// The vector quantizer's nearest-code search on the GPU (codes.rs). One invocation per
// row of z, in 256-wide workgroups over a 2-D grid (index = x + y * 256 * groups_x).

struct Params {
    // rows of z (N)
    rows: u32,
    // codes (K)
    codes: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;
// z · eᵀ, (N, K)
@group(0) @binding(2) var<storage, read> scores: array<f32>;
// ‖e_k‖², (K)
@group(0) @binding(3) var<storage, read> e_sq: array<f32>;

// k* = argmin_k ‖z - e_k‖² = argmin_k (‖e_k‖² - 2 z·e_k)  (‖z‖² is the same for every k);
// the first minimum wins, as on the CPU; the index is stored as f32 (exact below 2^24)
@compute @workgroup_size(256, 1, 1)
fn nearest(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let r = gid.x + gid.y * groups.x * 256u;
    if (r >= p.rows) { return; }
    var best = 0u;
    var best_dist = bitcast<f32>(0x7f800000u); // +inf
    for (var k = 0u; k < p.codes; k = k + 1u) {
        let dist = e_sq[k] - 2.0 * scores[r * p.codes + k];
        if (dist < best_dist) {
            best_dist = dist;
            best = k;
        }
    }
    dst[r] = f32(best);
}
