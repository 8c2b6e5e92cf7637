//! `quantize(weights [, scheme [, group_size]])` → the `q` struct.

use std::sync::{Arc, OnceLock};

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{Result, ScalarValue, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDFImpl, Signature,
    Volatility,
};

use super::common::{
    NumArg, QBuilder, RowError, StrArg, WeightRows, check_arity, coerce_int, coerce_string,
    coerce_weights, guard, parse_scheme, q_type,
};
use super::doc_section;
use crate::kernels::{Scheme, quantize_into_parallel, stored_group_size};

/// The scheme used when `quantize` is called without one.
pub const DEFAULT_SCHEME: Scheme = Scheme::Int8;
/// The group size used when `quantize` is called without one.
pub const DEFAULT_GROUP_SIZE: usize = 128;

/// `quantize(weights [, scheme [, group_size]])`: quantizes each row's weights.
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

/// Checks literal `scheme` and `group_size` arguments at plan time.
pub fn check_literal_args(
    name: &str,
    scheme_arg: Option<&ScalarValue>,
    group_arg: Option<&ScalarValue>,
) -> Result<()> {
    let scheme = match scheme_arg.map(ScalarValue::try_as_str) {
        Some(Some(Some(s))) => match parse_scheme(s) {
            Ok(scheme) => Some(scheme),
            Err(e) => return plan_err!("'{name}' argument 2 (scheme): {e}"),
        },
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
    if group < 0 {
        return plan_err!(
            "'{name}' argument 3 (group_size): expected 0 (one group per tensor) or a positive \
             number of elements, got {group}"
        );
    }
    if let Some(block) = scheme.and_then(Scheme::block_size)
        && group != block as i64
    {
        return plan_err!(
            "'{name}' argument 3 (group_size): {} uses fixed blocks of {block}, got {group}",
            scheme.map_or("", Scheme::name)
        );
    }
    Ok(())
}

/// Reads a per-row group size: `None` for NULL, an error for a negative or fractional value.
pub fn group_at(group: &NumArg, row: usize) -> Result<Option<usize>, RowError> {
    match group.get(row) {
        None => Ok(None),
        Some(g) if g >= 0.0 && g.fract() == 0.0 && g <= i32::MAX as f64 => Ok(Some(g as usize)),
        Some(g) => Err(RowError::new(
            row,
            format!("group_size must be 0 (one group per tensor) or a positive integer, got {g}"),
        )),
    }
}

/// A per-row scheme parser that remembers the last name it parsed.
#[derive(Default)]
pub struct SchemeCache(Option<(String, Scheme)>);

impl SchemeCache {
    /// The scheme at row `row`: `None` for NULL, an error for an unknown name.
    pub fn get(&mut self, arg: &StrArg, row: usize) -> Result<Option<Scheme>, RowError> {
        let Some(s) = arg.get(row) else {
            return Ok(None);
        };
        if let Some((last, scheme)) = &self.0
            && last == s
        {
            return Ok(Some(*scheme));
        }
        let scheme = parse_scheme(s).map_err(|e| RowError::new(row, format!("scheme: {e}")))?;
        self.0 = Some((s.to_string(), scheme));
        Ok(Some(scheme))
    }
}

/// Quantizes every row of `rows` with its scheme and group size (NULL in any gives NULL), a
/// large row on up to `threads` threads (the SQL function uses 1: partitions are its threads).
pub fn quantize_rows(
    rows: &WeightRows,
    scheme: &StrArg,
    group: &NumArg,
    threads: usize,
) -> Result<ArrayRef, RowError> {
    let mut schemes = SchemeCache::default();
    let mut out = QBuilder::with_capacity(rows.len());
    // The codes of the whole batch in one allocation: exact for one scheme, at most one byte
    // per weight otherwise. Growing by doubling would copy the codes and hold both copies.
    let scheme_of_all = match scheme {
        StrArg::Const(Some(s)) => parse_scheme(s).ok(),
        _ => None,
    };
    let code_bytes: usize = (0..rows.len())
        .map(|i| {
            let numel = rows.row(i).ok().flatten().map_or(0, <[f32]>::len);
            scheme_of_all.map_or(numel, |s| s.code_bytes(numel))
        })
        .sum();
    out.buffers().codes.reserve_exact(code_bytes);
    crate::mem::advise_huge_pages(&mut out.buffers().codes);
    for i in 0..rows.len() {
        let x = rows.row(i).map_err(|e| RowError::new(i, e))?;
        let (Some(x), Some(scheme), Some(group)) =
            (x, schemes.get(scheme, i)?, group_at(group, i)?)
        else {
            out.null_row().map_err(|e| RowError::new(i, e))?;
            continue;
        };
        quantize_into_parallel(x, scheme, group, out.buffers(), threads)
            .map_err(|e| RowError::new(i, e))?;
        out.finish_row(scheme, stored_group_size(scheme, group), x.len())
            .map_err(|e| RowError::new(i, e))?;
    }
    out.finish().map_err(|e| RowError::new(0, e))
}

fn invoke(args: &ScalarFunctionArgs) -> Result<ColumnarValue> {
    let weights = args.args[0].to_array(args.number_rows)?;
    let rows = WeightRows::try_new(NAME, &weights)?;
    let scheme = match args.args.get(1) {
        Some(v) => StrArg::new(v)?,
        None => StrArg::Const(Some(DEFAULT_SCHEME.name().into())),
    };
    let group = match args.args.get(2) {
        Some(v) => NumArg::new(v)?,
        None => NumArg::Const(Some(DEFAULT_GROUP_SIZE as f64)),
    };
    let q = quantize_rows(&rows, &scheme, &group, 1).map_err(|e| e.into_exec(NAME))?;
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
            3,
            "1 to 3 arguments: quantize(weights [, scheme [, group_size]])",
        )?;
        let mut out = vec![coerce_weights(NAME, 1, &arg_types[0])?];
        if let Some(t) = arg_types.get(1) {
            out.push(coerce_string(NAME, 2, "scheme", t)?);
        }
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
        check_literal_args(NAME, scalar(1), scalar(2))?;
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
                "quantize(weights [, scheme [, group_size]])",
            )
            .with_argument(
                "weights",
                "list<float32> (also large/fixed-size lists, f16/f64 items)",
            )
            .with_argument(
                "scheme",
                "int8 (default), int8_asym, int4, int4_asym, int2, int2_asym, q8_0, q4_0; may differ per row",
            )
            .with_argument(
                "group_size",
                "elements per scale: 128 by default, 0 for one group per tensor; q8_0/q4_0 use 32",
            )
            .with_sql_example("SELECT layer_name, quantize(weights, 'int4', 128) AS q FROM layers")
            .build()
        }))
    }
}
