//! Arbitrary bytes as a `.safetensors` file, read the way `src/safetensors.rs` does: the header
//! check either refuses the file or every tensor's bytes lie inside it, so slicing never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok((header, metadata)) = safetensors::SafeTensors::read_metadata(data) else { return };
    let start = header + 8;
    for (_, info) in metadata.tensors() {
        let (a, b) = info.data_offsets;
        let bytes = data.get(start + a..start + b).expect("validated offsets lie inside the file");
        let elements: usize = info.shape.iter().product();
        let size = match info.dtype {
            safetensors::Dtype::F16 | safetensors::Dtype::BF16 => 2,
            safetensors::Dtype::F32 => 4,
            safetensors::Dtype::F64 => 8,
            _ => continue,
        };
        assert_eq!(bytes.len(), elements * size, "validated size matches shape × dtype");
    }
});
