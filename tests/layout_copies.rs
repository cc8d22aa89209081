//! The row-major copies behind reshape, permute, narrow and contiguous
//! ([`dalle::ops::kernels::to_standard`]) and the gradient sums of the backward
//! pass ([`dalle::ops::kernels::add_assign_view`]), checked element by element
//! against ndarray's own copy and `+=` on layouts that reach every path, at
//! sizes past the parallel threshold (so that rayon chunks start mid-row index).

use dalle::ops::kernels::{add_assign, add_assign_view, to_standard, transposed_copy, PARALLEL_MIN_LEN};
use dalle::{Rng, Tensor};
use ndarray::{ArrayD, Axis, IxDyn, Slice};

fn randn(shape: &[usize], seed: u64) -> ArrayD<f32> {
    Rng::new(seed).normal_array(shape)
}

/// `to_standard` must give the same logical array as ndarray, in row-major order.
fn same_copy(name: &str, v: ndarray::ArrayViewD<f32>) {
    let ours = to_standard(&v);
    assert!(ours.is_standard_layout(), "{name}: not row-major");
    assert_eq!(ours.shape(), v.shape(), "{name}: shape");
    let want = v.as_standard_layout().into_owned();
    assert_eq!(ours.as_slice().unwrap(), want.as_slice().unwrap(), "{name}: values");
}

#[test]
fn to_standard_matches_ndarray_on_every_layout() {
    // (B, T, H, D) = (5, 67, 3, 45): 45 225 elements, above PARALLEL_MIN_LEN.
    let x = randn(&[5, 67, 3, 45], 1);
    assert!(x.len() > PARALLEL_MIN_LEN);
    same_copy("contiguous", x.view());
    same_copy("heads split (0, 2, 1, 3)", x.view().permuted_axes(IxDyn(&[0, 2, 1, 3])));
    same_copy("leading axes reversed, last kept", x.view().permuted_axes(IxDyn(&[2, 1, 0, 3])));
    same_copy("last-axis slice", x.slice_axis(Axis(3), Slice::from(7..30)));
    same_copy("middle-axis slice", x.slice_axis(Axis(1), Slice::from(3..64)));
    same_copy("stepped slice", x.slice_axis(Axis(1), Slice::new(1, None, 3)));
    same_copy("transposed last two (tiled transposes)", x.view().permuted_axes(IxDyn(&[0, 1, 3, 2])));
    same_copy("size-1 last axis", randn(&[300, 200, 1], 2).view().permuted_axes(IxDyn(&[1, 0, 2])));
    same_copy("small", randn(&[3, 1, 2], 3).view().permuted_axes(IxDyn(&[2, 1, 0])));
    // Broadcasts (the gradients of sums): along the last axis (stride 0, each row
    // filled with one value), along a middle axis, and both.
    let kept = randn(&[5, 67, 3, 1], 4);
    same_copy("broadcast along the last axis", kept.broadcast(IxDyn(&[5, 67, 3, 45])).unwrap());
    let kept = randn(&[5, 1, 3, 45], 5);
    same_copy("broadcast along a middle axis", kept.broadcast(IxDyn(&[5, 67, 3, 45])).unwrap());
    let kept = randn(&[5, 1, 1, 1], 6);
    same_copy("broadcast along three axes", kept.broadcast(IxDyn(&[5, 67, 3, 45])).unwrap());
    same_copy("0-d", ArrayD::from_elem(IxDyn(&[]), 2.5f32).view());
    same_copy("empty", ArrayD::<f32>::zeros(IxDyn(&[4, 0, 3])).view());
}

#[test]
fn transposed_layouts_copy_in_tiles() {
    // A vector quantizer's permutes: (B, H, W, D) -> (B, D, H, W) and back, odd sizes
    // (no side a multiple of the 8 x 8 tile), past the parallel threshold.
    let nhwc = randn(&[13, 7, 11, 37], 10);
    assert!(nhwc.len() > PARALLEL_MIN_LEN);
    let nchw = nhwc.view().permuted_axes(IxDyn(&[0, 3, 1, 2]));
    assert!(transposed_copy(&nchw).is_some(), "channels-last to channels-first is a batch of transposes");
    same_copy("(B, H, W, D) -> (B, D, H, W)", nchw.clone());
    let back = to_standard(&nchw);
    same_copy("(B, D, H, W) -> (B, H, W, D)", back.view().permuted_axes(IxDyn(&[0, 2, 3, 1])));
    // One matrix, small (one thread), and with size-1 axes around it.
    same_copy("plain transpose", randn(&[13, 29], 11).t().into_dyn());
    same_copy("size-1 axes", randn(&[1, 13, 1, 29, 1], 12).view().permuted_axes(IxDyn(&[3, 0, 2, 4, 1])));
    // Rows of the source apart by more than a block's width (a slice, then a permute).
    let wide = randn(&[6, 40, 50], 13);
    let sliced = wide.slice_axis(Axis(2), Slice::from(3..20));
    same_copy("sliced, then transposed", sliced.permuted_axes(IxDyn(&[0, 2, 1])));
    // Layouts that are not a batch of transposes fall back to ndarray's copy.
    let reversed = wide.slice_axis(Axis(2), Slice::new(0, None, -1));
    let rev_t = reversed.permuted_axes(IxDyn(&[0, 2, 1]));
    assert!(transposed_copy(&rev_t).is_none(), "negative strides are not tiled");
    same_copy("reversed, then transposed", rev_t);
    let three = randn(&[5, 6, 7, 8], 14);
    let scattered = three.view().permuted_axes(IxDyn(&[3, 1, 2, 0]));
    same_copy("first and last swapped", scattered);
}

#[test]
fn add_assign_matches_plus_equals() {
    let g = randn(&[6, 67, 150], 4);
    // Whole arrays (flat path).
    let mut ours = randn(&[6, 67, 150], 5);
    let mut want = ours.clone();
    add_assign(&mut ours, &g);
    want += &g;
    assert_eq!(ours, want, "whole array");
    // Into a slice along each axis (row path for the first two, flat for none).
    for axis in 0..3 {
        let mut parent_shape = vec![6, 67, 150];
        parent_shape[axis] *= 3;
        let mut ours = randn(&parent_shape, 6 + axis as u64);
        let mut want = ours.clone();
        let (start, len) = (g.shape()[axis], g.shape()[axis]);
        add_assign_view(&mut ours.slice_axis_mut(Axis(axis), Slice::from(start..start + len)), &g);
        let mut part = want.slice_axis_mut(Axis(axis), Slice::from(start..start + len));
        part += &g;
        assert_eq!(ours, want, "slice along axis {axis}");
    }
}

#[test]
fn fused_projection_chunks_get_their_slice_of_the_gradient() {
    // y = 1·q + 2·k + 3·v for (q, k, v) = qkv.chunk(3, -1): dqkv is 1, 2, 3 in its thirds.
    let qkv = Tensor::param(randn(&[4, 64, 3 * 256], 8));
    let c = qkv.chunk(3, -1).unwrap();
    let y = c[0].add(&c[1].scale(2.0)).unwrap().add(&c[2].scale(3.0)).unwrap();
    y.sum().backward();
    let g = qkv.grad().unwrap();
    for (i, want) in [1.0f32, 2.0, 3.0].iter().enumerate() {
        let part = g.slice_axis(Axis(2), Slice::from(i * 256..(i + 1) * 256));
        assert!(part.iter().all(|v| v == want), "chunk {i}: expected every gradient to be {want}");
    }
}

#[test]
fn bias_gradient_sums_rows_the_same_on_any_thread_count() {
    // d(x + b)/db = Σ_rows dy: summed in blocks of rows in parallel. The sums must
    // match an f64 reference and give the same bits on one thread as on several.
    let dy = randn(&[40, 33, 200], 9);
    let bias_grad = || {
        let x = Tensor::new(ArrayD::zeros(IxDyn(&[40, 33, 200])));
        let b = Tensor::param(ArrayD::zeros(IxDyn(&[200])));
        x.add(&b).unwrap().backward_with(dy.clone());
        b.grad().unwrap()
    };
    let many = bias_grad();
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap().install(bias_grad);
    assert_eq!(many.as_slice().unwrap(), one.as_slice().unwrap(), "thread count changed the bits");
    let rows = dy.to_shape((40 * 33, 200)).unwrap();
    for j in 0..200 {
        let want: f64 = rows.column(j).iter().map(|&v| v as f64).sum();
        assert!((many[j] as f64 - want).abs() < 1e-4, "column {j}: {} vs {want}", many[j]);
    }
}
