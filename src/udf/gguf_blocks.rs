//! `gguf_blocks(q)` → `large_binary`: the exact ggml block bytes of a `q8_0`/`q4_0` value.

use std::sync::{Arc, OnceLock};

use datafusion::arrow::array::LargeBinaryArray;
use datafusion::arrow::buffer::{NullBuffer, OffsetBuffer, ScalarBuffer};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::Result;
use datafusion::common::utils::take_function_args;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use super::{check_arity, coerce_q, doc_section, guard, row_err};
use crate::array::QRows;
use crate::kernels::gguf_blocks_into;

/// `gguf_blocks(q)`: ggml's on-disk bytes for a `q8_0` or `q4_0` tensor.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct GgufBlocks {
    signature: Signature,
}

impl Default for GgufBlocks {
    fn default() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

const NAME: &str = "gguf_blocks";

fn invoke(args: &ScalarFunctionArgs) -> Result<ColumnarValue> {
    let [q] = take_function_args(NAME, &args.args)?;
    let q = q.to_array(args.number_rows)?;
    let rows = QRows::try_new(NAME, &q)?;
    let mut bytes = Vec::new();
    let mut offsets = Vec::with_capacity(rows.len() + 1);
    offsets.push(0i64);
    let mut valid = Vec::with_capacity(rows.len());
    for i in 0..rows.len() {
        let row = rows.row(i).map_err(|e| row_err(NAME, i, e))?;
        if let Some(r) = row {
            gguf_blocks_into(&r, &mut bytes).map_err(|e| row_err(NAME, i, e))?;
        }
        valid.push(row.is_some());
        offsets.push(bytes.len() as i64);
    }
    let nulls = NullBuffer::from(valid);
    let array = LargeBinaryArray::try_new(
        OffsetBuffer::new(ScalarBuffer::from(offsets)),
        bytes.into(),
        (nulls.null_count() > 0).then_some(nulls),
    )?;
    Ok(ColumnarValue::Array(Arc::new(array)))
}

impl ScalarUDFImpl for GgufBlocks {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        check_arity(NAME, arg_types, 1, 1, "1 argument: gguf_blocks(q)")?;
        Ok(vec![coerce_q(NAME, 1, &arg_types[0])?])
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::LargeBinary)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        guard(NAME, || invoke(&args))
    }

    fn documentation(&self) -> Option<&Documentation> {
        static DOC: OnceLock<Documentation> = OnceLock::new();
        Some(DOC.get_or_init(|| {
            Documentation::builder(
                doc_section(),
                "The exact ggml block bytes (f16 scale, then codes, per block of 32) of a q8_0 \
                 or q4_0 value, as a GGUF file stores the tensor; an error for other schemes.",
                "gguf_blocks(q)",
            )
            .with_argument(
                "q",
                "the struct returned by quantize with scheme q8_0 or q4_0",
            )
            .with_sql_example("SELECT gguf_blocks(quantize(weights, 'q4_0')) FROM layers")
            .build()
        }))
    }
}
