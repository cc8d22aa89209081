// The data movement around a convolution-as-matmul (NCHW, square stride and padding,
// dilation 1, one group). Every entry point reads `src` and writes `dst`; one
// invocation per element of `dst`, laid out over a 2-D grid of 256-wide workgroups
// (index = x + y * 256 * groups_x) so that large tensors fit the dispatch limit.
//
//   im2col:   cols[b][(c kh + ky) kw + kx][oy Wo + ox] = x[b][c][oy s - pad + ky][ox s - pad + kx]
//             (0 where the input position falls in the padding), so that
//             y[b] = W (Cout, C kh kw) · cols[b] (C kh kw, Ho Wo).
//   col2im:   the adjoint of im2col: every input pixel gathers the column entries
//             that read it,
//             dx[b][c][iy][ix] = Σ_{ky,kx : iy = oy s - pad + ky, ix = ox s - pad + kx} dcols[b][(c kh + ky) kw + kx][oy Wo + ox]
//   bias_add: y[b][co][q] += bias[co]   (src = bias, dst = y)

struct Params {
    batch: u32,
    channels: u32,
    height: u32,
    width: u32,
    kernel_h: u32,
    kernel_w: u32,
    stride: u32,
    padding: u32,
    out_h: u32,
    out_w: u32,
    // bias_add: channels of y and size of one channel plane
    bias_channels: u32,
    plane: u32,
    // elements of dst this dispatch writes
    total: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

fn flat_index(gid: vec3<u32>, groups: vec3<u32>) -> u32 {
    return gid.x + gid.y * groups.x * 256u;
}

@compute @workgroup_size(256, 1, 1)
fn im2col(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let idx = flat_index(gid, groups);
    if (idx >= p.total) { return; }
    let plane = p.out_h * p.out_w;
    let rows = p.channels * p.kernel_h * p.kernel_w;
    let q = idx % plane;
    let row = (idx / plane) % rows;
    let bi = idx / (plane * rows);
    let ox = q % p.out_w;
    let oy = q / p.out_w;
    let kx = row % p.kernel_w;
    let ky = (row / p.kernel_w) % p.kernel_h;
    let ci = row / (p.kernel_w * p.kernel_h);
    // signed: the padding makes positions left of / above the image negative
    let iy = i32(oy * p.stride + ky) - i32(p.padding);
    let ix = i32(ox * p.stride + kx) - i32(p.padding);
    var v = 0.0;
    if (iy >= 0 && iy < i32(p.height) && ix >= 0 && ix < i32(p.width)) {
        v = src[((bi * p.channels + ci) * p.height + u32(iy)) * p.width + u32(ix)];
    }
    dst[idx] = v;
}

@compute @workgroup_size(256, 1, 1)
fn col2im(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let idx = flat_index(gid, groups);
    if (idx >= p.total) { return; }
    let ix = idx % p.width;
    let iy = (idx / p.width) % p.height;
    let ci = (idx / (p.width * p.height)) % p.channels;
    let bi = idx / (p.width * p.height * p.channels);
    let plane = p.out_h * p.out_w;
    let rows = p.channels * p.kernel_h * p.kernel_w;
    var sum = 0.0;
    for (var ky = 0u; ky < p.kernel_h; ky++) {
        // oy s = iy + pad - ky must be a non-negative multiple of s below out_h s
        let ty = i32(iy + p.padding) - i32(ky);
        if (ty < 0 || u32(ty) % p.stride != 0u) { continue; }
        let oy = u32(ty) / p.stride;
        if (oy >= p.out_h) { continue; }
        for (var kx = 0u; kx < p.kernel_w; kx++) {
            let tx = i32(ix + p.padding) - i32(kx);
            if (tx < 0 || u32(tx) % p.stride != 0u) { continue; }
            let ox = u32(tx) / p.stride;
            if (ox >= p.out_w) { continue; }
            let row = (ci * p.kernel_h + ky) * p.kernel_w + kx;
            sum += src[(bi * rows + row) * plane + oy * p.out_w + ox];
        }
    }
    dst[idx] = sum;
}

@compute @workgroup_size(256, 1, 1)
fn bias_add(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let idx = flat_index(gid, groups);
    if (idx >= p.total) { return; }
    let co = (idx / p.plane) % p.bias_channels;
    dst[idx] = dst[idx] + src[co];
}
