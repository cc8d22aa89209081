// The kernels of layout.rs: moving values without arithmetic (permute, row gather,
// nearest upsampling) and the sums that undo them in the backward pass (row
// scatter-add, upsampling's gradient). One invocation per element of `dst` (binding 1),
// in 256-wide workgroups over a 2-D grid (index = x + y * 256 * groups_x).

struct Params {
    // elements this dispatch writes
    total: u32,
    // permute: number of axes (<= 6); rows: rows gathered (n); upsample: the factor f
    a: u32,
    // rows: row length D; upsample: input plane height H
    b: u32,
    // rows (scatter): rows of the table K; upsample: input plane width W
    c: u32,
    // permute: the output's shape, then the input's stride of each output axis
    shape: array<vec4<u32>, 2>,
    strides: array<vec4<u32>, 2>,
    _pad: vec4<u32>,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;
@group(0) @binding(2) var<storage, read> src: array<f32>;
// gather_rows / scatter_rows: the row indices, as f32 (exact below 2^24)
@group(0) @binding(3) var<storage, read> index: array<f32>;

fn flat_index(gid: vec3<u32>, groups: vec3<u32>) -> u32 {
    return gid.x + gid.y * groups.x * 256u;
}

fn dim(d: u32) -> u32 {
    return p.shape[d / 4u][d % 4u];
}

fn stride(d: u32) -> u32 {
    return p.strides[d / 4u][d % 4u];
}

// out[i_0, ..., i_{n-1}] = x[Σ_d i_d · stride_d], stride_d = the input stride of axis axes[d]
@compute @workgroup_size(256, 1, 1)
fn permute(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(gid, groups);
    if (i >= p.total) { return; }
    var rest = i;
    var at = 0u;
    for (var d = p.a; d > 0u; d = d - 1u) {
        let n = dim(d - 1u);
        at = at + (rest % n) * stride(d - 1u);
        rest = rest / n;
    }
    dst[i] = src[at];
}

// out[r][j] = table[index[r]][j]   (a: rows n, b: row length D)
@compute @workgroup_size(256, 1, 1)
fn gather_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(gid, groups);
    if (i >= p.total) { return; }
    let r = i / p.b;
    let j = i % p.b;
    dst[i] = src[u32(index[r]) * p.b + j];
}

// dtable[k][j] = Σ_{r : index[r] = k} g[r][j], each (k, j) summing its rows in order
// (deterministic, no atomics)   (a: rows n, b: row length D, c: table rows K)
@compute @workgroup_size(256, 1, 1)
fn scatter_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(gid, groups);
    if (i >= p.total) { return; }
    let k = f32(i / p.b);
    let j = i % p.b;
    var acc = 0.0;
    for (var r = 0u; r < p.a; r = r + 1u) {
        if (index[r] == k) {
            acc = acc + src[r * p.b + j];
        }
    }
    dst[i] = acc;
}

// y[plane][i][j] = x[plane][i / f][j / f]   (a: f, b: H, c: W of the input)
@compute @workgroup_size(256, 1, 1)
fn upsample(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(gid, groups);
    if (i >= p.total) { return; }
    let f = p.a;
    let ow = p.c * f;
    let oh = p.b * f;
    let x = i % ow;
    let y = (i / ow) % oh;
    let plane = i / (ow * oh);
    dst[i] = src[(plane * p.b + y / f) * p.c + x / f];
}

// dx[plane][i][j] = Σ_{u,v < f} g[plane][i f + u][j f + v]   (a: f, b: H, c: W of the input)
@compute @workgroup_size(256, 1, 1)
fn upsample_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(gid, groups);
    if (i >= p.total) { return; }
    let f = p.a;
    let x = i % p.c;
    let y = (i / p.c) % p.b;
    let plane = i / (p.b * p.c);
    let ow = p.c * f;
    var acc = 0.0;
    for (var u = 0u; u < f; u = u + 1u) {
        for (var v = 0u; v < f; v = v + 1u) {
            acc = acc + src[(plane * p.b * f + y * f + u) * ow + x * f + v]; // row y f + u of plane's (H f, W f)
        }
    }
    dst[i] = acc;
}
