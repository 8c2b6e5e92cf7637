//! Arbitrary `q` parts (as a hand-edited struct would give): dequantize and gguf_blocks never
//! panic, and either fail or produce exactly numel values.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../src/kernels/mod.rs"]
mod kernels;

use kernels::{QuantizedRef, Scheme, dequantize_into, gguf_blocks_into};

#[derive(Debug, arbitrary::Arbitrary)]
struct Input {
    scheme: u8,
    group: u32,
    numel: u16,
    codes: Vec<u8>,
    scales: Vec<f32>,
    mins: Option<Vec<f32>>,
}

fuzz_target!(|input: Input| {
    let q = QuantizedRef {
        scheme: Scheme::ALL[input.scheme as usize % Scheme::ALL.len()],
        group_size: input.group as usize,
        numel: input.numel as usize,
        codes: &input.codes,
        scales: &input.scales,
        mins: input.mins.as_deref(),
    };
    let mut out = Vec::new();
    if dequantize_into(&q, &mut out).is_ok() {
        assert_eq!(out.len(), q.numel);
    } else {
        assert!(out.is_empty());
    }
    let mut blocks = Vec::new();
    if gguf_blocks_into(&q, &mut blocks).is_ok() {
        assert_eq!(blocks.len(), q.codes.len() + 2 * q.scales.len());
    }
});
