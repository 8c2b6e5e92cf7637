//! Arbitrary floats, schemes and group sizes: quantize never panics, finite input always
//! quantizes (except ggml length and f16 scale overflow, which are errors), and every element
//! comes back within the scheme's error bound.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../src/kernels/mod.rs"]
mod kernels;

use kernels::{KernelError, QuantizedBuffers, QuantizedRef, Scheme, dequantize_into, effective_group_size, quantize_into, stored_group_size};

#[derive(Debug, arbitrary::Arbitrary)]
struct Input {
    scheme: u8,
    group: u16,
    values: Vec<f32>,
}

fuzz_target!(|input: Input| {
    let scheme = Scheme::ALL[input.scheme as usize % Scheme::ALL.len()];
    let group = input.group as usize % 300;
    let x = &input.values;
    let mut out = QuantizedBuffers::default();
    match quantize_into(x, scheme, group, &mut out) {
        Ok(()) => {}
        Err(KernelError::NonFinite { index, value }) => {
            assert!(!value.is_finite() && !x[index].is_finite());
            return;
        }
        Err(KernelError::NotBlockMultiple { .. }) => {
            assert!(x.len() % 32 != 0);
            return;
        }
        Err(KernelError::ScaleOverflow { .. }) => {
            assert!(scheme.block_size().is_some());
            return;
        }
        Err(e) => panic!("unexpected error {e}"),
    }
    assert!(x.iter().all(|v| v.is_finite()));
    let q = QuantizedRef {
        scheme,
        group_size: stored_group_size(scheme, group),
        numel: x.len(),
        codes: &out.codes,
        scales: &out.scales,
        mins: scheme.is_asymmetric().then_some(&out.mins[..]),
    };
    let mut y = Vec::new();
    dequantize_into(&q, &mut y).expect("a value quantize produced must dequantize");
    let g = effective_group_size(scheme, group, x.len());
    for (i, (&a, &b)) in x.iter().zip(&y).enumerate() {
        let d = f64::from(out.scales[i / g]).abs();
        let m = if scheme.is_asymmetric() { f64::from(out.mins[i / g]).abs() } else { 0.0 };
        let step = match scheme {
            Scheme::Q4_0 => 1.0 + 8.0 / 2048.0,
            Scheme::Q8_0 => 0.5 + 127.0 / 2048.0,
            _ => 0.5,
        };
        let (a, b) = (f64::from(a), f64::from(b));
        // Float rounding, and f16 subnormal scales in the ggml schemes, add a little.
        let slack = 1e-6 * (a.abs() + m + 256.0 * d) + if scheme.block_size().is_some() { 6.2e-5 * 8.0 } else { 1e-37 };
        assert!(b.is_finite(), "{scheme} g{group}: x[{i}] = {a} came back {b}");
        assert!((a - b).abs() <= d * step + slack, "{scheme} g{group}: x[{i}] = {a} came back {b} (d = {d})");
    }
});
