//! The SQL functions, one file each, and the one entry point that registers them all.

pub(crate) mod common;
mod dequantize;
mod gguf_blocks;
mod quantization_error;
mod quantize;
mod quantize_to_target;
mod weight_entropy;

use std::sync::Arc;

use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::{DocSection, ScalarUDF};

pub use common::{q_fields, q_type};
pub use dequantize::{Dequantize, dequantize_rows};
pub use gguf_blocks::GgufBlocks;
pub use quantization_error::QuantizationError;
pub use quantize::{DEFAULT_GROUP_SIZE, DEFAULT_SCHEME, Quantize, quantize_rows};
pub use quantize_to_target::{QuantizeToTarget, quantize_rows_to_target};
pub use weight_entropy::WeightEntropy;

/// The documentation section every arrowquant function belongs to.
pub(crate) fn doc_section() -> DocSection {
    DocSection {
        include: true,
        label: "Quantization Functions",
        description: Some("arrowquant: quantize neural-network weights stored as Arrow lists."),
    }
}

/// Every scalar function of arrowquant: the one list that Rust, Python and the docs use.
pub fn functions() -> Vec<Arc<ScalarUDF>> {
    vec![
        Arc::new(ScalarUDF::from(Quantize::default())),
        Arc::new(ScalarUDF::from(Dequantize::default())),
        Arc::new(ScalarUDF::from(QuantizationError::default())),
        Arc::new(ScalarUDF::from(GgufBlocks::default())),
        Arc::new(ScalarUDF::from(QuantizeToTarget::default())),
        Arc::new(ScalarUDF::from(WeightEntropy::default())),
    ]
}

/// Registers every arrowquant SQL function into `ctx`: the scalar functions of [`functions`]
/// and the table function `read_safetensors('path')`.
pub fn register_all(ctx: &SessionContext) {
    for f in functions() {
        ctx.register_udf(f.as_ref().clone());
    }
    ctx.register_udtf(
        "read_safetensors",
        Arc::new(crate::safetensors::ReadSafetensors),
    );
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    #[test]
    fn names_are_unique_and_documented() {
        let mut seen = HashSet::new();
        for f in super::functions() {
            assert!(seen.insert(f.name().to_string()), "{} twice", f.name());
            for alias in f.aliases() {
                assert!(seen.insert(alias.clone()), "alias {alias} twice");
            }
            assert!(
                f.documentation().is_some(),
                "{} has no documentation",
                f.name()
            );
        }
    }
}
