// The elementwise kernels of pointwise.rs: unary maps chosen by an op code and their
// derivatives, same-shape binary maps, a scalar spread over an array, and the terms of
// the binary cross-entropy on logits. One invocation per element of `dst` (binding 1),
// in 256-wide workgroups over a 2-D grid (index = x + y * 256 * groups_x).

struct Params {
    // elements this dispatch writes
    total: u32,
    // unary: 0 sigmoid, 1 tanh, 2 square; binary: 0 a - b, 1 a · b
    op: u32,
    // broadcast_scalar: the factor; bce terms: 1 / n times the upstream gradient's factor
    scalar: f32,
    _pad0: u32,
    _pad1: u32, _pad2: u32, _pad3: u32, _pad4: u32,
    _pad5: u32, _pad6: u32, _pad7: u32, _pad8: u32,
    _pad9: u32, _pad10: u32, _pad11: u32, _pad12: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;
@group(0) @binding(2) var<storage, read> in0: array<f32>;
@group(0) @binding(3) var<storage, read> in1: array<f32>;
@group(0) @binding(4) var<storage, read> in2: array<f32>;

fn flat_index(gid: vec3<u32>, groups: vec3<u32>) -> u32 {
    return gid.x + gid.y * groups.x * 256u;
}

// σ(x) = 1 / (1 + e^{-x}), computed on the side where e^{·} cannot overflow
fn sigmoid(x: f32) -> f32 {
    if (x >= 0.0) {
        return 1.0 / (1.0 + exp(-x));
    }
    let e = exp(x);
    return e / (1.0 + e);
}

// y = f(x)
@compute @workgroup_size(256, 1, 1)
fn unary(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(gid, groups);
    if (i >= p.total) { return; }
    let x = in0[i];
    switch p.op {
        case 0u: { dst[i] = sigmoid(x); }
        case 1u: { dst[i] = tanh(x); }
        default: { dst[i] = x * x; }
    }
}

// dx = g · f'(x): σ' = σ (1 - σ), tanh' = 1 - tanh², (x²)' = 2x   (in0 = g, in1 = x)
@compute @workgroup_size(256, 1, 1)
fn unary_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(gid, groups);
    if (i >= p.total) { return; }
    let g = in0[i];
    let x = in1[i];
    switch p.op {
        case 0u: { let s = sigmoid(x); dst[i] = g * s * (1.0 - s); }
        case 1u: { let t = tanh(x); dst[i] = g * (1.0 - t * t); }
        default: { dst[i] = g * 2.0 * x; }
    }
}

// a - b or a · b   (in0 = a, in1 = b)
@compute @workgroup_size(256, 1, 1)
fn binary(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(gid, groups);
    if (i >= p.total) { return; }
    if (p.op == 0u) {
        dst[i] = in0[i] - in1[i];
    } else {
        dst[i] = in0[i] * in1[i];
    }
}

// y[i] = s · g[0]: the gradient of a sum (s = 1) or a mean (s = 1/n) spread back
@compute @workgroup_size(256, 1, 1)
fn broadcast_scalar(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(gid, groups);
    if (i >= p.total) { return; }
    dst[i] = p.scalar * in0[0];
}

// the BCE-on-logits term of each element: max(x, 0) - x y + ln(1 + e^{-|x|})   (in0 = x, in1 = y)
@compute @workgroup_size(256, 1, 1)
fn bce_terms(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(gid, groups);
    if (i >= p.total) { return; }
    let x = in0[i];
    let y = in1[i];
    dst[i] = max(x, 0.0) - x * y + log(1.0 + exp(-abs(x)));
}

// dx = g[0] (σ(x) - y) / n   (in0 = x, in1 = y, in2 = g; scalar = 1 / n)
@compute @workgroup_size(256, 1, 1)
fn bce_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(gid, groups);
    if (i >= p.total) { return; }
    dst[i] = in2[0] * (sigmoid(in0[i]) - in1[i]) * p.scalar;
}
