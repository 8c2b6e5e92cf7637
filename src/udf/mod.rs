//! The SQL functions, one file per function (named after it), the argument coercions they
//! share, the [`expr_fn`] builders that jobs use instead of SQL text, and the one entry point
//! that registers them all. The work itself is in [`crate::array`]; nothing outside this folder
//! but the jobs and the bindings uses it.

mod dequantize;
mod gguf_blocks;
mod quantization_error;
mod quantize;
mod quantize_to_target;
mod read_gguf;
mod read_safetensors;
mod weight_entropy;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{Result, exec_err, plan_err};
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::{DocSection, ScalarUDF};

use crate::array::{q_fields, q_type};

pub use dequantize::Dequantize;
pub use gguf_blocks::GgufBlocks;
pub use quantization_error::QuantizationError;
pub use quantize::Quantize;
pub use quantize_to_target::QuantizeToTarget;
pub use read_gguf::ReadGguf;
pub use read_safetensors::ReadSafetensors;
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
/// and the table functions `read_safetensors('path')` and `read_gguf('path')`.
pub fn register_all(ctx: &SessionContext) {
    for f in functions() {
        ctx.register_udf(f.as_ref().clone());
    }
    ctx.register_udtf(read_safetensors::NAME, Arc::new(ReadSafetensors));
    ctx.register_udtf(read_gguf::NAME, Arc::new(ReadGguf));
}

/// One Rust function per SQL function, each returning the [`Expr`] of a call, as
/// `datafusion::functions::expr_fn` does for DataFusion's own: jobs build their plans with these
/// instead of SQL text.
///
/// [`Expr`]: datafusion::logical_expr::Expr
pub mod expr_fn {
    use datafusion::logical_expr::{Expr, ScalarUDF};

    fn call(udf: impl datafusion::logical_expr::ScalarUDFImpl + 'static, args: Vec<Expr>) -> Expr {
        ScalarUDF::new_from_impl(udf).call(args)
    }

    /// `quantize(weights, scheme, group_size)`.
    pub fn quantize(weights: Expr, scheme: Expr, group_size: Expr) -> Expr {
        call(
            super::Quantize::default(),
            vec![weights, scheme, group_size],
        )
    }

    /// `quantize(weights, scheme, group_size, method)`.
    pub fn quantize_with(weights: Expr, scheme: Expr, group_size: Expr, method: Expr) -> Expr {
        call(
            super::Quantize::default(),
            vec![weights, scheme, group_size, method],
        )
    }

    /// `quantize_to_target(weights, min_cosine, group_size)`.
    pub fn quantize_to_target(weights: Expr, min_cosine: Expr, group_size: Expr) -> Expr {
        call(
            super::QuantizeToTarget::default(),
            vec![weights, min_cosine, group_size],
        )
    }

    /// `dequantize(q)`.
    pub fn dequantize(q: Expr) -> Expr {
        call(super::Dequantize::default(), vec![q])
    }

    /// `quantization_error(weights, q)`.
    pub fn quantization_error(weights: Expr, q: Expr) -> Expr {
        call(super::QuantizationError::default(), vec![weights, q])
    }

    /// `gguf_blocks(q)`.
    pub fn gguf_blocks(q: Expr) -> Expr {
        call(super::GgufBlocks::default(), vec![q])
    }

    /// `weight_entropy(weights, bins)`.
    pub fn weight_entropy(weights: Expr, bins: Expr) -> Expr {
        call(super::WeightEntropy::default(), vec![weights, bins])
    }
}

/// Runs a UDF body, turning a panic into an execution error: a panic that crossed the
/// datafusion-ffi boundary would abort the user's Python process (DESIGN.md §7).
pub(crate) fn guard<T>(name: &str, body: impl FnOnce() -> Result<T>) -> Result<T> {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|panic| {
        let msg = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        exec_err!("{name}: internal error (a bug in arrowquant, please report it): {msg}")
    })
}

/// The one argument of a table function that reads a file: a string literal path.
pub(crate) fn literal_path(
    name: &str,
    what: &str,
    args: &datafusion::catalog::TableFunctionArgs,
) -> Result<String> {
    use datafusion::common::ScalarValue;
    use datafusion::logical_expr::Expr;
    match args.exprs() {
        [
            Expr::Literal(
                ScalarValue::Utf8(Some(p))
                | ScalarValue::LargeUtf8(Some(p))
                | ScalarValue::Utf8View(Some(p)),
                _,
            ),
        ] => Ok(p.clone()),
        other => plan_err!(
            "'{name}' takes 1 argument, a string literal path ({what}), got {} arguments",
            other.len()
        ),
    }
}

/// An execution error for row `row` of function `name`.
pub(crate) fn row_err(
    name: &str,
    row: usize,
    e: impl std::fmt::Display,
) -> datafusion::error::DataFusionError {
    crate::array::RowError::new(row, e).into_exec(name)
}

/// A plan error for argument `position` (`what`) of function `name`.
pub(crate) fn arg_err(
    name: &str,
    position: usize,
    what: &str,
    e: impl std::fmt::Display,
) -> datafusion::error::DataFusionError {
    datafusion::error::DataFusionError::Plan(format!("'{name}' argument {position} ({what}): {e}"))
}

/// Checks the argument count, as a plan error naming the function and the accepted arities.
pub(crate) fn check_arity(
    name: &str,
    args: &[DataType],
    min: usize,
    max: usize,
    usage: &str,
) -> Result<()> {
    if args.len() < min || args.len() > max {
        return plan_err!("'{name}' takes {usage}, got {} arguments", args.len());
    }
    Ok(())
}

/// The coerced type of a weights argument: the same kind of list with float32 items.
pub(crate) fn coerce_weights(name: &str, position: usize, t: &DataType) -> Result<DataType> {
    let f32_item = |f: &FieldRef| -> Option<FieldRef> {
        let t = f.data_type();
        (t.is_floating() || t.is_integer() || *t == DataType::Null)
            .then(|| Arc::new(Field::new(f.name(), DataType::Float32, true)))
    };
    let coerced = match t {
        DataType::Null => Some(DataType::Null),
        DataType::List(f) => f32_item(f).map(DataType::List),
        DataType::LargeList(f) => f32_item(f).map(DataType::LargeList),
        DataType::FixedSizeList(f, n) => f32_item(f).map(|f| DataType::FixedSizeList(f, *n)),
        _ => None,
    };
    match coerced {
        Some(c) => Ok(c),
        None => plan_err!(
            "'{name}' argument {position} (weights): expected a list of floats (list, large_list \
             or fixed_size_list of float16, float32 or float64), got {t}"
        ),
    }
}

/// The coerced type of a string argument (scheme names): utf8.
pub(crate) fn coerce_string(
    name: &str,
    position: usize,
    what: &str,
    t: &DataType,
) -> Result<DataType> {
    match t {
        DataType::Null | DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            Ok(DataType::Utf8)
        }
        _ => plan_err!("'{name}' argument {position} ({what}): expected a string, got {t}"),
    }
}

/// The coerced type of an integer argument: int64.
pub(crate) fn coerce_int(
    name: &str,
    position: usize,
    what: &str,
    t: &DataType,
) -> Result<DataType> {
    if t.is_integer() || *t == DataType::Null {
        Ok(DataType::Int64)
    } else {
        plan_err!("'{name}' argument {position} ({what}): expected an integer, got {t}")
    }
}

/// The coerced type of a float argument: float64.
pub(crate) fn coerce_float(
    name: &str,
    position: usize,
    what: &str,
    t: &DataType,
) -> Result<DataType> {
    if t.is_numeric() || *t == DataType::Null {
        Ok(DataType::Float64)
    } else {
        plan_err!("'{name}' argument {position} ({what}): expected a number, got {t}")
    }
}

/// Checks that `t` is a `q` struct (same field names, in order) and returns the canonical type
/// it is cast to; Parquet readers may hand back view or large variants of the same fields.
pub(crate) fn coerce_q(name: &str, position: usize, t: &DataType) -> Result<DataType> {
    let want = q_fields();
    match t {
        DataType::Null => Ok(q_type()),
        DataType::Struct(fields)
            if fields.len() == want.len()
                && fields
                    .iter()
                    .zip(want.iter())
                    .all(|(a, b)| a.name() == b.name()) =>
        {
            Ok(q_type())
        }
        _ => plan_err!(
            "'{name}' argument {position} (q): expected the struct that quantize returns \
             (scheme, bits, group_size, numel, codes, scales, mins), got {t}"
        ),
    }
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
