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

/// The sums behind [`ErrorMetrics`], in f64. They add up across tensors, so a whole model's
/// cosine similarity comes from the per-layer sums without another pass.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ErrorSums {
    /// Number of element pairs.
    pub n: usize,
    /// Σ(x − x̂)².
    pub squared_error: f64,
    /// max |x − x̂|.
    pub max_abs_error: f64,
    /// Σx².
    pub xx: f64,
    /// Σx̂².
    pub yy: f64,
    /// Σx·x̂.
    pub xy: f64,
}

/// Independent accumulators per sum: they break the add-latency chain and let the compiler
/// use vector registers, at the price of a summation order that differs from a plain loop in
/// the last bits.
const LANES: usize = 8;

multiversion! {
    /// The sums of `x` against its reconstruction `y` (same length; extra elements of either are
    /// ignored).
    pub fn error_sums / error_sums_avx512 / error_sums_avx2 = error_sums_portable(
        x: &[f32],
        y: &[f32],
    ) -> ErrorSums
}

#[inline(always)]
fn error_sums_portable(x: &[f32], y: &[f32]) -> ErrorSums {
    let n = x.len().min(y.len());
    let (x, y) = (&x[..n], &y[..n]);
    let (mut se, mut max, mut xx, mut yy, mut xy) = (
        [0.0f64; LANES],
        [0.0f64; LANES],
        [0.0f64; LANES],
        [0.0f64; LANES],
        [0.0f64; LANES],
    );
    let ((xs, x_rest), (ys, y_rest)) = (x.as_chunks::<LANES>(), y.as_chunks::<LANES>());
    // The last partial chunk, padded with zeros, which add nothing to any sum or maximum.
    let (mut x_tail, mut y_tail) = ([0.0f32; LANES], [0.0f32; LANES]);
    x_tail[..x_rest.len()].copy_from_slice(x_rest);
    y_tail[..y_rest.len()].copy_from_slice(y_rest);
    for (a, b) in xs.iter().chain([&x_tail]).zip(ys.iter().chain([&y_tail])) {
        for k in 0..LANES {
            let (a, b) = (f64::from(a[k]), f64::from(b[k]));
            let e = a - b;
            se[k] += e * e;
            max[k] = max[k].max(e.abs());
            xx[k] += a * a;
            yy[k] += b * b;
            xy[k] += a * b;
        }
    }
    let sum = |lanes: [f64; LANES]| lanes.iter().sum::<f64>();
    ErrorSums {
        n,
        squared_error: sum(se),
        max_abs_error: max.iter().fold(0.0, |m, &v| m.max(v)),
        xx: sum(xx),
        yy: sum(yy),
        xy: sum(xy),
    }
}

impl ErrorSums {
    /// Adds another tensor's sums to these.
    pub fn add(&mut self, other: &ErrorSums) {
        self.n += other.n;
        self.squared_error += other.squared_error;
        self.max_abs_error = self.max_abs_error.max(other.max_abs_error);
        self.xx += other.xx;
        self.yy += other.yy;
        self.xy += other.xy;
    }

    /// The four metrics these sums give.
    pub fn metrics(&self) -> ErrorMetrics {
        let se = self.squared_error;
        let mse = if self.n == 0 { 0.0 } else { se / self.n as f64 };
        let sqnr_db = if se == 0.0 {
            f64::INFINITY
        } else {
            10.0 * (self.xx / se).log10()
        };
        let cosine_similarity = match (self.xx == 0.0, self.yy == 0.0) {
            (true, true) => 1.0,
            (true, false) | (false, true) => 0.0,
            (false, false) => self.xy / (self.xx * self.yy).sqrt(),
        };
        ErrorMetrics {
            mse,
            max_abs_error: self.max_abs_error,
            sqnr_db,
            cosine_similarity,
        }
    }
}

/// Compares `x` with its reconstruction `y` (same length; extra elements of either are ignored).
pub fn error_metrics(x: &[f32], y: &[f32]) -> ErrorMetrics {
    error_sums(x, y).metrics()
}
