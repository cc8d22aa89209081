// The elementwise kernels of pointwise.rs: unary maps chosen by an op code and their
// derivatives, same-shape binary maps, a scalar spread over an array, and the terms of
// the binary cross-entropy on logits. One invocation per element of `dst` (binding 1),
// in 256-wide workgroups over a 2-D grid (index = x + y * 256 * groups_x).

struct Params {
    // elements this dispatch writes
    total: u32,
    // unary: 0 sigmoid, 1 tanh, 2 square, 3 exp, 4 GELU (erf), 5 GELU (tanh), 6 SiLU,
    // 7 QuickGELU, 8 x + scalar; binary: 0 a - b, 1 a · b
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

// erf(x) as the CPU computes it (Numerical Recipes' erfc: |error| < 1.2e-7):
// 1 - t e^{-z² + P(t)}, t = 1 / (1 + z/2), z = |x|
fn erf(x: f32) -> f32 {
    let z = abs(x);
    let t = 1.0 / (1.0 + 0.5 * z);
    var q = 0.17087277;
    q = fma(q, t, -0.82215223);
    q = fma(q, t, 1.48851587);
    q = fma(q, t, -1.13520398);
    q = fma(q, t, 0.27886807);
    q = fma(q, t, -0.18628806);
    q = fma(q, t, 0.09678418);
    q = fma(q, t, 0.37409196);
    q = fma(q, t, 1.00002368);
    q = fma(q, t, -1.26551223);
    let r = 1.0 - t * exp(fma(-z, z, q));
    return select(-r, r, x >= 0.0);
}

const SQRT_2_OVER_PI: f32 = 0.7978846;       // √(2/π)
const INV_SQRT_2: f32 = 0.70710678;          // 1/√2
const INV_SQRT_2PI: f32 = 0.39894228;        // 1/√(2π)

fn f(op: u32, x: f32) -> f32 {
    switch op {
        case 8u: { return x + p.scalar; }
        case 0u: { return sigmoid(x); }
        case 1u: { return tanh(x); }
        case 2u: { return x * x; }
        case 3u: { return exp(x); }
        // x Φ(x) = x (1 + erf(x/√2)) / 2
        case 4u: { return 0.5 * x * (1.0 + erf(x * INV_SQRT_2)); }
        // x/2 (1 + tanh(√(2/π) (x + 0.044715 x³)))
        case 5u: { return 0.5 * x * (1.0 + tanh(SQRT_2_OVER_PI * (x + 0.044715 * x * x * x))); }
        // x σ(x)
        case 6u: { return x * sigmoid(x); }
        // x σ(1.702 x)
        default: { return x * sigmoid(1.702 * x); }
    }
}

// f'(x)
fn df(op: u32, x: f32) -> f32 {
    switch op {
        case 8u: { return 1.0; }
        case 0u: { let s = sigmoid(x); return s * (1.0 - s); }
        case 1u: { let t = tanh(x); return 1.0 - t * t; }
        case 2u: { return 2.0 * x; }
        case 3u: { return exp(x); }
        // Φ(x) + x φ(x)
        case 4u: { return 0.5 * (1.0 + erf(x * INV_SQRT_2)) + x * INV_SQRT_2PI * exp(-0.5 * x * x); }
        // ½(1 + t) + ½ x (1 - t²) √(2/π) (1 + 3·0.044715 x²)
        case 5u: {
            let t = tanh(SQRT_2_OVER_PI * (x + 0.044715 * x * x * x));
            return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * SQRT_2_OVER_PI * (1.0 + 0.134145 * x * x);
        }
        // σ(x) (1 + x (1 - σ(x)))
        case 6u: { let s = sigmoid(x); return s * (1.0 + x * (1.0 - s)); }
        // σ(1.702x) (1 + 1.702 x (1 - σ(1.702x)))
        default: { let s = sigmoid(1.702 * x); return s * (1.0 + 1.702 * x * (1.0 - s)); }
    }
}

// y = f(x)
@compute @workgroup_size(256, 1, 1)
fn unary(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(gid, groups);
    if (i >= p.total) { return; }
    dst[i] = f(p.op, in0[i]);
}

// dx = g · f'(x)   (in0 = g, in1 = x)
@compute @workgroup_size(256, 1, 1)
fn unary_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(gid, groups);
    if (i >= p.total) { return; }
    dst[i] = in0[i] * df(p.op, in1[i]);
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
