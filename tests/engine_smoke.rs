use dalle::Rng;
use dalle::tensor::gradcheck::gradcheck;

#[test]
fn matmul_chain_gradcheck() {
    let mut rng = Rng::new(0);
    let a = rng.normal_array(&[2, 3, 4]);
    let b = rng.normal_array(&[4, 5]);
    let r = gradcheck(&|x| x[0].matmul(&x[1])?.tanh().sum_axes(&[1], false), &[a, b], 1e-2, 100).unwrap();
    assert!(r.max_error < 1e-2, "{r:?}");
}
