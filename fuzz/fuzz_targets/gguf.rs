//! Arbitrary bytes through arrowquant's GGUF reader (src/io/gguf): parse never panics, and every
//! tensor it accepts has its data inside the file and converts (or refuses to) without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../src/io/gguf/mod.rs"]
mod gguf;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = gguf::parse(data) else { return };
    let mut out = Vec::new();
    for (i, t) in file.tensors.iter().enumerate() {
        let bytes = file.tensor_data(data, i).expect("parse checked every tensor's range");
        if let Ok(n) = t.numel() {
            if n <= 1 << 20 {
                let _ = gguf::to_f32(t.ggml_type, bytes, n as usize, &mut out);
            }
        }
    }
});
