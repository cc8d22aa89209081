//! Mismatched inputs give `Error::Shape` naming the op and the shapes involved,
//! never a panic: a model author reads `matmul: [4, 3] x [5, 2]` and knows
//! which layer to look at.

use dalle::{Error, Rng, Tensor};
use ndarray::{ArrayD, IxDyn};

fn t(shape: &[usize]) -> Tensor {
    Tensor::zeros(shape)
}

/// Assert `r` is a shape error of `op` whose message contains every part.
fn expect_shape_error<T: std::fmt::Debug>(r: dalle::Result<T>, op: &str, parts: &[&str]) {
    match r {
        Err(Error::Shape { op: got, what }) => {
            assert_eq!(got, op, "wrong op named in: {what}");
            for p in parts {
                assert!(what.contains(p), "{op}: message {what:?} does not mention {p:?}");
            }
        }
        other => panic!("{op}: expected a shape error, got {other:?}"),
    }
}

#[test]
fn matmul_names_both_shapes() {
    let e = t(&[4, 3]).matmul(&t(&[5, 2])).unwrap_err();
    assert_eq!(e.to_string(), "matmul: [4, 3] x [5, 2]");
    expect_shape_error(t(&[2, 4, 3]).matmul(&t(&[3, 3, 2])), "matmul", &["[2, 4, 3]", "[3, 3, 2]", "batch"]);
    expect_shape_error(t(&[3]).matmul(&t(&[3, 2])), "matmul", &["[3]", "[3, 2]"]);
    expect_shape_error(t(&[4, 3]).matmul_t(&t(&[5, 2])), "matmul_t", &["[4, 3]", "[5, 2]"]);
    expect_shape_error(t(&[4, 3]).matmul_t(&t(&[3])), "matmul_t", &["[4, 3]", "[3]"]);
}

#[test]
fn broadcasting_failures() {
    let (a, b) = (t(&[2, 3]), t(&[4]));
    expect_shape_error(a.add(&b), "add", &["[2, 3]", "[4]"]);
    expect_shape_error(a.sub(&b), "sub", &["[2, 3]", "[4]"]);
    expect_shape_error(a.mul(&b), "mul", &["[2, 3]", "[4]"]);
    expect_shape_error(a.div(&b), "div", &["[2, 3]", "[4]"]);
    expect_shape_error(a.maximum(&b), "maximum", &["[2, 3]", "[4]"]);
    expect_shape_error(a.broadcast_to(&[2, 4]), "broadcast_to", &["[2, 3]", "[2, 4]"]);
    let cond = ArrayD::from_elem(IxDyn(&[2, 3]), true);
    expect_shape_error(Tensor::where_(&cond, &a, &b), "where", &["[2, 3]", "[4]"]);
    expect_shape_error(a.masked_fill(&ArrayD::from_elem(IxDyn(&[5]), true), 0.0), "masked_fill", &["[5]", "[2, 3]"]);
    expect_shape_error(a.cosine_similarity(&b, -1, 1e-8), "cosine_similarity", &["[2, 3]", "[4]"]);
}

#[test]
fn conv_and_pooling() {
    let x = t(&[1, 3, 5, 5]);
    expect_shape_error(x.conv2d(&t(&[4, 2, 3, 3]), None, 1, 0), "conv2d", &["[1, 3, 5, 5]", "[4, 2, 3, 3]", "3 channels"]);
    expect_shape_error(t(&[3, 5, 5]).conv2d(&t(&[4, 3, 3, 3]), None, 1, 0), "conv2d", &["[3, 5, 5]", "[4, 3, 3, 3]"]);
    expect_shape_error(x.conv2d(&t(&[4, 3, 3, 3]), Some(&t(&[3])), 1, 0), "conv2d", &["bias", "[3]", "[4]"]);
    expect_shape_error(x.conv2d(&t(&[4, 3, 7, 7]), None, 1, 0), "conv2d", &["[4, 3, 7, 7]"]);
    expect_shape_error(x.conv2d(&t(&[4, 3, 3, 3]), None, 0, 0), "conv2d", &["stride 0"]);
    expect_shape_error(x.max_pool2d(6, 1), "max_pool2d", &["[1, 3, 5, 5]", "window 6"]);
    expect_shape_error(x.avg_pool2d(2, 0), "avg_pool2d", &["[1, 3, 5, 5]", "stride 0"]);
    expect_shape_error(t(&[3, 5, 5]).upsample_nearest2d(2), "upsample_nearest2d", &["[3, 5, 5]"]);
}

#[test]
fn moving_elements() {
    let x = t(&[2, 3]);
    expect_shape_error(x.reshape(&[4, 2]), "reshape", &["[2, 3]", "[4, 2]"]);
    expect_shape_error(x.reshape(&[-1, 4]), "reshape", &["[2, 3]", "[-1, 4]"]);
    expect_shape_error(x.reshape(&[-1, -1]), "reshape", &["[-1, -1]"]);
    expect_shape_error(Tensor::concat(&[&x, &t(&[2, 4])], 0), "concat", &["[2, 3]", "[2, 4]"]);
    expect_shape_error(Tensor::concat(&[&x, &t(&[2, 3, 1])], 0), "concat", &["[2, 3]", "[2, 3, 1]"]);
    expect_shape_error(Tensor::concat(&[], 0), "concat", &["no tensors"]);
    expect_shape_error(Tensor::stack(&[&x, &t(&[3, 2])], 0), "stack", &["[1, 3, 2]", "[1, 2, 3]"]);
    expect_shape_error(x.narrow(1, 2, 2), "narrow", &["[2, 3]", "2..4"]);
    expect_shape_error(x.chunk(2, 1), "chunk", &["[2, 3]", "2 equal chunks"]);
    expect_shape_error(x.squeeze(0), "squeeze", &["[2, 3]"]);
    expect_shape_error(x.permute(&[0, 0]), "permute", &["[0, 0]", "[2, 3]"]);
    expect_shape_error(Tensor::from_vec(vec![1.0; 5], &[2, 3]), "from_vec", &["5 values", "[2, 3]"]);
}

#[test]
fn reductions_and_axes() {
    let x = t(&[2, 3]);
    expect_shape_error(x.sum_axes(&[2], false), "sum", &["axis 2", "2 dimensions"]);
    expect_shape_error(x.mean_axes(&[-3], false), "mean", &["axis -3"]);
    expect_shape_error(x.var_axes(&[5], true, false), "var", &["axis 5"]);
    expect_shape_error(x.max_axis(2, false), "max", &["axis 2"]);
    expect_shape_error(x.l2_normalize(2, 1e-12), "l2_normalize", &["axis 2"]);
}

#[test]
fn normalisation_parameters() {
    let x = t(&[2, 4, 8]);
    expect_shape_error(x.layer_norm(&t(&[4]), &t(&[8]), 1e-5), "layer_norm", &["[2, 4, 8]", "[4]", "[8]"]);
    expect_shape_error(x.group_norm(3, &t(&[4]), &t(&[4]), 1e-5), "group_norm", &["[2, 4, 8]", "3 groups"]);
    expect_shape_error(x.group_norm(2, &t(&[8]), &t(&[8]), 1e-5), "group_norm", &["[2, 4, 8]", "[8]"]);
}

#[test]
fn indexing() {
    let w = t(&[5, 4]);
    expect_shape_error(Tensor::embedding(&w, &[1, 7, 2], &[3]), "embedding", &["7", "5"]);
    expect_shape_error(Tensor::embedding(&t(&[5, 4, 1]), &[1], &[1]), "embedding", &["[5, 4, 1]"]);
    expect_shape_error(Tensor::embedding(&w, &[1, 2, 3], &[2, 2]), "embedding", &["3 ids", "[2, 2]"]);
    expect_shape_error(w.index_select(0, &[0, 5]), "index_select", &["5", "[5, 4]"]);
    let idx = ArrayD::from_elem(IxDyn(&[5, 2]), 4usize);
    expect_shape_error(w.gather(1, &idx), "gather", &["4", "[5, 4]"]);
    let wide = ArrayD::from_elem(IxDyn(&[6, 2]), 0usize);
    expect_shape_error(w.gather(1, &wide), "gather", &["[6, 2]", "[5, 4]"]);
}

#[test]
fn losses() {
    let logits = t(&[3, 4]);
    expect_shape_error(logits.cross_entropy(&[0, 4, 1]), "cross_entropy", &["target 4", "below 4"]);
    expect_shape_error(logits.cross_entropy(&[0, 1]), "cross_entropy", &["[3, 4]", "2 targets"]);
    expect_shape_error(t(&[3, 4, 2]).cross_entropy(&[0, 1, 2]), "cross_entropy", &["[3, 4, 2]"]);
    // An ignored target may be any value, even beyond the classes.
    assert!(logits.cross_entropy_with(&[0, 99, 1], Some(99), 0.0).is_ok());
    expect_shape_error(logits.bce_with_logits(&t(&[3, 1])), "bce_with_logits", &["[3, 4]", "[3, 1]"]);
    expect_shape_error(t(&[3, 1]).mse(&t(&[3])), "mse", &["[3, 1]", "[3]"]);
}

#[test]
fn bad_hyper_parameters_are_config_errors() {
    let x = t(&[2, 3]);
    assert!(matches!(x.dropout(1.0, true, &mut Rng::new(0)), Err(Error::Config(_))));
    assert!(matches!(x.cross_entropy_with(&[0, 1], None, 1.5), Err(Error::Config(_))));
}
