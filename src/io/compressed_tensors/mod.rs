//! compressed-tensors (`pack-quantized`) models, the format Hugging Face transformers and vLLM
//! load for weight-only int8/int4 (what llm-compressor writes for W8A16/W4A16): the exact
//! mapping of `q` onto its tensors ([`pack`]), a streaming sharded safetensors writer
//! ([`writer`]) and the `quantization_config` block of `config.json` ([`quantization_config`]).

pub mod pack;
pub mod writer;

use std::collections::BTreeMap;

use serde_json::{Value, json};

pub use pack::{Args, Layout, Packed, Strategy, layout};
pub use writer::{Planned, ShardedWriter};

/// The `quantization_config` of a model whose module `targets` were written with the given
/// arguments (one config group per distinct [`Args`], its targets the exact module names), and
/// whose `ignore`d modules stay dense.
pub fn quantization_config(groups: &BTreeMap<Args, Vec<String>>, ignore: &[String]) -> Value {
    let config_groups: serde_json::Map<String, Value> = groups
        .iter()
        .enumerate()
        .map(|(k, (args, targets))| {
            let (strategy, group_size) = match args.strategy {
                Strategy::Channel => ("channel", Value::Null),
                Strategy::Group(g) => ("group", json!(g)),
            };
            let group = json!({
                "targets": targets,
                "weights": {
                    "num_bits": args.bits,
                    "type": "int",
                    "symmetric": args.symmetric,
                    "strategy": strategy,
                    "group_size": group_size,
                    "block_structure": null,
                    "dynamic": false,
                    "actorder": null,
                    "observer": "minmax",
                    "observer_kwargs": {},
                },
                "input_activations": null,
                "output_activations": null,
                "format": "pack-quantized",
            });
            (format!("group_{k}"), group)
        })
        .collect();
    json!({
        "quant_method": "compressed-tensors",
        "format": "pack-quantized",
        "quantization_status": "compressed",
        "config_groups": config_groups,
        "ignore": ignore,
        "kv_cache_scheme": null,
        "global_compression_ratio": null,
        "sparsity_config": {},
        "version": "0.20.0",
    })
}

/// Shapes as safetensors wants them.
pub fn shape_vec(s: [usize; 2]) -> Vec<usize> {
    s.to_vec()
}

/// The safetensors tensors of one packed weight of module `module` (`module.weight_packed`,
/// `.weight_scale`, `.weight_zero_point`, `.weight_shape`), in the order they are written.
pub fn planned(module: &str, l: &Layout) -> Vec<Planned> {
    let mut out = vec![
        Planned {
            name: format!("{module}.weight_packed"),
            dtype: "I32".into(),
            shape: shape_vec(l.packed_shape()),
            bytes: l.packed_shape().iter().product::<usize>() * 4,
        },
        Planned {
            name: format!("{module}.weight_scale"),
            dtype: "F32".into(),
            shape: shape_vec(l.scale_shape()),
            bytes: l.scale_shape().iter().product::<usize>() * 4,
        },
    ];
    if let Some(z) = l.zero_point_shape() {
        out.push(Planned {
            name: format!("{module}.weight_zero_point"),
            dtype: "I32".into(),
            shape: shape_vec(z),
            bytes: z.iter().product::<usize>() * 4,
        });
    }
    out.push(Planned {
        name: format!("{module}.weight_shape"),
        dtype: "I64".into(),
        shape: vec![2],
        bytes: 16,
    });
    out
}

/// [`planned`]'s tensors of module `module` with their bytes, in the same order: `q` mapped
/// onto layout `l` by [`pack::pack`] (an error message when it cannot be, exactly).
pub fn packed_tensors(
    module: &str,
    q: &crate::kernels::QuantizedRef<'_>,
    l: &Layout,
) -> Result<Vec<(String, Vec<u8>)>, String> {
    let p = pack::pack(q, l)?;
    let shape: Vec<u8> = [l.rows as i64, l.cols as i64]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let bytes = [Some(p.packed), Some(p.scale), p.zero_point, Some(shape)];
    Ok(planned(module, l)
        .into_iter()
        .map(|t| t.name)
        .zip(bytes.into_iter().flatten())
        .collect())
}
