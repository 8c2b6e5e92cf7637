//! `quantize_to_target(weights, min_cosine [, group_size])` → `q`: the narrowest of int2, int4,
//! int8 whose reconstruction reaches the cosine target (int8 when none does).

use std::sync::{Arc, OnceLock};

use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{Result, ScalarValue, internal_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDFImpl, Signature,
    Volatility,
};

use super::quantize::{check_literal_args, option_err};
use super::{check_arity, coerce_float, coerce_int, coerce_weights, doc_section, guard};
use crate::array::{FloatArg, IntArg, WeightRows, q_type, quantize_rows_to_target};
use crate::options::{self, DEFAULT_GROUP_SIZE};

/// `quantize_to_target(weights, min_cosine [, group_size])`: accuracy-targeted precision.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct QuantizeToTarget {
    signature: Signature,
}

impl Default for QuantizeToTarget {
    fn default() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

const NAME: &str = "quantize_to_target";

fn invoke(args: &ScalarFunctionArgs) -> Result<ColumnarValue> {
    let Some(weights) = args.args.first() else {
        return internal_err!("{NAME}: called without arguments");
    };
    let weights = weights.to_array(args.number_rows)?;
    let rows = WeightRows::try_new(NAME, &weights)?;
    let Some(target) = args.args.get(1) else {
        return internal_err!("{NAME}: called without min_cosine");
    };
    let target = FloatArg::new(target)?;
    let group = match args.args.get(2) {
        Some(v) => IntArg::new(v)?,
        None => IntArg::Const(Some(DEFAULT_GROUP_SIZE as i64)),
    };
    let q = quantize_rows_to_target(&rows, &target, &group).map_err(|e| e.into_exec(NAME))?;
    Ok(ColumnarValue::Array(q))
}

impl ScalarUDFImpl for QuantizeToTarget {
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
            3,
            "2 or 3 arguments: quantize_to_target(weights, min_cosine [, group_size])",
        )?;
        let mut out = vec![
            coerce_weights(NAME, 1, &arg_types[0])?,
            coerce_float(NAME, 2, "min_cosine", &arg_types[1])?,
        ];
        if let Some(t) = arg_types.get(2) {
            out.push(coerce_int(NAME, 3, "group_size", t)?);
        }
        Ok(out)
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(q_type())
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let scalar = |i: usize| args.scalar_arguments.get(i).copied().flatten();
        if let Some(t) = scalar(1).filter(|t| !t.is_null()) {
            let value = match t.cast_to(&DataType::Float64) {
                Ok(ScalarValue::Float64(Some(v))) => v,
                _ => {
                    return plan_err!(
                        "'{NAME}' argument 2 (min_cosine): expected a number, got {t}"
                    );
                }
            };
            options::check_min_cosine(value).map_err(|e| option_err(NAME, e))?;
        }
        check_literal_args(NAME, None, scalar(2))?;
        Ok(Arc::new(Field::new(NAME, q_type(), true)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        guard(NAME, || invoke(&args))
    }

    fn documentation(&self) -> Option<&Documentation> {
        static DOC: OnceLock<Documentation> = OnceLock::new();
        Some(DOC.get_or_init(|| {
            Documentation::builder(
                doc_section(),
                "Quantizes each row with the narrowest of int2, int4 and int8 whose reconstruction \
                 has a cosine similarity of at least min_cosine with the original (int8 when none \
                 does); q.scheme says which. One quantize-and-compare pass per width tried.",
                "quantize_to_target(weights, min_cosine [, group_size])",
            )
            .with_argument("weights", "list<float32>")
            .with_argument("min_cosine", "the target, between -1 and 1, e.g. 0.995")
            .with_argument(
                "group_size",
                "elements per scale, 128 by default, 0 for per tensor",
            )
            .with_sql_example(
                "SELECT layer_name, quantize_to_target(weights, 0.995)['scheme'] FROM layers",
            )
            .build()
        }))
    }
}
