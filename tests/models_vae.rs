//! VAE, VQ-VAE and dVAE: shapes, the paper-shaped dVAE, the closed-form KL, the schedules.

use dalle::models::dvae::{Dvae, DvaeConfig, DvaeSchedule};
use dalle::models::image_tokenizer::{colour_tokens, ImageTokenizer};
use dalle::models::vae::{gaussian_kl, reparameterize, Vae, VaeConfig};
use dalle::models::vqvae::{VqVae, VqVaeConfig};
use dalle::tensor::gradcheck::gradcheck;
use dalle::{Rng, Tensor};
use ndarray::{Array3, Array4};

/// The closed-form KL of a diagonal Gaussian equals a Monte Carlo estimate of
/// `E_q[ln q(z) - ln N(z; 0, I)]` (n = 200 000 draws; the estimate's standard
/// error is about √(Var/n) ≈ 0.005 here, the tolerance 0.03 is > 5σ).
#[test]
fn closed_form_kl_matches_monte_carlo() {
    let mu = [0.7f32, -1.2, 0.1];
    let log_var = [-0.5f32, 0.8, 0.0];
    let closed = gaussian_kl(&Tensor::from_vec(mu.to_vec(), &[1, 3]).unwrap(), &Tensor::from_vec(log_var.to_vec(), &[1, 3]).unwrap()).unwrap().item();
    let mut rng = Rng::new(0);
    let n = 200_000;
    let eps = rng.normal_array(&[n, 3]);
    let mut total = 0.0f64;
    for i in 0..n {
        for j in 0..3 {
            let sigma = (0.5 * log_var[j]).exp() as f64;
            let z = mu[j] as f64 + sigma * eps[[i, j]] as f64;
            // ln q(z) - ln p(z) = -ln σ - (z-μ)²/2σ² + z²/2
            total += -(sigma.ln()) - 0.5 * (eps[[i, j]] as f64).powi(2) + 0.5 * z * z;
        }
    }
    let mc = total / n as f64;
    assert!((closed as f64 - mc).abs() < 0.03, "closed form {closed} vs Monte Carlo {mc}");
}

#[test]
fn gaussian_kl_passes_gradcheck_and_vanishes_at_the_prior() {
    let zero = gaussian_kl(&Tensor::zeros(&[2, 4]), &Tensor::zeros(&[2, 4])).unwrap();
    assert_eq!(zero.to_vec(), vec![0.0, 0.0]);
    let mut rng = Rng::new(1);
    let report = gradcheck(&|xs: &[Tensor]| gaussian_kl(&xs[0], &xs[1]), &[rng.normal_array(&[3, 4]), rng.normal_array(&[3, 4])], 1e-3, 64).unwrap();
    assert!(report.max_error < 1e-2, "{}", report.worst);
}

/// `z = μ + σ ε`: ∂z/∂μ = 1 and ∂z/∂(ln σ²) = σ ε / 2.
#[test]
fn reparameterization_gradients() {
    let mut rng = Rng::new(2);
    let mu = Tensor::param(rng.normal_array(&[4, 2]));
    let log_var = Tensor::param(rng.normal_array(&[4, 2]));
    let z = reparameterize(&mu, &log_var, &mut rng.fork()).unwrap();
    z.sum().backward();
    assert!(mu.grad().unwrap().iter().all(|&g| (g - 1.0).abs() < 1e-6));
    let (zd, md, lv, gl) = (z.to_array(), mu.to_array(), log_var.to_array(), log_var.grad().unwrap());
    for i in 0..8 {
        let (z, m, l, g) = (zd.as_slice().unwrap()[i], md.as_slice().unwrap()[i], lv.as_slice().unwrap()[i], gl.as_slice().unwrap()[i]);
        assert!((g - (z - m) / 2.0).abs() < 1e-5, "d z / d ln σ² = σ ε / 2 = (z - μ)/2; got {g} for l = {l}");
    }
}

#[test]
fn vae_shapes_sampling_and_manifold() {
    let mut rng = Rng::new(3);
    let model = Vae::new(VaeConfig::mnist(2), &mut rng).unwrap();
    let x = Tensor::new(rng.uniform_array(&[3, 1, 28, 28], 0.0, 1.0));
    let out = model.forward(&x, &mut rng).unwrap();
    assert_eq!(out.mu.shape(), vec![3, 2]);
    assert_eq!(out.logits.shape(), vec![3, 1, 28, 28]);
    assert!(out.kl.item() >= 0.0 && out.reconstruction.item() > 0.0);
    assert_eq!(model.sample_prior(5, &mut rng).unwrap().dim(), (5, 1, 28, 28));
    assert_eq!(model.manifold(4, 2.0).unwrap().dim(), (16, 1, 28, 28));
    let ends = model.interpolate(&x.narrow(0, 0, 1).unwrap(), &x.narrow(0, 1, 1).unwrap(), 6).unwrap();
    assert_eq!(ends.dim(), (6, 1, 28, 28));
    assert!(Vae::new(VaeConfig::mnist(3), &mut rng).unwrap().manifold(4, 2.0).is_err(), "a 3-D latent has no 2-D manifold");
    assert!(model.forward(&Tensor::zeros(&[1, 3, 28, 28]), &mut rng).is_err(), "3 channels, expected 1");
}

#[test]
fn vqvae_tokenizer_shapes_and_errors() {
    let mut rng = Rng::new(4);
    let model = VqVae::new(VqVaeConfig::mnist(), &mut rng).unwrap();
    let x = Array4::from_shape_fn((2, 1, 28, 28), |(_, _, y, x)| ((x + y) % 5) as f32 / 4.0);
    let tokens = model.encode(&x).unwrap();
    assert_eq!(tokens.dim(), (2, 7, 7));
    assert_eq!(model.grid(28, 28), (7, 7));
    assert!(tokens.iter().all(|&t| t < model.vocab_size()));
    assert_eq!(model.decode(&tokens).unwrap().dim(), (2, 1, 28, 28));
    assert!(model.decode(&Array3::from_elem((1, 7, 7), 128)).is_err(), "code 128 of 128");
    assert!(model.encode(&Array4::zeros((1, 1, 30, 30))).is_err(), "30 is not divisible by 4");
    assert_eq!(colour_tokens(&tokens).dim(), (2, 3, 7, 7));
}

#[test]
fn dvae_schedules_run_from_one_to_one_sixteenth_and_zero_to_beta() {
    let s = DvaeSchedule { anneal_steps: 100, kl_ramp_steps: 10, kl_weight_max: 6.6 };
    assert!((s.temperature(0) - 1.0).abs() < 1e-6);
    assert!((s.temperature(100) - 1.0 / 16.0).abs() < 1e-6);
    assert!((s.temperature(1000) - 1.0 / 16.0).abs() < 1e-6);
    assert!(s.temperature(30) > s.temperature(60));
    assert_eq!(s.kl_weight(0), 0.0);
    assert!((s.kl_weight(5) - 3.3).abs() < 1e-6);
    assert!((s.kl_weight(50) - 6.6).abs() < 1e-6);
}

/// KL to the uniform prior is 0 when the encoder's logits are all equal, and positive otherwise.
#[test]
fn dvae_kl_to_uniform_is_zero_for_uniform_posteriors() {
    let mut rng = Rng::new(5);
    let model = Dvae::new(DvaeConfig::mnist(), &mut rng).unwrap();
    let x = Tensor::new(rng.uniform_array(&[2, 1, 28, 28], 0.0, 1.0));
    let out = model.forward(&x, 1.0, &mut rng).unwrap();
    assert!(out.kl.item() > 0.0);
    model.enc_output.weight.update(|w| w.fill(0.0));
    model.enc_output.bias.as_ref().unwrap().update(|b| b.fill(0.0));
    let out = model.forward(&x, 1.0, &mut rng).unwrap();
    assert!(out.kl.item().abs() < 1e-6, "KL {}", out.kl.item());
}

/// The paper's shape: 256x256x3 images, a 32x32 grid of 8192 codes (narrow layers to stay fast).
#[test]
fn dvae_in_the_papers_shape_runs_forward() {
    let mut rng = Rng::new(6);
    let model = Dvae::new(DvaeConfig::paper_shape(8), &mut rng).unwrap();
    let x = Tensor::new(rng.uniform_array(&[1, 3, 256, 256], 0.0, 1.0));
    let logits = model.encode_logits(&x).unwrap();
    assert_eq!(logits.shape(), vec![1, 8192, 32, 32]);
    let out = model.forward(&x, 1.0, &mut rng).unwrap();
    assert_eq!(out.x_hat.shape(), vec![1, 3, 256, 256]);
    assert_eq!(out.indices.len(), 32 * 32);
    assert!(out.reconstruction_loss.item().is_finite() && out.kl.item() >= 0.0);
    let tokens = model.encode(&x.to_array().into_dimensionality().unwrap()).unwrap();
    assert_eq!(tokens.dim(), (1, 32, 32));
    assert_eq!(model.vocab_size(), 8192);
    assert_eq!(model.decode(&tokens).unwrap().dim(), (1, 3, 256, 256));
}
