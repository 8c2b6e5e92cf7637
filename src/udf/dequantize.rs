//! `dequantize(q)` → `list<float32>`: the reconstructed weights.

use std::sync::{Arc, OnceLock};

use datafusion::arrow::array::{ArrayRef, Float32Array, ListArray};
use datafusion::arrow::buffer::{NullBuffer, OffsetBuffer, ScalarBuffer};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::Result;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use super::common::{QRows, RowError, check_arity, coerce_q, f32_item, guard};
use super::doc_section;
use crate::kernels::dequantize_into;

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

/// Reconstructs every row of `rows` as a `list<float32>` (NULL stays NULL).
pub fn dequantize_rows(rows: &QRows) -> Result<ArrayRef, RowError> {
    // One allocation for the batch: rows whose parts agree say how many weights they hold.
    let numel: usize = (0..rows.len())
        .filter_map(|i| rows.row(i).ok().flatten())
        .filter(|r| r.validate().is_ok())
        .map(|r| r.numel)
        .sum();
    let mut values = Vec::with_capacity(numel);
    crate::mem::advise_huge_pages(&mut values);
    let mut offsets = Vec::with_capacity(rows.len() + 1);
    offsets.push(0i32);
    let mut valid = Vec::with_capacity(rows.len());
    for i in 0..rows.len() {
        let row = rows.row(i).map_err(|e| RowError::new(i, e))?;
        if let Some(r) = row {
            dequantize_into(&r, &mut values).map_err(|e| RowError::new(i, e))?;
        }
        valid.push(row.is_some());
        let end = i32::try_from(values.len()).map_err(|_| {
            RowError::new(
                i,
                format!(
                    "the batch holds more than {} weights; use smaller batches",
                    i32::MAX
                ),
            )
        })?;
        offsets.push(end);
    }
    let nulls = NullBuffer::from(valid);
    let list = ListArray::try_new(
        f32_item(),
        OffsetBuffer::new(ScalarBuffer::from(offsets)),
        Arc::new(Float32Array::from(values)),
        (nulls.null_count() > 0).then_some(nulls),
    )
    .map_err(|e| RowError::new(0, e))?;
    Ok(Arc::new(list))
}

fn invoke(args: &ScalarFunctionArgs) -> Result<ColumnarValue> {
    let q = args.args[0].to_array(args.number_rows)?;
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
        Ok(DataType::List(f32_item()))
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
