//! `dequantize(q)` → `list<float32>`: the reconstructed weights.

use std::sync::OnceLock;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::Result;
use datafusion::common::utils::take_function_args;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use super::{check_arity, coerce_q, doc_section, guard};
use crate::array::{QRows, dequantize_rows, f32_list};

/// `dequantize(q)`: the float32 weights that a `q` struct stands for.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Dequantize {
    signature: Signature,
}

impl Default for Dequantize {
    fn default() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

const NAME: &str = "dequantize";

fn invoke(args: &ScalarFunctionArgs) -> Result<ColumnarValue> {
    let [q] = take_function_args(NAME, &args.args)?;
    let q = q.to_array(args.number_rows)?;
    let rows = QRows::try_new(NAME, &q)?;
    let list = dequantize_rows(&rows).map_err(|e| e.into_exec(NAME))?;
    Ok(ColumnarValue::Array(list))
}

impl ScalarUDFImpl for Dequantize {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        check_arity(NAME, arg_types, 1, 1, "1 argument: dequantize(q)")?;
        Ok(vec![coerce_q(NAME, 1, &arg_types[0])?])
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(f32_list())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        guard(NAME, || invoke(&args))
    }

    fn documentation(&self) -> Option<&Documentation> {
        static DOC: OnceLock<Documentation> = OnceLock::new();
        Some(DOC.get_or_init(|| {
            Documentation::builder(
                doc_section(),
                "Reconstructs float32 weights from a quantized struct (d·q, plus the min for \
                 asymmetric schemes).",
                "dequantize(q)",
            )
            .with_argument("q", "the struct returned by quantize")
            .with_sql_example("SELECT layer_name, dequantize(q) AS weights FROM quantized")
            .build()
        }))
    }
}
