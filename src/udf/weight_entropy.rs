//! `weight_entropy(weights [, bins])` → float64: the Shannon entropy in bits of a row's histogram.

use std::sync::{Arc, OnceLock};

use datafusion::arrow::array::Float64Array;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{Result, ScalarValue, internal_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDFImpl, Signature,
    Volatility,
};

use super::{check_arity, coerce_int, coerce_weights, doc_section, guard, row_err};
use crate::array::{IntArg, WeightRows};
use crate::kernels::weight_entropy;

/// `weight_entropy(weights [, bins])`: how much information a row's values carry.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct WeightEntropy {
    signature: Signature,
}

impl Default for WeightEntropy {
    fn default() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

const NAME: &str = "weight_entropy";
/// Bins when `weight_entropy` is called without them.
pub const DEFAULT_BINS: usize = 256;
const MAX_BINS: i64 = 1_048_576;

fn invoke(args: &ScalarFunctionArgs) -> Result<ColumnarValue> {
    let Some(weights) = args.args.first() else {
        return internal_err!("{NAME}: called without arguments");
    };
    let weights = weights.to_array(args.number_rows)?;
    let rows = WeightRows::try_new(NAME, &weights)?;
    let bins = match args.args.get(1) {
        Some(v) => IntArg::new(v)?,
        None => IntArg::Const(Some(DEFAULT_BINS as i64)),
    };
    let mut out = Vec::with_capacity(rows.len());
    for i in 0..rows.len() {
        let x = rows.row(i).map_err(|e| row_err(NAME, i, e))?;
        let (Some(x), Some(b)) = (x, bins.get(i)) else {
            out.push(None);
            continue;
        };
        if !(1..=MAX_BINS).contains(&b) {
            return Err(row_err(
                NAME,
                i,
                format!("bins must be an integer from 1 to {MAX_BINS}, got {b}"),
            ));
        }
        out.push(Some(
            weight_entropy(x, b as usize).map_err(|e| row_err(NAME, i, e))?,
        ));
    }
    Ok(ColumnarValue::Array(Arc::new(Float64Array::from(out))))
}

impl ScalarUDFImpl for WeightEntropy {
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
            1,
            2,
            "1 or 2 arguments: weight_entropy(weights [, bins])",
        )?;
        let mut out = vec![coerce_weights(NAME, 1, &arg_types[0])?];
        if let Some(t) = arg_types.get(1) {
            out.push(coerce_int(NAME, 2, "bins", t)?);
        }
        Ok(out)
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        if let Some(b) = args
            .scalar_arguments
            .get(1)
            .copied()
            .flatten()
            .filter(|b| !b.is_null())
        {
            match b.cast_to(&DataType::Int64) {
                Ok(ScalarValue::Int64(Some(n))) if (1..=MAX_BINS).contains(&n) => {}
                _ => {
                    return plan_err!(
                        "'{NAME}' argument 2 (bins): expected an integer from 1 to {MAX_BINS}, got {b}"
                    );
                }
            }
        }
        Ok(Arc::new(Field::new(NAME, DataType::Float64, true)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        guard(NAME, || invoke(&args))
    }

    fn documentation(&self) -> Option<&Documentation> {
        static DOC: OnceLock<Documentation> = OnceLock::new();
        Some(DOC.get_or_init(|| {
            Documentation::builder(
                doc_section(),
                "Shannon entropy in bits of the histogram of a row's values (equal-width bins \
                 between its min and max; 0 for a constant row). Pick precision with it: \
                 CASE WHEN weight_entropy(weights) > 7 THEN 'int8' ELSE 'int4' END.",
                "weight_entropy(weights [, bins])",
            )
            .with_argument("weights", "list<float32>")
            .with_argument("bins", "number of bins, 256 by default")
            .with_sql_example("SELECT layer_name, weight_entropy(weights) FROM layers")
            .build()
        }))
    }
}
