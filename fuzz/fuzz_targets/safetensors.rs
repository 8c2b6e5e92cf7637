//! Arbitrary bytes as a `.safetensors` file through arrowquant's own reader (src/safetensors/
//! parse.rs, compiled here on its own): it refuses the file with a message or lists tensors whose
//! bytes lie inside it, and widening a float tensor gives exactly shape-product values.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../src/io/safetensors/parse.rs"]
mod parse;

fuzz_target!(|data: &[u8]| {
    let Ok(entries) = parse::entries(data) else { return };
    for e in entries {
        let bytes = e.bytes(data).expect("a listed tensor lies inside the file");
        let Some(size) = parse::element_size(e.dtype) else { continue };
        let numel: usize = e.shape.iter().product();
        assert_eq!(bytes.len(), numel * size);
        assert_eq!(parse::widen(e.dtype, bytes).len(), numel);
    }
});
