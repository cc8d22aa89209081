// The kernels of rows.rs: softmax and layer norm over rows of length d (one 256-wide
// workgroup per row, each thread taking a strided share of the row and the workgroup
// adding the 256 shares as a tree), the column sums of layer norm's dγ and dβ (one
// workgroup per column), and slices, joins and masks (one invocation per output value).
//
// Binding 0 is the uniform `p`, binding 1 the array the kernel writes (`dst`), bindings
// 2.. what it reads; layer norm writes a second array (`out2`) at binding 5. A binding
// number may name variables of different access modes in different entry points: an
// entry point's interface holds only the variables it uses.
//
// Workgroup w of a row kernel is `x + y · groups_x`; the elementwise index is
// `x + y · 256 · groups_x` (rows.rs dispatches `rows · 256` invocations for the former).

struct Params {
    // values written (elementwise), or rows / columns (one workgroup each)
    total: u32,
    // softmax, layer norm: rows of length d
    rows: u32,
    d: u32,
    // layer norm: ε added to the variance
    eps: f32,
    // slices: x viewed as (outer, len, inner) (outer = total / (len · inner)); narrow takes
    // x[:, start .. start + width, :]; concat2 joins (outer, len, inner) and (outer, width, inner)
    len: u32,
    inner: u32,
    start: u32,
    width: u32,
    // masked_fill: number of axes (<= 8) and the value written where the mask is nonzero
    // (any f32, -inf included: the host writes its bits)
    axes: u32,
    value: f32,
    _pad0: u32,
    _pad1: u32,
    // masked_fill: the output's shape, then the mask's stride along each output axis
    // (0 where the mask broadcasts)
    shape: array<vec4<u32>, 2>,
    mask_strides: array<vec4<u32>, 2>,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;
@group(0) @binding(2) var<storage, read> in0: array<f32>;
@group(0) @binding(3) var<storage, read> in1: array<f32>;
@group(0) @binding(4) var<storage, read> in2: array<f32>;
@group(0) @binding(5) var<storage, read> in3: array<f32>;
// layer_norm_rows: (μ, 1/σ) per row; layer_norm_param_grads: dβ
@group(0) @binding(5) var<storage, read_write> out2: array<f32>;

const WORKGROUP: u32 = 256u;
var<workgroup> shares: array<vec2<f32>, 256>;

fn flat_index(gid: vec3<u32>, groups: vec3<u32>) -> u32 {
    return gid.x + gid.y * groups.x * WORKGROUP;
}

fn group_index(wid: vec3<u32>, groups: vec3<u32>) -> u32 {
    return wid.x + wid.y * groups.x;
}

fn nan() -> f32 {
    return bitcast<f32>(0x7fc00000u);
}

fn is_infinite(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7fffffffu) == 0x7f800000u;
}

// Σ of the workgroup's 256 `value`s (thread `lid`'s is its share), two sums at once, as a tree.
fn workgroup_sum2(lid: u32, value: vec2<f32>) -> vec2<f32> {
    shares[lid] = value;
    workgroupBarrier();
    for (var width = WORKGROUP / 2u; width > 0u; width = width / 2u) {
        if (lid < width) {
            shares[lid] = shares[lid] + shares[lid + width];
        }
        workgroupBarrier();
    }
    let total = shares[0];
    workgroupBarrier(); // everyone has read shares[0] before it is reused
    return total;
}

fn workgroup_sum(lid: u32, value: f32) -> f32 {
    return workgroup_sum2(lid, vec2<f32>(value, 0.0)).x;
}

// max of the workgroup's 256 `value`s.
fn workgroup_max(lid: u32, value: f32) -> f32 {
    shares[lid] = vec2<f32>(value, 0.0);
    workgroupBarrier();
    for (var width = WORKGROUP / 2u; width > 0u; width = width / 2u) {
        if (lid < width) {
            shares[lid].x = max(shares[lid].x, shares[lid + width].x);
        }
        workgroupBarrier();
    }
    let total = shares[0].x;
    workgroupBarrier();
    return total;
}

// y_j = e^{x_j - m} / Σ_k e^{x_k - m},  m = max_k x_k, one workgroup per row (in0 = x).
// A row whose maximum is infinite (all -inf, or a +inf) is NaN, as the CPU's.
@compute @workgroup_size(256, 1, 1)
fn softmax_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32, @builtin(num_workgroups) groups: vec3<u32>) {
    let r = group_index(wid, groups);
    if (r >= p.rows) { return; }
    let start = r * p.d;
    var share_max = bitcast<f32>(0xff800000u); // -inf
    for (var j = lid; j < p.d; j += WORKGROUP) {
        share_max = max(share_max, in0[start + j]);
    }
    let m = workgroup_max(lid, share_max);
    var share = 0.0;
    for (var j = lid; j < p.d; j += WORKGROUP) {
        let e = exp(in0[start + j] - m); // e^{x_j - m} <= 1
        dst[start + j] = e;
        share += e;
    }
    let inv = 1.0 / workgroup_sum(lid, share); // 1 / Σ_k e^{x_k - m}, as the CPU scales
    for (var j = lid; j < p.d; j += WORKGROUP) {
        dst[start + j] = select(dst[start + j] * inv, nan(), is_infinite(m));
    }
}

// dx_j = y_j (g_j - Σ_k g_k y_k), one workgroup per row (in0 = g, in1 = y)
@compute @workgroup_size(256, 1, 1)
fn softmax_rows_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32, @builtin(num_workgroups) groups: vec3<u32>) {
    let r = group_index(wid, groups);
    if (r >= p.rows) { return; }
    let start = r * p.d;
    var share = 0.0;
    for (var j = lid; j < p.d; j += WORKGROUP) {
        share += in0[start + j] * in1[start + j];
    }
    let s = workgroup_sum(lid, share); // Σ_k g_k y_k
    for (var j = lid; j < p.d; j += WORKGROUP) {
        dst[start + j] = in1[start + j] * (in0[start + j] - s);
    }
}

// y_j = x_j - m - ln Σ_k e^{x_k - m}, m = max_k x_k, one workgroup per row (in0 = x),
// as Tensor::log_softmax
@compute @workgroup_size(256, 1, 1)
fn log_softmax_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32, @builtin(num_workgroups) groups: vec3<u32>) {
    let r = group_index(wid, groups);
    if (r >= p.rows) { return; }
    let start = r * p.d;
    var share_max = bitcast<f32>(0xff800000u); // -inf
    for (var j = lid; j < p.d; j += WORKGROUP) {
        share_max = max(share_max, in0[start + j]);
    }
    let m = workgroup_max(lid, share_max);
    var share = 0.0;
    for (var j = lid; j < p.d; j += WORKGROUP) {
        share += exp(in0[start + j] - m);
    }
    let lse = m + log(workgroup_sum(lid, share)); // m + ln Σ_k e^{x_k - m}
    for (var j = lid; j < p.d; j += WORKGROUP) {
        dst[start + j] = in0[start + j] - lse;
    }
}

// dx_j = g_j - e^{y_j} Σ_k g_k, one workgroup per row (in0 = g, in1 = y)
@compute @workgroup_size(256, 1, 1)
fn log_softmax_rows_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32, @builtin(num_workgroups) groups: vec3<u32>) {
    let r = group_index(wid, groups);
    if (r >= p.rows) { return; }
    let start = r * p.d;
    var share = 0.0;
    for (var j = lid; j < p.d; j += WORKGROUP) {
        share += in0[start + j];
    }
    let s = workgroup_sum(lid, share); // Σ_k g_k
    for (var j = lid; j < p.d; j += WORKGROUP) {
        dst[start + j] = in0[start + j] - exp(in1[start + j]) * s;
    }
}

// One workgroup per row of x (in0), γ (in1), β (in2); y in dst, (μ, 1/σ) in out2:
//   μ = x_0 + Σ_j (x_j - x_0) / d   (shifted by the row's first value, so that a large
//                                    common offset does not cost the sum its precision)
//   σ² = Σ_j (x_j - μ)² / d   (biased),   1/σ = 1 / √(σ² + ε)
//   y_j = γ_j (x_j - μ) / σ + β_j
@compute @workgroup_size(256, 1, 1)
fn layer_norm_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32, @builtin(num_workgroups) groups: vec3<u32>) {
    let r = group_index(wid, groups);
    if (r >= p.rows) { return; }
    let start = r * p.d;
    let pivot = in0[start];
    var share = 0.0;
    for (var j = lid; j < p.d; j += WORKGROUP) {
        share += in0[start + j] - pivot;
    }
    let mu = pivot + workgroup_sum(lid, share) / f32(p.d);
    var share_sq = 0.0;
    for (var j = lid; j < p.d; j += WORKGROUP) {
        let c = in0[start + j] - mu;
        share_sq += c * c;
    }
    let variance = workgroup_sum(lid, share_sq) / f32(p.d);
    let rs = 1.0 / sqrt(variance + p.eps);
    for (var j = lid; j < p.d; j += WORKGROUP) {
        let xhat = (in0[start + j] - mu) * rs;
        dst[start + j] = in1[j] * xhat + in2[j];
    }
    if (lid == 0u) {
        out2[2u * r] = mu;
        out2[2u * r + 1u] = rs;
    }
}

// dx_j = (ĝ_j - mean(ĝ) - x̂_j mean(ĝ x̂)) / σ,  ĝ = γ dy,  x̂ = (x - μ) / σ, one workgroup
// per row   (in0 = dy, in1 = x, in2 = (μ, 1/σ) per row, in3 = γ)
@compute @workgroup_size(256, 1, 1)
fn layer_norm_rows_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32, @builtin(num_workgroups) groups: vec3<u32>) {
    let r = group_index(wid, groups);
    if (r >= p.rows) { return; }
    let start = r * p.d;
    let mu = in2[2u * r];
    let rs = in2[2u * r + 1u];
    var share = vec2<f32>(0.0, 0.0);
    for (var j = lid; j < p.d; j += WORKGROUP) {
        let g_hat = in3[j] * in0[start + j];
        let xhat = (in1[start + j] - mu) * rs;
        share += vec2<f32>(g_hat, g_hat * xhat);
    }
    let means = workgroup_sum2(lid, share) / f32(p.d); // (mean(ĝ), mean(ĝ x̂))
    for (var j = lid; j < p.d; j += WORKGROUP) {
        let g_hat = in3[j] * in0[start + j];
        let xhat = (in1[start + j] - mu) * rs;
        dst[start + j] = (g_hat - means.x - xhat * means.y) * rs;
    }
}

// dγ_c = Σ_r dy[r][c] x̂[r][c] (dst),  dβ_c = Σ_r dy[r][c] (out2), one workgroup per
// column c   (in0 = dy, in1 = x, in2 = (μ, 1/σ) per row)
@compute @workgroup_size(256, 1, 1)
fn layer_norm_param_grads(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32, @builtin(num_workgroups) groups: vec3<u32>) {
    let c = group_index(wid, groups);
    if (c >= p.d) { return; }
    var share = vec2<f32>(0.0, 0.0);
    for (var r = lid; r < p.rows; r += WORKGROUP) {
        let dy = in0[r * p.d + c];
        let xhat = (in1[r * p.d + c] - in2[2u * r]) * in2[2u * r + 1u];
        share += vec2<f32>(dy * xhat, dy);
    }
    let sums = workgroup_sum2(lid, share);
    if (lid == 0u) {
        dst[c] = sums.x;
        out2[c] = sums.y;
    }
}

// y[o][j][k] = x[o][start + j][k]: (outer, width, inner) out of (outer, len, inner)   (in0 = x)
@compute @workgroup_size(256, 1, 1)
fn narrow(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(gid, groups);
    if (i >= p.total) { return; }
    let k = i % p.inner;
    let j = (i / p.inner) % p.width;
    let o = i / (p.inner * p.width);
    dst[i] = in0[(o * p.len + p.start + j) * p.inner + k];
}

// dx[o][j][k] = g[o][j - start][k] for start <= j < start + width, else 0: (outer, len,
// inner)   (in0 = g, (outer, width, inner))
@compute @workgroup_size(256, 1, 1)
fn narrow_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(gid, groups);
    if (i >= p.total) { return; }
    let k = i % p.inner;
    let j = (i / p.inner) % p.len;
    let o = i / (p.inner * p.len);
    var value = 0.0;
    if (j >= p.start && j < p.start + p.width) {
        value = in0[(o * p.width + j - p.start) * p.inner + k];
    }
    dst[i] = value;
}

// y[o][j][k] = a[o][j][k] for j < len, b[o][j - len][k] after: (outer, len + width, inner)
//   (in0 = a (outer, len, inner), in1 = b (outer, width, inner))
@compute @workgroup_size(256, 1, 1)
fn concat2(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(gid, groups);
    if (i >= p.total) { return; }
    let joined = p.len + p.width;
    let k = i % p.inner;
    let j = (i / p.inner) % joined;
    let o = i / (p.inner * joined);
    if (j < p.len) {
        dst[i] = in0[(o * p.len + j) * p.inner + k];
    } else {
        dst[i] = in1[(o * p.width + j - p.len) * p.inner + k];
    }
}

fn dim(a: u32) -> u32 {
    return p.shape[a / 4u][a % 4u];
}

fn mask_stride(a: u32) -> u32 {
    return p.mask_strides[a / 4u][a % 4u];
}

// y[i] = value where mask[Σ_a i_a · stride_a] != 0, else x[i]   (in0 = x, in1 = mask)
@compute @workgroup_size(256, 1, 1)
fn masked_fill(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(gid, groups);
    if (i >= p.total) { return; }
    var rest = i;
    var at = 0u;
    for (var a = p.axes; a > 0u; a = a - 1u) {
        let n = dim(a - 1u);
        at = at + (rest % n) * mask_stride(a - 1u);
        rest = rest / n;
    }
    dst[i] = select(in0[i], p.value, in1[at] != 0.0);
}
