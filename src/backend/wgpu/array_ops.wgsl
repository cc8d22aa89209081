// The kernels of array_ops.rs: elementwise maps, bias adds, sums, max pooling,
// cross-entropy and the Adam step, on f32 arrays that stay in GPU memory.
//
// Binding 0 is the uniform `p`; binding 1 is the array the kernel writes (`dst`, or the
// parameter for `adam_step`); bindings 2.. are what it reads. A variable declared for
// one entry point may share a binding number with another entry point's variable of a
// different access mode: an entry point's interface holds only the variables it uses.
//
// Elementwise kernels run one invocation per element of `dst`, in 256-wide workgroups
// over a 2-D grid (index = x + y * 256 * groups_x); reductions and cross-entropy run one
// 256-wide workgroup per output (output = workgroup x + y * groups_x), each thread
// summing a strided share and the workgroup adding the 256 shares as a tree.

struct Params {
    // elements (or outputs) this dispatch covers
    total: u32,
    // bias_add and sums: (batch, channels, plane) of an NCHW-like array, rows = batch,
    // cols = channels and plane = 1 for a (rows, cols) matrix;
    // cross-entropy: rows = batch, classes = channels
    batch: u32,
    channels: u32,
    plane: u32,
    // max pooling: input plane and square window, no padding
    height: u32,
    width: u32,
    kernel: u32,
    stride: u32,
    // adam_step: 1 for AdamW (decoupled weight decay), 0 for Adam
    decoupled: u32,
    // scale: the factor; fill: the value; sum_all: the divisor; adam_step: the learning rate
    scalar: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    // 1 - β₁ᵗ and 1 - β₂ᵗ
    bias_correction1: f32,
    bias_correction2: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;
@group(0) @binding(2) var<storage, read> in0: array<f32>;
@group(0) @binding(3) var<storage, read> in1: array<f32>;
// cross_entropy_rows: each row's loss, beside the probabilities in `dst`
@group(0) @binding(4) var<storage, read_write> row_loss: array<f32>;
// cross_entropy_backward: the loss's gradient (one value)
@group(0) @binding(4) var<storage, read> in2: array<f32>;
// adam_step: the moments, updated in place (`dst` is θ, `in0` the gradient)
@group(0) @binding(3) var<storage, read_write> moment1: array<f32>;
@group(0) @binding(4) var<storage, read_write> moment2: array<f32>;

const WORKGROUP: u32 = 256u;
var<workgroup> shares: array<f32, 256>;

fn flat_index(gid: vec3<u32>, groups: vec3<u32>) -> u32 {
    return gid.x + gid.y * groups.x * WORKGROUP;
}

fn group_index(wid: vec3<u32>, groups: vec3<u32>) -> u32 {
    return wid.x + wid.y * groups.x;
}

fn neg_infinity() -> f32 {
    return bitcast<f32>(0xff800000u);
}

// Σ of the workgroup's 256 `value`s (thread `lid`'s is its share), as a tree.
fn workgroup_sum(lid: u32, value: f32) -> f32 {
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

// max of the workgroup's 256 `value`s.
fn workgroup_max(lid: u32, value: f32) -> f32 {
    shares[lid] = value;
    workgroupBarrier();
    for (var width = WORKGROUP / 2u; width > 0u; width = width / 2u) {
        if (lid < width) {
            shares[lid] = max(shares[lid], shares[lid + width]);
        }
        workgroupBarrier();
    }
    let total = shares[0];
    workgroupBarrier();
    return total;
}

// dst = max(x, 0), with NaN -> 0 as Rust's f32::max(x, 0.0)
@compute @workgroup_size(256, 1, 1)
fn relu(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(gid, groups);
    if (i >= p.total) { return; }
    dst[i] = select(0.0, in0[i], in0[i] > 0.0);
}

// dst = g · [x > 0]   (in0 = g, in1 = x)
@compute @workgroup_size(256, 1, 1)
fn relu_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(gid, groups);
    if (i >= p.total) { return; }
    dst[i] = select(0.0, in0[i], in1[i] > 0.0);
}

// dst = a + b
@compute @workgroup_size(256, 1, 1)
fn add(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(gid, groups);
    if (i >= p.total) { return; }
    dst[i] = in0[i] + in1[i];
}

// dst += b
@compute @workgroup_size(256, 1, 1)
fn add_assign(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(gid, groups);
    if (i >= p.total) { return; }
    dst[i] = dst[i] + in0[i];
}

// dst = s x
@compute @workgroup_size(256, 1, 1)
fn scale(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(gid, groups);
    if (i >= p.total) { return; }
    dst[i] = p.scalar * in0[i];
}

// dst = v
@compute @workgroup_size(256, 1, 1)
fn fill(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(gid, groups);
    if (i >= p.total) { return; }
    dst[i] = p.scalar;
}

// dst[n][c][q] = x[n][c][q] + b[c]   (in0 = x, in1 = b)
@compute @workgroup_size(256, 1, 1)
fn bias_add(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(gid, groups);
    if (i >= p.total) { return; }
    let c = (i / p.plane) % p.channels;
    dst[i] = in0[i] + in1[c];
}

// dst[c] = Σ_{n,q} g[n][c][q], one workgroup per channel c
@compute @workgroup_size(256, 1, 1)
fn sum_planes(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32, @builtin(num_workgroups) groups: vec3<u32>) {
    let c = group_index(wid, groups);
    if (c >= p.channels) { return; }
    var share = 0.0;
    for (var j = lid; j < p.batch * p.plane; j += WORKGROUP) {
        let n = j / p.plane;
        let q = j % p.plane;
        share += in0[(n * p.channels + c) * p.plane + q];
    }
    let total = workgroup_sum(lid, share);
    if (lid == 0u) {
        dst[c] = total;
    }
}

// dst[0] = Σ_i x[i] / d   (d = 1 for a sum, the count for a mean), one workgroup
@compute @workgroup_size(256, 1, 1)
fn sum_all(@builtin(local_invocation_index) lid: u32) {
    var share = 0.0;
    for (var i = lid; i < p.total; i += WORKGROUP) {
        share += in0[i];
    }
    let total = workgroup_sum(lid, share);
    if (lid == 0u) {
        dst[0] = total / p.scalar;
    }
}

fn pool_out_height() -> u32 {
    return (p.height - p.kernel) / p.stride + 1u;
}

fn pool_out_width() -> u32 {
    return (p.width - p.kernel) / p.stride + 1u;
}

// The index in its plane of window (oy, ox)'s first maximum in row-major order
// (strictly greater replaces; NaN never wins; all -inf or NaN: the top-left pixel),
// as the CPU's pool2d_forward. `plane_start` is the plane's first index in x (in0).
fn window_argmax(plane_start: u32, oy: u32, ox: u32) -> u32 {
    let first = oy * p.stride * p.width + ox * p.stride; // top-left pixel
    var best = neg_infinity();
    var best_at = first;
    for (var u = 0u; u < p.kernel; u++) {
        let row = first + u * p.width;
        for (var v = 0u; v < p.kernel; v++) {
            let value = in0[plane_start + row + v];
            if (value > best) {
                best = value;
                best_at = row + v;
            }
        }
    }
    return best_at;
}

// y[n][c][oy][ox] = max_{u,v < k} x[n][c][s oy + u][s ox + v]   (in0 = x)
@compute @workgroup_size(256, 1, 1)
fn max_pool2d(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(gid, groups);
    if (i >= p.total) { return; }
    let oh = pool_out_height();
    let ow = pool_out_width();
    let ox = i % ow;
    let oy = (i / ow) % oh;
    let plane_start = (i / (ow * oh)) * p.height * p.width;
    let at = window_argmax(plane_start, oy, ox);
    // the window's max, -inf when nothing beat it (as the CPU's starting value)
    let value = in0[plane_start + at];
    dst[i] = select(neg_infinity(), value, value > neg_infinity());
}

// dx[n][c][iy][ix] = Σ_{windows o whose first max is (iy, ix)} dy[n][c][o], windows in
// ascending order as the CPU adds them   (in0 = x, in1 = dy)
@compute @workgroup_size(256, 1, 1)
fn max_pool2d_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(gid, groups);
    if (i >= p.total) { return; }
    let oh = pool_out_height();
    let ow = pool_out_width();
    let ix = i % p.width;
    let iy = (i / p.width) % p.height;
    let plane = i / (p.width * p.height);
    let plane_start = plane * p.height * p.width;
    let here = iy * p.width + ix;
    // windows covering the pixel: s o <= i < s o + k, i.e. (i - k) / s < o <= i / s
    let oy_first = select(0u, (iy + 1u - p.kernel + p.stride - 1u) / p.stride, iy + 1u > p.kernel);
    let ox_first = select(0u, (ix + 1u - p.kernel + p.stride - 1u) / p.stride, ix + 1u > p.kernel);
    let oy_last = min(iy / p.stride, oh - 1u);
    let ox_last = min(ix / p.stride, ow - 1u);
    var sum = 0.0;
    for (var oy = oy_first; oy <= oy_last; oy++) {
        for (var ox = ox_first; ox <= ox_last; ox++) {
            if (window_argmax(plane_start, oy, ox) == here) {
                sum += in1[(plane * oh + oy) * ow + ox];
            }
        }
    }
    dst[i] = sum;
}

// One workgroup per row r of logits (in0, rows x classes), targets (in1) as f32:
//   lse = m + log Σ_k exp(x_k - m),  m = max_k x_k
//   probs[r][k] = exp(x_k - lse)                       (dst)
//   row_loss[r] = lse - x_target = -log softmax(x)_target   (NaN for a target that
//   is not a class index)
@compute @workgroup_size(256, 1, 1)
fn cross_entropy_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32, @builtin(num_workgroups) groups: vec3<u32>) {
    let r = group_index(wid, groups);
    if (r >= p.batch) { return; }
    let classes = p.channels;
    let start = r * classes;
    var row_max = neg_infinity();
    for (var k = lid; k < classes; k += WORKGROUP) {
        row_max = max(row_max, in0[start + k]);
    }
    let m = workgroup_max(lid, row_max);
    var share = 0.0;
    for (var k = lid; k < classes; k += WORKGROUP) {
        share += exp(in0[start + k] - m);
    }
    let lse = m + log(workgroup_sum(lid, share));
    for (var k = lid; k < classes; k += WORKGROUP) {
        dst[start + k] = exp(in0[start + k] - lse);
    }
    if (lid == 0u) {
        let label = in1[r];
        let valid = label >= 0.0 && label < f32(classes) && label == floor(label);
        var loss = bitcast<f32>(0x7fc00000u); // NaN
        if (valid) {
            loss = lse - in0[start + u32(label)];
        }
        row_loss[r] = loss;
    }
}

// d logits[r][k] = g (probs[r][k] - [k = target_r]) / rows
//   (in0 = probs, in1 = targets, in2 = g: the loss's gradient)
@compute @workgroup_size(256, 1, 1)
fn cross_entropy_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(gid, groups);
    if (i >= p.total) { return; }
    let k = i % p.channels;
    let r = i / p.channels;
    let onehot = select(0.0, 1.0, f32(k) == in1[r]);
    dst[i] = in2[0] * (in0[i] - onehot) / f32(p.batch);
}

// Adam (Kingma & Ba 2015, Algorithm 1) in place, in src/optim/adam.rs's order:
//   g ← g + λθ (Adam)  or  θ ← θ - ηλθ (AdamW)
//   m ← β₁ m + (1 - β₁) g,   v ← β₂ v + (1 - β₂) g²
//   θ ← θ - η (m / (1 - β₁ᵗ)) / (√(v / (1 - β₂ᵗ)) + ε)
// dst = θ, in0 = g, moment1 = m, moment2 = v
@compute @workgroup_size(256, 1, 1)
fn adam_step(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(gid, groups);
    if (i >= p.total) { return; }
    let lr = p.scalar;
    var theta = dst[i];
    var g = in0[i];
    if (p.decoupled == 1u) {
        theta = theta - lr * p.weight_decay * theta; // θ ← θ - ηλθ
    } else {
        g = g + p.weight_decay * theta; // g ← g + λθ
    }
    let m = p.beta1 * moment1[i] + (1.0 - p.beta1) * g;
    let v = p.beta2 * moment2[i] + (1.0 - p.beta2) * g * g;
    moment1[i] = m;
    moment2[i] = v;
    let m_hat = m / p.bias_correction1;
    let v_hat = v / p.bias_correction2;
    dst[i] = theta - lr * m_hat / (sqrt(v_hat) + p.eps);
}
