//! `quantization_error(weights, q)` → `struct<mse, max_abs_error, sqnr_db, cosine_similarity>`.

use std::sync::{Arc, OnceLock};

use datafusion::arrow::array::{Float64Array, StructArray};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::datatypes::{DataType, Field, Fields};
use datafusion::common::Result;
use datafusion::common::utils::take_function_args;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use super::{check_arity, coerce_q, coerce_weights, doc_section, guard, row_err};
use crate::array::{QRows, WeightRows};
use crate::kernels::{dequantize_into, error_metrics};

/// `quantization_error(weights, q)`: how far `dequantize(q)` is from `weights`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct QuantizationError {
    signature: Signature,
}

impl Default for QuantizationError {
    fn default() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

const NAME: &str = "quantization_error";
const METRICS: [&str; 4] = ["mse", "max_abs_error", "sqnr_db", "cosine_similarity"];

fn fields() -> Fields {
    METRICS
        .iter()
        .map(|m| Field::new(*m, DataType::Float64, true))
        .collect()
}

fn invoke(args: &ScalarFunctionArgs) -> Result<ColumnarValue> {
    let [weights, q] = take_function_args(NAME, &args.args)?;
    let (weights, q) = (
        weights.to_array(args.number_rows)?,
        q.to_array(args.number_rows)?,
    );
    let (xs, qs) = (
        WeightRows::try_new(NAME, &weights)?,
        QRows::try_new(NAME, &q)?,
    );
    let mut cols: [Vec<f64>; 4] = Default::default();
    let mut valid = Vec::with_capacity(xs.len());
    let mut scratch = Vec::new();
    for i in 0..xs.len() {
        let x = xs.row(i).map_err(|e| row_err(NAME, i, e))?;
        let r = qs.row(i).map_err(|e| row_err(NAME, i, e))?;
        let m = match (x, r) {
            (Some(x), Some(r)) => {
                if r.numel != x.len() {
                    return Err(row_err(
                        NAME,
                        i,
                        format!(
                            "weights have {} elements but q.numel is {}",
                            x.len(),
                            r.numel
                        ),
                    ));
                }
                scratch.clear();
                dequantize_into(&r, &mut scratch).map_err(|e| row_err(NAME, i, e))?;
                Some(error_metrics(x, &scratch))
            }
            _ => None,
        };
        let m = m.map_or([0.0; 4], |m| {
            [m.mse, m.max_abs_error, m.sqnr_db, m.cosine_similarity]
        });
        for (col, v) in cols.iter_mut().zip(m) {
            col.push(v);
        }
        valid.push(x.is_some() && r.is_some());
    }
    let nulls = NullBuffer::from(valid);
    let nulls = (nulls.null_count() > 0).then_some(nulls);
    let arrays = cols
        .into_iter()
        .map(|c| Arc::new(Float64Array::new(c.into(), nulls.clone())) as _)
        .collect();
    Ok(ColumnarValue::Array(Arc::new(StructArray::try_new(
        fields(),
        arrays,
        nulls,
    )?)))
}

impl ScalarUDFImpl for QuantizationError {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        check_arity(
            NAME,
            arg_types,
            2,
            2,
            "2 arguments: quantization_error(weights, q)",
        )?;
        Ok(vec![
            coerce_weights(NAME, 1, &arg_types[0])?,
            coerce_q(NAME, 2, &arg_types[1])?,
        ])
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Struct(fields()))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        guard(NAME, || invoke(&args))
    }

    fn documentation(&self) -> Option<&Documentation> {
        static DOC: OnceLock<Documentation> = OnceLock::new();
        Some(DOC.get_or_init(|| {
            Documentation::builder(
                doc_section(),
                "Error metrics of a quantized row against the original weights: mean squared \
                 error, max |x − x̂|, SQNR in dB (+inf when exact) and cosine similarity.",
                "quantization_error(weights, q)",
            )
            .with_argument("weights", "the original list<float32>")
            .with_argument("q", "the struct returned by quantize")
            .with_sql_example(
                "SELECT layer_name, quantization_error(weights, quantize(weights, 'int4', 32)).sqnr_db FROM layers",
            )
            .build()
        }))
    }
}
