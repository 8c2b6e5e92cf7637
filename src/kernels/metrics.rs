//! How far a reconstruction is from the original.

/// The four error metrics of `quantization_error`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ErrorMetrics {
    /// Mean squared error (0 for an empty tensor).
    pub mse: f64,
    /// Largest |x − x̂|.
    pub max_abs_error: f64,
    /// Signal-to-quantization-noise ratio, 10·log10(Σx² / Σ(x − x̂)²); +∞ when exact.
    pub sqnr_db: f64,
    /// x·x̂ / (|x|·|x̂|); 1 when both are all zeros, 0 when only one is.
    pub cosine_similarity: f64,
}

/// Compares `x` with its reconstruction `y` (same length; extra elements of either are ignored).
pub fn error_metrics(x: &[f32], y: &[f32]) -> ErrorMetrics {
    let (mut se, mut max_abs, mut xx, mut yy, mut xy) = (0.0f64, 0.0f64, 0.0, 0.0, 0.0);
    for (&a, &b) in x.iter().zip(y) {
        let (a, b) = (f64::from(a), f64::from(b));
        let e = a - b;
        se += e * e;
        max_abs = max_abs.max(e.abs());
        xx += a * a;
        yy += b * b;
        xy += a * b;
    }
    let n = x.len().min(y.len());
    let mse = if n == 0 { 0.0 } else { se / n as f64 };
    let sqnr_db = if se == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (xx / se).log10()
    };
    let cosine_similarity = match (xx == 0.0, yy == 0.0) {
        (true, true) => 1.0,
        (true, false) | (false, true) => 0.0,
        (false, false) => xy / (xx * yy).sqrt(),
    };
    ErrorMetrics {
        mse,
        max_abs_error: max_abs,
        sqnr_db,
        cosine_similarity,
    }
}
