//! The pure core: quantization kernels over `&[f32]`, with no DataFusion and no Python.
//!
//! [`quantize_into`] appends one tensor's codes, scales and mins to reusable buffers;
//! [`dequantize_into`] reverses it after checking that the parts agree with each other;
//! [`error_metrics`] compares a tensor with its reconstruction.

use std::mem::MaybeUninit;

/// One source, three builds: defines `$name`, which runs `$portable` compiled for AVX-512
/// (`$avx512`), AVX2 (`$avx2`) or the target's baseline, whichever [`isa`] finds on this CPU.
/// `$portable` must be `#[inline(always)]`, so that each `#[target_feature]` wrapper gets its own
/// copy of the loop. None of them uses FMA, so all three give the same results (tests compare
/// them).
macro_rules! multiversion {
    (
        $(#[$meta:meta])*
        $vis:vis fn $name:ident / $avx512:ident / $avx2:ident = $portable:ident
        ($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)?
    ) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            match crate::kernels::isa() {
                // SAFETY: `isa()` checked that this CPU supports the wrapper's target features.
                #[cfg(target_arch = "x86_64")]
                #[allow(unsafe_code)]
                crate::kernels::Isa::Avx512 => unsafe { $avx512($($arg),*) },
                // SAFETY: as above.
                #[cfg(target_arch = "x86_64")]
                #[allow(unsafe_code)]
                crate::kernels::Isa::Avx2 => unsafe { $avx2($($arg),*) },
                _ => $portable($($arg),*),
            }
        }

        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
        fn $avx512($($arg: $ty),*) $(-> $ret)? {
            $portable($($arg),*)
        }

        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2")]
        fn $avx2($($arg: $ty),*) $(-> $ret)? {
            $portable($($arg),*)
        }
    };
}

mod ggml;
mod kquant;
pub mod kquants;
mod linear;
mod metrics;
mod scan;
mod scheme;

pub use ggml::{gguf_blocks_into, q5_blocks};
pub use metrics::{ErrorMetrics, ErrorSums, error_metrics, error_sums};
pub use scheme::{Method, Scheme, UnknownScheme};

/// What can go wrong inside a kernel. Element and group indices count from 0 within the tensor.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KernelError {
    /// A NaN or infinite weight.
    #[error("element {index} is {value}, but weights must be finite")]
    NonFinite {
        /// Index of the element in its tensor.
        index: usize,
        /// The offending value.
        value: f32,
    },
    /// A ggml scheme given a tensor whose length is not a multiple of its block.
    #[error("{scheme} needs a length that is a multiple of {block}, got {numel} elements")]
    NotBlockMultiple {
        /// The scheme.
        scheme: Scheme,
        /// Its block size.
        block: usize,
        /// The tensor's length.
        numel: usize,
    },
    /// A ggml block scale that does not fit in f16.
    #[error("{scheme} block {block} has scale {scale}, which overflows f16 (max 65504)")]
    ScaleOverflow {
        /// The scheme.
        scheme: Scheme,
        /// Index of the block.
        block: usize,
        /// The f32 scale.
        scale: f32,
    },
    /// A zero-point group whose range is wider than f32 can hold, so `d·(q − z)` would overflow.
    #[error("{scheme} group {group} spans [{lo}, {hi}], a range wider than float32's")]
    RangeOverflow {
        /// The scheme.
        scheme: Scheme,
        /// Index of the group.
        group: usize,
        /// The group's smallest value.
        lo: f32,
        /// The group's largest value.
        hi: f32,
    },
    /// A quantized value whose parts do not agree (given to dequantize).
    #[error("inconsistent quantized value: {0}")]
    Inconsistent(String),
    /// A broken invariant inside arrowquant (wrongly sized buffers, a panicked thread): a bug,
    /// never the data's fault.
    #[error("internal error (a bug in arrowquant, please report it): {0}")]
    Internal(String),
}

/// Growable output of [`quantize_into`]: the codes, scales and mins of every tensor so far.
#[derive(Debug, Default, Clone)]
pub struct QuantizedBuffers {
    /// Packed codes, tensors back to back.
    pub codes: Vec<u8>,
    /// One scale per group.
    pub scales: Vec<f32>,
    /// One min per group, for asymmetric schemes.
    pub mins: Vec<f32>,
}

impl QuantizedBuffers {
    /// The buffers as one quantized tensor, when they hold exactly one (from an empty start):
    /// `group_size` as [`stored_group_size`] gives it, mins only for schemes that have them.
    pub fn view(&self, scheme: Scheme, group_size: usize, numel: usize) -> QuantizedRef<'_> {
        QuantizedRef {
            scheme,
            group_size: stored_group_size(scheme, group_size),
            numel,
            codes: &self.codes,
            scales: &self.scales,
            mins: scheme.is_asymmetric().then_some(&self.mins[..]),
        }
    }
}

/// The number of elements per group that `scheme` uses for a tensor of `numel` elements when
/// asked for `group_size` (0 = one group per tensor). Never 0.
pub fn effective_group_size(scheme: Scheme, group_size: usize, numel: usize) -> usize {
    match scheme.block_size() {
        Some(block) => block,
        None if group_size == 0 => numel.max(1),
        None => group_size,
    }
}

/// The value stored in `q.group_size`: the ggml block, or the requested size (0 = per tensor).
pub fn stored_group_size(scheme: Scheme, group_size: usize) -> usize {
    scheme.block_size().unwrap_or(group_size)
}

/// Quantizes one tensor `x` with `scheme` in groups of `group_size` (0 = per tensor), appending
/// its codes, scales and mins to `out`. On error `out` is left as it was.
pub fn quantize_into(
    x: &[f32],
    scheme: Scheme,
    group_size: usize,
    out: &mut QuantizedBuffers,
) -> Result<(), KernelError> {
    quantize_into_parallel(x, scheme, group_size, out, 1)
}

/// The widths `quantize_to_target` tries, narrowest first.
pub const TARGET_LADDER: [Scheme; 3] = [Scheme::Int2, Scheme::Int4, Scheme::Int8];

/// Quantizes `x` with the narrowest scheme of [`TARGET_LADDER`] whose reconstruction has a
/// cosine similarity of at least `min_cosine` with `x` (`int8` when none does), appending to
/// `out` like [`quantize_into`]; returns the scheme chosen. One quantize-and-compare pass per
/// width tried.
pub fn quantize_to_target(
    x: &[f32],
    min_cosine: f64,
    group_size: usize,
    out: &mut QuantizedBuffers,
) -> Result<Scheme, KernelError> {
    let mut restored = Vec::new();
    for (k, scheme) in TARGET_LADDER.into_iter().enumerate() {
        let lens = (out.codes.len(), out.scales.len(), out.mins.len());
        quantize_into(x, scheme, group_size, out)?;
        if k + 1 == TARGET_LADDER.len() {
            return Ok(scheme);
        }
        let q = QuantizedRef {
            scheme,
            group_size: stored_group_size(scheme, group_size),
            numel: x.len(),
            codes: &out.codes[lens.0..],
            scales: &out.scales[lens.1..],
            mins: scheme.is_asymmetric().then(|| &out.mins[lens.2..]),
        };
        restored.clear();
        dequantize_into(&q, &mut restored)?;
        if error_metrics(x, &restored).cosine_similarity >= min_cosine {
            return Ok(scheme);
        }
        out.codes.truncate(lens.0);
        out.scales.truncate(lens.1);
        out.mins.truncate(lens.2);
    }
    Ok(Scheme::Int8)
}

/// `f(start, piece)` over `x` cut into one contiguous piece per thread (`threads` 0: every
/// core; one piece below [`PARALLEL_MIN_ELEMENTS`]), the results in order.
pub fn over_pieces<T: Send>(
    x: &[f32],
    threads: usize,
    f: impl Fn(usize, &[f32]) -> T + Sync,
) -> Vec<T> {
    let threads = match threads {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    };
    let pieces = threads.min(x.len() / (PARALLEL_MIN_ELEMENTS / 2)).max(1);
    if pieces == 1 {
        return vec![f(0, x)];
    }
    let len = x.len().div_ceil(pieces);
    std::thread::scope(|s| {
        let f = &f;
        let handles: Vec<_> = x
            .chunks(len)
            .enumerate()
            .map(|(i, piece)| s.spawn(move || f(i * len, piece)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

/// Shannon entropy in bits of the histogram of `x` in `bins` equal-width bins between its min
/// and max (0 for a constant or empty tensor).
pub fn weight_entropy(x: &[f32], bins: usize) -> Result<f64, KernelError> {
    weight_entropy_threads(x, bins, 1)
}

/// [`weight_entropy`] on `threads` threads (0: every core); the same result.
pub fn weight_entropy_threads(x: &[f32], bins: usize, threads: usize) -> Result<f64, KernelError> {
    let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
    for r in over_pieces(x, threads, |start, p| scan::min_max(p, start)) {
        let (l, h) = r?;
        (lo, hi) = (lo.min(l), hi.max(h));
    }
    if x.is_empty() || lo == hi || bins <= 1 {
        return Ok(0.0);
    }
    let mut counts = vec![0u64; bins];
    for piece in over_pieces(x, threads, |_, p| histogram(p, lo, hi, bins)) {
        for (c, p) in counts.iter_mut().zip(piece) {
            *c += p;
        }
    }
    let n = x.len() as f64;
    Ok(counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum())
}

multiversion! {
    /// Counts of `x` in `bins` equal-width bins between `lo < hi` (its min and max).
    fn histogram / histogram_avx512 / histogram_avx2 = histogram_portable(
        x: &[f32],
        lo: f32,
        hi: f32,
        bins: usize,
    ) -> Vec<u64>
}

#[inline(always)]
fn histogram_portable(x: &[f32], lo: f32, hi: f32, bins: usize) -> Vec<u64> {
    let (lo, width) = (f64::from(lo), (f64::from(hi) - f64::from(lo)) / bins as f64);
    let last = bins - 1;
    // The clamp puts the max (and any rounding past it) into the last bin.
    let bin = |v: f32| (((f64::from(v) - lo) / width) as usize).min(last);
    // Four sets of counts, one per element mod 4: neighbours usually fall in the same bin, and
    // one set would make each increment wait for the store of the one before. The sum is the
    // same counts.
    let mut counts = vec![[0u32; 4]; bins];
    let mut wide = vec![0u64; bins];
    for block in x.chunks(4 << 20) {
        let chunks = block.chunks_exact(4);
        let tail = chunks.remainder();
        for c in chunks {
            let b = [bin(c[0]), bin(c[1]), bin(c[2]), bin(c[3])];
            for (lane, &b) in b.iter().enumerate() {
                if let Some(k) = counts.get_mut(b) {
                    k[lane] += 1;
                }
            }
        }
        for &v in tail {
            if let Some(k) = counts.get_mut(bin(v)) {
                k[0] += 1;
            }
        }
        // u32 counts take at most 4 Mi elements per block: add them up before they could wrap.
        for (w, k) in wide.iter_mut().zip(counts.iter_mut()) {
            *w += k.iter().map(|&n| u64::from(n)).sum::<u64>();
            *k = [0; 4];
        }
    }
    wide
}

/// Tensors smaller than this are quantized on one thread.
pub const PARALLEL_MIN_ELEMENTS: usize = 1 << 20;

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// One contiguous piece of a tensor and the parts of the output that are its alone.
struct Part<'a> {
    /// Index of the piece's first element in the tensor.
    start: usize,
    x: &'a [f32],
    codes: &'a mut [MaybeUninit<u8>],
    scales: &'a mut [MaybeUninit<f32>],
    mins: &'a mut [MaybeUninit<f32>],
}

impl Part<'_> {
    /// Quantizes the piece; errors name elements and blocks by their index in the whole tensor.
    fn run(self, scheme: Scheme, group: usize, method: Method) -> Result<(), KernelError> {
        let result = if scheme.is_k_quant() {
            kquant::quantize(self.x, scheme, method, self.codes, self.scales, self.mins)
        } else if scheme.block_size().is_some() {
            ggml::quantize(self.x, scheme, self.codes, self.scales)
        } else {
            linear::quantize(
                self.x,
                scheme,
                group,
                method,
                self.codes,
                self.scales,
                self.mins,
            )
        };
        result.map_err(|e| e.shifted(self.start, group))
    }
}

impl KernelError {
    /// The error of a piece that starts at element `start` of its tensor, with element, block and
    /// group indices counted from the tensor's start instead (groups of `group` elements).
    pub fn shifted(self, start: usize, group: usize) -> KernelError {
        let group = group.max(1);
        match self {
            KernelError::NonFinite { index, value } => KernelError::NonFinite {
                index: index + start,
                value,
            },
            KernelError::ScaleOverflow {
                scheme,
                block,
                scale,
            } => KernelError::ScaleOverflow {
                scheme,
                block: block + start / group,
                scale,
            },
            KernelError::RangeOverflow {
                scheme,
                group: g,
                lo,
                hi,
            } => KernelError::RangeOverflow {
                scheme,
                group: g + start / group,
                lo,
                hi,
            },
            other => other,
        }
    }
}

/// [`quantize_into`] on up to `threads` threads for a large tensor. The output is sized once
/// and the tensor cut at group boundaries that are also whole bytes of packed codes; each
/// thread writes its own disjoint part of it in place, so the result is identical to the serial
/// one and nothing is copied afterwards. Per-tensor scaling (`group_size` 0 on a linear scheme)
/// needs the whole tensor and stays serial.
pub fn quantize_into_parallel(
    x: &[f32],
    scheme: Scheme,
    group_size: usize,
    out: &mut QuantizedBuffers,
    threads: usize,
) -> Result<(), KernelError> {
    quantize_into_with(x, scheme, group_size, Method::Rtn, out, threads)
}

/// [`quantize_into_parallel`] with the scales chosen by `method` (linear schemes; the ggml
/// formats have their own, fixed, encoders and ignore it).
pub fn quantize_into_with(
    x: &[f32],
    scheme: Scheme,
    group_size: usize,
    method: Method,
    out: &mut QuantizedBuffers,
    threads: usize,
) -> Result<(), KernelError> {
    if let Some(block) = scheme.block_size()
        && !x.len().is_multiple_of(block)
    {
        return Err(KernelError::NotBlockMultiple {
            scheme,
            block,
            numel: x.len(),
        });
    }
    let group = effective_group_size(scheme, group_size, x.len());
    let groups = x.len().div_ceil(group);
    // The output is written in place into the vectors' spare capacity, without zeroing it
    // first (for int8 that memset alone was a quarter of the memory traffic).
    let sizes = (
        scheme.code_bytes(x.len()),
        groups,
        if scheme.is_asymmetric() { groups } else { 0 },
    );
    out.codes.reserve(sizes.0);
    out.scales.reserve(sizes.1);
    out.mins.reserve(sizes.2);
    let mut whole = Part {
        start: 0,
        x,
        codes: &mut out.codes.spare_capacity_mut()[..sizes.0],
        scales: &mut out.scales.spare_capacity_mut()[..sizes.1],
        mins: &mut out.mins.spare_capacity_mut()[..sizes.2],
    };
    let per_tensor = scheme.block_size().is_none() && group_size == 0;
    let result = if threads <= 1 || x.len() < PARALLEL_MIN_ELEMENTS || per_tensor {
        whole.run(scheme, group, method)
    } else {
        // A multiple of the group and of 4 elements, so every piece starts on a whole byte.
        let align = group / gcd(group, 4) * 4;
        let chunk = x.len().div_ceil(threads).div_ceil(align) * align;
        let mut parts = Vec::with_capacity(threads);
        while !whole.x.is_empty() {
            let n = chunk.min(whole.x.len());
            let (x_head, x_tail) = whole.x.split_at(n);
            let (c_head, c_tail) = whole.codes.split_at_mut(scheme.code_bytes(n));
            let g = n.div_ceil(group).min(whole.scales.len());
            let (s_head, s_tail) = whole.scales.split_at_mut(g);
            let (m_head, m_tail) = whole.mins.split_at_mut(g.min(whole.mins.len()));
            parts.push(Part {
                start: whole.start,
                x: x_head,
                codes: c_head,
                scales: s_head,
                mins: m_head,
            });
            whole = Part {
                start: whole.start + n,
                x: x_tail,
                codes: c_tail,
                scales: s_tail,
                mins: m_tail,
            };
        }
        std::thread::scope(|s| {
            let mut parts = parts.into_iter();
            let first = parts.next();
            let handles: Vec<_> = parts
                .map(|p| s.spawn(move || p.run(scheme, group, method)))
                .collect();
            // The calling thread does the first piece itself.
            let mut result = first.map_or(Ok(()), |p| p.run(scheme, group, method));
            for h in handles {
                let r = h.join().unwrap_or_else(|_| {
                    Err(KernelError::Internal(
                        "a quantization thread panicked".into(),
                    ))
                });
                // The error of the earliest piece wins, as in a serial run.
                result = result.and(r);
            }
            result
        })
    };
    if result.is_ok() {
        // SAFETY: on success the kernels wrote every element of the three slices handed out
        // above (their contracts: `linear::quantize`, `ggml::quantize`), and the pieces of a
        // parallel run cover them exactly, so these lengths cover initialized elements only.
        // On error the lengths stay as they were: nothing partial becomes visible.
        #[allow(unsafe_code)]
        unsafe {
            out.codes.set_len(out.codes.len() + sizes.0);
            out.scales.set_len(out.scales.len() + sizes.1);
            out.mins.set_len(out.mins.len() + sizes.2);
        }
    }
    result
}

/// A borrowed quantized tensor: the fields of one `q` struct.
#[derive(Debug, Clone, Copy)]
pub struct QuantizedRef<'a> {
    /// The scheme.
    pub scheme: Scheme,
    /// The stored group size (0 = per tensor).
    pub group_size: usize,
    /// Number of weights.
    pub numel: usize,
    /// Packed codes.
    pub codes: &'a [u8],
    /// One scale per group.
    pub scales: &'a [f32],
    /// One min per group for asymmetric schemes.
    pub mins: Option<&'a [f32]>,
}

impl QuantizedRef<'_> {
    /// Checks that codes, scales and mins have the sizes that scheme, group size and numel imply.
    pub fn validate(&self) -> Result<(), KernelError> {
        let bad = |msg: String| Err(KernelError::Inconsistent(msg));
        let scheme = self.scheme;
        if let Some(block) = scheme.block_size() {
            if self.group_size != block {
                return bad(format!(
                    "{scheme} uses groups of {block}, but group_size is {}",
                    self.group_size
                ));
            }
            if !self.numel.is_multiple_of(block) {
                return bad(format!(
                    "{scheme} needs numel to be a multiple of {block}, got {}",
                    self.numel
                ));
            }
        }
        let want_codes = scheme.code_bytes(self.numel);
        if self.codes.len() != want_codes {
            return bad(format!(
                "{scheme} with numel {} needs {want_codes} bytes of codes, got {}",
                self.numel,
                self.codes.len()
            ));
        }
        let group = effective_group_size(scheme, self.group_size, self.numel);
        let groups = self.numel.div_ceil(group);
        if self.scales.len() != groups {
            return bad(format!(
                "numel {} in groups of {group} needs {groups} scales, got {}",
                self.numel,
                self.scales.len()
            ));
        }
        match (scheme.is_asymmetric(), self.mins) {
            (true, Some(m)) if m.len() == groups => {}
            (true, Some(m)) => {
                return bad(format!("{scheme} needs {groups} mins, got {}", m.len()));
            }
            (true, None) => return bad(format!("{scheme} needs mins, got null")),
            (false, Some(m)) if !m.is_empty() => {
                return bad(format!(
                    "{scheme} is symmetric and takes no mins, got {}",
                    m.len()
                ));
            }
            (false, _) => {}
        }
        if scheme.has_zero_point() {
            let top = f32::from(u8::MAX >> (8 - scheme.bits()));
            let zeros = self.mins.unwrap_or_default();
            if let Some((g, z)) = zeros
                .iter()
                .enumerate()
                .find(|(_, z)| !(0.0..=top).contains(*z) || z.fract() != 0.0)
            {
                return bad(format!(
                    "{scheme} zero points are integers in [0, {top}], group {g} has {z}"
                ));
            }
        }
        Ok(())
    }
}

/// Reconstructs the weights of `q`, appending `q.numel` values to `out`.
pub fn dequantize_into(q: &QuantizedRef<'_>, out: &mut Vec<f32>) -> Result<(), KernelError> {
    q.validate()?;
    let start = out.len();
    out.resize(start + q.numel, 0.0);
    let dst = &mut out[start..];
    match q.scheme {
        s if s.is_k_quant() => kquant::dequantize(q, dst)?,
        Scheme::Q8_0 | Scheme::Q4_0 => ggml::dequantize(q, dst),
        _ => linear::dequantize(q, dst),
    }
    Ok(())
}

/// The instruction sets the kernels are built for, widest first. Each hot loop is one
/// `#[inline(always)]` function compiled three times (a `#[target_feature]` wrapper each) and
/// chosen at run time; none uses FMA, so all three give the same bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Isa {
    /// x86-64 with AVX-512 F, BW, VL and DQ.
    Avx512,
    /// x86-64 with AVX2.
    Avx2,
    /// Anything else: the compiler's baseline for the target.
    Baseline,
}

/// Whether the instruction-set equality tests can run `want` on this CPU. A CPU without it fails
/// the test with a reason, unless `ARROWQUANT_SKIP_ISA_TESTS=1` says to skip (then it says so on
/// stderr): a comparison that cannot run must never pass silently.
#[cfg(test)]
pub(crate) fn isa_test_can_run(want: Isa) -> bool {
    let have = isa();
    let supported = match want {
        Isa::Baseline => true,
        Isa::Avx2 => matches!(have, Isa::Avx2 | Isa::Avx512),
        Isa::Avx512 => have == Isa::Avx512,
    };
    if !supported {
        let skip = std::env::var("ARROWQUANT_SKIP_ISA_TESTS").is_ok_and(|v| v == "1");
        assert!(
            skip,
            "this CPU lacks {want:?} (it has {have:?}), so the {want:?} build cannot be compared \
             with the portable one; set ARROWQUANT_SKIP_ISA_TESTS=1 to skip this comparison"
        );
        eprintln!("SKIPPED: the {want:?} comparison (this CPU has {have:?})");
    }
    supported
}

/// The widest [`Isa`] this CPU supports (the standard library caches the detection).
#[inline]
pub(crate) fn isa() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512vl")
            && std::is_x86_feature_detected!("avx512dq")
        {
            return Isa::Avx512;
        }
        if std::is_x86_feature_detected!("avx2") {
            return Isa::Avx2;
        }
    }
    Isa::Baseline
}

multiversion! {
    /// The speed-of-light reference of the benchmarks: one streaming pass that reads each f32
    /// and writes it truncated to i8 (clamped, NaN to 0) — the least work any quantizer must do.
    /// Built for the widest vector unit this CPU has, like the kernels it is compared with.
    pub fn speed_of_light / speed_of_light_avx512 / speed_of_light_avx2 = speed_of_light_portable(
        x: &[f32],
        out: &mut [i8],
    )
}

#[inline(always)]
fn speed_of_light_portable(x: &[f32], out: &mut [i8]) {
    for (o, &v) in out.iter_mut().zip(x) {
        let v = if v.is_nan() {
            0.0
        } else {
            v.clamp(-128.0, 127.0)
        };
        // SAFETY: `v` is finite and within [-128, 127].
        #[allow(unsafe_code)]
        let t: i32 = unsafe { v.to_int_unchecked() };
        *o = t as i8;
    }
}

/// Clamps `v` to `[lo, hi]` (NaN becomes 0), then rounds half away from zero, as C's `roundf`.
/// `lo` and `hi` must lie within ±2^23, where every f32 has an exact integer part. Branch-free
/// and vectorizable on baseline x86-64: the conversion is a plain truncation, not Rust's
/// saturating cast, because the value is already known to be in range.
#[inline(always)]
pub(crate) fn round_half_away(v: f32, lo: f32, hi: f32) -> i32 {
    debug_assert!(-8_388_608.0 <= lo && lo <= hi && hi <= 8_388_608.0);
    let v = if v.is_nan() { 0.0 } else { v.max(lo).min(hi) };
    // SAFETY: `v` is finite and within [lo, hi] ⊂ [-2^23, 2^23], so its truncation fits an i32.
    #[allow(unsafe_code)]
    let t: i32 = unsafe { v.to_int_unchecked() };
    let frac = v - t as f32;
    t + i32::from(frac >= 0.5) - i32::from(frac <= -0.5)
}

#[cfg(test)]
mod tests;
