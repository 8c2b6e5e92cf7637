//! Arbitrary floats, linear schemes and group sizes through `method = search`: it never panics,
//! errors exactly where RTN errors, writes a `q` of the same sizes that dequantizes, and no group
//! comes back worse than RTN's.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../src/kernels/mod.rs"]
mod kernels;

use kernels::{Method, QuantizedBuffers, QuantizedRef, Scheme, dequantize_into, effective_group_size, quantize_into_with, stored_group_size};

#[derive(Debug, arbitrary::Arbitrary)]
struct Input {
    scheme: u8,
    group: u16,
    values: Vec<f32>,
}

fn run(x: &[f32], scheme: Scheme, group: usize, method: Method) -> Result<(QuantizedBuffers, Vec<f32>), String> {
    let mut out = QuantizedBuffers::default();
    quantize_into_with(x, scheme, group, method, &mut out, 1).map_err(|e| e.to_string())?;
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
    Ok((out, y))
}

fuzz_target!(|input: Input| {
    let linear: Vec<Scheme> = Scheme::ALL.into_iter().filter(|s| s.block_size().is_none()).collect();
    let scheme = linear[input.scheme as usize % linear.len()];
    let group = input.group as usize % 300;
    let x = &input.values;
    let (rtn, search) = (run(x, scheme, group, Method::Rtn), run(x, scheme, group, Method::Search));
    let ((a, ya), (b, yb)) = match (rtn, search) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(a), Err(b)) => {
            assert_eq!(a, b);
            return;
        }
        (a, b) => panic!("rtn {:?} but search {:?}", a.err(), b.err()),
    };
    assert_eq!((a.codes.len(), a.scales.len(), a.mins.len()), (b.codes.len(), b.scales.len(), b.mins.len()));
    let g = effective_group_size(scheme, group, x.len());
    for ((xs, ys_a), ys_b) in x.chunks(g).zip(ya.chunks(g)).zip(yb.chunks(g)) {
        let err = |ys: &[f32]| -> f64 { xs.iter().zip(ys).map(|(&v, &y)| (f64::from(v) - f64::from(y)).powi(2)).sum() };
        let (ea, eb) = (err(ys_a), err(ys_b));
        assert!(eb <= ea || ea.is_nan() || (ea.is_infinite() && eb.is_infinite()), "{scheme} g{group}: search {eb} > rtn {ea}");
    }
});
