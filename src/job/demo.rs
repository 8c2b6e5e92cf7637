//! `demo`: the bundled default job's sample model, a small transformer with Gaussian weights.

use std::collections::HashMap;
use std::path::Path;

use crate::error::{Error, Result};
use crate::io::output::{commit, temp_beside};

/// Shapes of a small but realistic transformer (`demo`): about 55 M parameters, 220 MB.
pub fn demo_model_shapes() -> Vec<(String, Vec<usize>)> {
    let (vocab, d, ff, blocks) = (16_000, 768, 3072, 6);
    let mut v = vec![("model.embed_tokens.weight".to_string(), vec![vocab, d])];
    for b in 0..blocks {
        let p = format!("model.layers.{b}");
        for n in ["q_proj", "k_proj", "v_proj", "o_proj"] {
            v.push((format!("{p}.self_attn.{n}.weight"), vec![d, d]));
        }
        v.push((format!("{p}.mlp.up_proj.weight"), vec![ff, d]));
        v.push((format!("{p}.mlp.down_proj.weight"), vec![d, ff]));
        v.push((format!("{p}.input_layernorm.weight"), vec![d]));
        v.push((format!("{p}.post_attention_layernorm.weight"), vec![d]));
    }
    v.push(("model.norm.weight".to_string(), vec![d]));
    v
}

/// Writes the demo model as safetensors: Gaussian weights (std 0.02, fixed seed), norms near 1,
/// stored as bf16 for the embedding and f32 elsewhere, and one int64 buffer (skipped on import).
pub fn write_demo_model(path: &Path, scale: f64) -> Result<()> {
    let mut rng = SplitMix(0x5EED);
    let mut tensors: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, mut shape) in demo_model_shapes() {
        if let [rows, _] = shape.as_mut_slice() {
            *rows = ((*rows as f64 * scale).ceil() as usize).max(1);
        }
        let n: usize = shape.iter().product();
        let is_norm = name.contains("norm");
        let values = (0..n).map(|_| {
            let g = rng.gaussian();
            if is_norm { 1.0 + 0.05 * g } else { 0.02 * g }
        });
        if name.contains("embed") {
            let bytes = values
                .flat_map(|v| half::bf16::from_f64(v).to_le_bytes())
                .collect();
            tensors.push((name, safetensors::Dtype::BF16, shape, bytes));
        } else {
            let bytes = values.flat_map(|v| (v as f32).to_le_bytes()).collect();
            tensors.push((name, safetensors::Dtype::F32, shape, bytes));
        }
    }
    let positions: Vec<u8> = (0..512i64).flat_map(|i| i.to_le_bytes()).collect();
    tensors.push((
        "model.position_ids".into(),
        safetensors::Dtype::I64,
        vec![512],
        positions,
    ));
    let views = tensors
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            safetensors::tensor::TensorView::new(*dtype, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| Error::Data(format!("demo tensor {name}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut info = HashMap::new();
    info.insert("format".to_string(), "pt".to_string());
    let tmp = temp_beside(path)?;
    safetensors::serialize_to_file(views, Some(info), tmp.path())
        .map_err(|e| Error::Data(format!("{}: {e}", path.display())))?;
    commit(tmp, path)
}

/// A small deterministic generator (SplitMix64) with Box–Muller Gaussians.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn uniform(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn gaussian(&mut self) -> f64 {
        let u1 = self.uniform().max(f64::MIN_POSITIVE);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}
