//! Learning-rate schedules.

/// Linear warm-up from 0 to `base_lr` over `warmup` steps, then cosine decay
/// to `min_lr` at step `total`:
/// `lr(t) = min + (base - min) · ½ (1 + cos(π (t - warmup) / (total - warmup)))`.
#[derive(Clone, Copy, Debug)]
pub struct WarmupCosine {
    /// Peak learning rate.
    pub base_lr: f32,
    /// Final learning rate.
    pub min_lr: f32,
    /// Warm-up steps.
    pub warmup: usize,
    /// Total steps.
    pub total: usize,
}

impl WarmupCosine {
    /// The learning rate at step `t` (0-based).
    pub fn lr(&self, t: usize) -> f32 {
        if t < self.warmup {
            return self.base_lr * (t + 1) as f32 / self.warmup as f32;
        }
        let span = self.total.saturating_sub(self.warmup).max(1);
        let progress = ((t - self.warmup) as f32 / span as f32).min(1.0);
        self.min_lr + (self.base_lr - self.min_lr) * 0.5 * (1.0 + (std::f32::consts::PI * progress).cos())
    }
}
