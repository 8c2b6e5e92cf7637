//! Per-row arguments of the row loops (a literal or a column), and the error of one row.

use datafusion::arrow::array::{Array, AsArray, PrimitiveArray, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{ArrowPrimitiveType, DataType, Float64Type, Int64Type};
use datafusion::common::{DataFusionError, Result, exec_err};
use datafusion::logical_expr::ColumnarValue;

use crate::kernels::{KernelError, Scheme};
use crate::options::{self, Group};

/// What went wrong on one row, before the caller says which function or layer it was.
#[derive(Debug, Clone, PartialEq)]
pub struct RowError {
    /// The row within its batch.
    pub row: usize,
    /// What went wrong.
    pub message: String,
    /// A broken invariant (a bug), not the row's data.
    pub internal: bool,
}

impl RowError {
    /// A row error from anything printable.
    pub fn new(row: usize, message: impl std::fmt::Display) -> Self {
        Self {
            row,
            message: message.to_string(),
            internal: false,
        }
    }

    /// A kernel's error on row `row`; [`KernelError::Internal`] stays internal.
    pub fn kernel(row: usize, e: KernelError) -> Self {
        let internal = matches!(e, KernelError::Internal(_));
        Self {
            internal,
            ..Self::new(row, e)
        }
    }

    /// The error that function `name` reports for it, `name: row N: message`: an execution
    /// error, or DataFusion's internal error for a broken invariant.
    pub fn into_exec(self, name: &str) -> DataFusionError {
        let message = format!("{name}: row {}: {}", self.row, self.message);
        if self.internal {
            DataFusionError::Internal(message)
        } else {
            DataFusionError::Execution(message)
        }
    }
}

/// A per-row string argument (literal or column), coerced to utf8.
pub enum StrArg {
    /// The same value for every row.
    Const(Option<String>),
    /// One value per row.
    Column(StringArray),
}

impl StrArg {
    /// Reads an argument, casting it to utf8.
    pub fn new(v: &ColumnarValue) -> Result<Self> {
        Ok(match v {
            ColumnarValue::Scalar(s) => match s.cast_to(&DataType::Utf8)? {
                datafusion::common::ScalarValue::Utf8(s) => StrArg::Const(s),
                other => return exec_err!("expected a string, got {other:?}"),
            },
            ColumnarValue::Array(a) => {
                StrArg::Column(cast(a, &DataType::Utf8)?.as_string::<i32>().clone())
            }
        })
    }

    /// The value at row `i`.
    pub fn get(&self, i: usize) -> Option<&str> {
        match self {
            StrArg::Const(s) => s.as_deref(),
            StrArg::Column(a) => (i < a.len() && a.is_valid(i)).then(|| a.value(i)),
        }
    }
}

/// A per-row primitive argument (literal or column), cast to `T`.
pub enum PrimArg<T: ArrowPrimitiveType> {
    /// The same value for every row.
    Const(Option<T::Native>),
    /// One value per row.
    Column(PrimitiveArray<T>),
}

/// A per-row integer argument (group sizes, bins).
pub type IntArg = PrimArg<Int64Type>;
/// A per-row float argument (cosine targets).
pub type FloatArg = PrimArg<Float64Type>;

impl<T: ArrowPrimitiveType> PrimArg<T> {
    /// Reads an argument, casting it to `T`.
    pub fn new(v: &ColumnarValue) -> Result<Self> {
        Ok(match v {
            ColumnarValue::Scalar(s) => {
                let array = s.cast_to(&T::DATA_TYPE)?.to_array()?;
                let array = array.as_primitive::<T>();
                PrimArg::Const(array.is_valid(0).then(|| array.value(0)))
            }
            ColumnarValue::Array(a) => {
                PrimArg::Column(cast(a, &T::DATA_TYPE)?.as_primitive::<T>().clone())
            }
        })
    }

    /// The value at row `i`.
    pub fn get(&self, i: usize) -> Option<T::Native> {
        match self {
            PrimArg::Const(v) => *v,
            PrimArg::Column(a) => (i < a.len() && a.is_valid(i)).then(|| a.value(i)),
        }
    }
}

/// Reads a per-row group size: `None` for NULL, an error for a negative one.
pub fn group_at(group: &IntArg, row: usize) -> Result<Option<usize>, RowError> {
    let Some(g) = group.get(row) else {
        return Ok(None);
    };
    match options::parse_group_size(g) {
        Ok(Group::Size(n)) => Ok(Some(n)),
        Ok(_) => Ok(Some(0)),
        Err(e) => Err(RowError::new(row, e)),
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
        let scheme = options::parse_scheme(s).map_err(|e| RowError::new(row, e))?;
        self.0 = Some((s.to_string(), scheme));
        Ok(Some(scheme))
    }
}
