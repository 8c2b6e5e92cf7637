//! `quantize(weights [, scheme [, group_size [, method]]])` → the `q` struct.

use std::sync::{Arc, OnceLock};

use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{DataFusionError, Result, ScalarValue, internal_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDFImpl, Signature,
    Volatility,
};

use super::{arg_err, check_arity, coerce_int, coerce_string, coerce_weights, doc_section, guard};
use crate::array::{IntArg, StrArg, WeightRows, q_type, quantize_rows};
use crate::kernels::Method;
use crate::options::{self, DEFAULT_GROUP_SIZE, DEFAULT_SCHEME, OptionError, OptionName};

/// `quantize(weights [, scheme [, group_size [, method]]])`: quantizes each row's weights.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Quantize {
    signature: Signature,
}

impl Default for Quantize {
    fn default() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

const NAME: &str = "quantize";

/// Checks literal `scheme` and `group_size` arguments at plan time, with the messages of
/// [`crate::options`] (what the command line and Python say for the same mistake).
pub(crate) fn check_literal_args(
    name: &str,
    scheme_arg: Option<&ScalarValue>,
    group_arg: Option<&ScalarValue>,
) -> Result<()> {
    let scheme = match scheme_arg.map(ScalarValue::try_as_str) {
        Some(Some(Some(s))) => Some(options::parse_scheme(s).map_err(|e| option_err(name, e))?),
        _ => None,
    };
    let Some(group) = group_arg.filter(|g| !g.is_null()) else {
        return Ok(());
    };
    let group = match group.cast_to(&DataType::Int64) {
        Ok(ScalarValue::Int64(Some(g))) => g,
        _ => {
            return plan_err!("'{name}' argument 3 (group_size): expected an integer, got {group}");
        }
    };
    let group = options::parse_group_size(group).map_err(|e| option_err(name, e))?;
    if let Some(scheme) = scheme {
        options::check_block(scheme, group).map_err(|e| option_err(name, e))?;
    }
    Ok(())
}

/// The plan error of a bad literal option: `'name' argument N (option): message`.
pub(crate) fn option_err(name: &str, e: OptionError) -> DataFusionError {
    let position = match e.option {
        OptionName::Scheme | OptionName::MinCosine => 2,
        OptionName::GroupSize => 3,
        OptionName::Method => 4,
    };
    arg_err(name, position, e.option.name(), e.message)
}

/// The `method` argument: a constant string (one method per call), NULL meaning `rtn`.
fn method_arg(v: &ColumnarValue) -> Result<Method> {
    let ColumnarValue::Scalar(s) = v else {
        return Err(arg_err(
            NAME,
            4,
            "method",
            "expected a constant ('rtn' or 'search'), got a column",
        ));
    };
    match s.try_as_str() {
        Some(Some(m)) => options::parse_method(m).map_err(|e| option_err(NAME, e)),
        Some(None) => Ok(Method::Rtn),
        None => Err(arg_err(
            NAME,
            4,
            "method",
            format!("expected a string, got {s}"),
        )),
    }
}

fn invoke(args: &ScalarFunctionArgs) -> Result<ColumnarValue> {
    let Some(weights) = args.args.first() else {
        return internal_err!("{NAME}: called without arguments");
    };
    let weights = weights.to_array(args.number_rows)?;
    let rows = WeightRows::try_new(NAME, &weights)?;
    let scheme = match args.args.get(1) {
        Some(v) => StrArg::new(v)?,
        None => StrArg::Const(Some(DEFAULT_SCHEME.name().into())),
    };
    let group = match args.args.get(2) {
        Some(v) => IntArg::new(v)?,
        None => IntArg::Const(Some(DEFAULT_GROUP_SIZE as i64)),
    };
    let method = match args.args.get(3) {
        None => Method::Rtn,
        Some(v) => method_arg(v)?,
    };
    let q = quantize_rows(&rows, &scheme, &group, method, 1).map_err(|e| e.into_exec(NAME))?;
    Ok(ColumnarValue::Array(q))
}

impl ScalarUDFImpl for Quantize {
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
            4,
            "1 to 4 arguments: quantize(weights [, scheme [, group_size [, method]]])",
        )?;
        let mut out = vec![coerce_weights(NAME, 1, &arg_types[0])?];
        if let Some(t) = arg_types.get(1) {
            out.push(coerce_string(NAME, 2, "scheme", t)?);
        }
        if let Some(t) = arg_types.get(2) {
            out.push(coerce_int(NAME, 3, "group_size", t)?);
        }
        if let Some(t) = arg_types.get(3) {
            out.push(coerce_string(NAME, 4, "method", t)?);
        }
        Ok(out)
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(q_type())
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let scalar = |i: usize| args.scalar_arguments.get(i).copied().flatten();
        check_literal_args(NAME, scalar(1), scalar(2))?;
        if let Some(m) = scalar(3) {
            method_arg(&ColumnarValue::Scalar(m.clone()))?;
        }
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
                "Quantizes each row's weights into a struct of scheme, bits, group_size, numel, \
                 packed codes, per-group scales and (asymmetric schemes) mins.",
                "quantize(weights [, scheme [, group_size [, method]]])",
            )
            .with_argument(
                "weights",
                "list<float32> (also large/fixed-size lists, f16/f64 items)",
            )
            .with_argument(
                "scheme",
                "int8 (default), int8_asym, int4, int4_asym, int2, int2_asym, q8_0, q4_0, q2_k, q3_k, q4_k, q5_k, q6_k, int8_zp, int4_zp, int2_zp; may differ per row",
            )
            .with_argument(
                "group_size",
                "elements per scale: 128 by default, 0 for one group per tensor; q8_0/q4_0 use 32, the K-quants 256",
            )
            .with_argument(
                "method",
                "rtn (default): round to nearest over each group's range; search: per group, \
                 the candidate scale (and min or zero point) of least squared error, refit by \
                 least squares, never worse than rtn (linear schemes; the ggml formats ignore it)",
            )
            .with_sql_example("SELECT layer_name, quantize(weights, 'int4', 128) AS q FROM layers")
            .build()
        }))
    }
}
