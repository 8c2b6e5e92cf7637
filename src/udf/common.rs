//! What the SQL functions share: argument coercion, row access to weight lists, the `q` struct
//! type with its builder and reader, and the panic guard.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float32Array, LargeBinaryArray, ListArray, StringArray, StructArray,
    UInt8Array,
};
use datafusion::arrow::buffer::{NullBuffer, OffsetBuffer, ScalarBuffer};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields, Int32Type, Int64Type};
use datafusion::common::{DataFusionError, Result, exec_err, plan_err};
use datafusion::logical_expr::ColumnarValue;

use crate::kernels::{KernelError, QuantizedBuffers, QuantizedRef, Scheme};

/// Runs a UDF body, turning a panic into an execution error: a panic that crossed the
/// datafusion-ffi boundary would abort the user's Python process (DESIGN.md §7).
pub fn guard<T>(name: &str, body: impl FnOnce() -> Result<T>) -> Result<T> {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|panic| {
        let msg = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        exec_err!("{name}: internal error (a bug in arrowquant, please report it): {msg}")
    })
}

/// What went wrong on one row, before the caller says which function or layer it was.
#[derive(Debug, Clone, PartialEq)]
pub struct RowError {
    /// The row within its batch.
    pub row: usize,
    /// What went wrong.
    pub message: String,
}

impl RowError {
    /// A row error from anything printable.
    pub fn new(row: usize, message: impl std::fmt::Display) -> Self {
        Self {
            row,
            message: message.to_string(),
        }
    }

    /// The execution error that function `name` reports for it.
    pub fn into_exec(self, name: &str) -> DataFusionError {
        row_err(name, self.row, self.message)
    }
}

/// An execution error for row `row` of function `name`.
pub fn row_err(name: &str, row: usize, e: impl std::fmt::Display) -> DataFusionError {
    DataFusionError::Execution(format!("{name}: row {row}: {e}"))
}

/// The error of a kernel on row `row` of function `name`.
pub fn kernel_err(name: &str, row: usize, e: KernelError) -> DataFusionError {
    row_err(name, row, e)
}

/// Checks the argument count, as a plan error naming the function and the accepted arities.
pub fn check_arity(
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
pub fn coerce_weights(name: &str, position: usize, t: &DataType) -> Result<DataType> {
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
pub fn coerce_string(name: &str, position: usize, what: &str, t: &DataType) -> Result<DataType> {
    match t {
        DataType::Null | DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            Ok(DataType::Utf8)
        }
        _ => plan_err!("'{name}' argument {position} ({what}): expected a string, got {t}"),
    }
}

/// The coerced type of an integer argument: int64.
pub fn coerce_int(name: &str, position: usize, what: &str, t: &DataType) -> Result<DataType> {
    if t.is_integer() || *t == DataType::Null {
        Ok(DataType::Int64)
    } else {
        plan_err!("'{name}' argument {position} ({what}): expected an integer, got {t}")
    }
}

/// The coerced type of a float argument: float64.
pub fn coerce_float(name: &str, position: usize, what: &str, t: &DataType) -> Result<DataType> {
    if t.is_numeric() || *t == DataType::Null {
        Ok(DataType::Float64)
    } else {
        plan_err!("'{name}' argument {position} ({what}): expected a number, got {t}")
    }
}

/// Row access to a column of weight lists as `&[f32]`, without copying float32 values.
pub struct WeightRows {
    values: Float32Array,
    offsets: Offsets,
    nulls: Option<NullBuffer>,
    len: usize,
}

enum Offsets {
    Small(OffsetBuffer<i32>),
    Large(OffsetBuffer<i64>),
    Fixed { size: usize, first: usize },
    AllNull,
}

impl WeightRows {
    /// Wraps a `list`/`large_list`/`fixed_size_list` array (other float items are cast to f32).
    pub fn try_new(name: &str, array: &ArrayRef) -> Result<Self> {
        let (values, offsets) = match array.data_type() {
            DataType::List(_) => {
                let a = array.as_list::<i32>();
                (a.values(), Offsets::Small(a.offsets().clone()))
            }
            DataType::LargeList(_) => {
                let a = array.as_list::<i64>();
                (a.values(), Offsets::Large(a.offsets().clone()))
            }
            DataType::FixedSizeList(_, n) => {
                let a = array.as_fixed_size_list();
                let size = usize::try_from(*n).unwrap_or(0);
                (
                    a.values(),
                    Offsets::Fixed {
                        size,
                        first: a.offset(),
                    },
                )
            }
            DataType::Null => {
                let empty: ArrayRef = Arc::new(Float32Array::from(Vec::<f32>::new()));
                return Ok(Self {
                    values: empty.as_primitive().clone(),
                    offsets: Offsets::AllNull,
                    nulls: None,
                    len: array.len(),
                });
            }
            other => return exec_err!("{name}: expected a list of float32 weights, got {other}"),
        };
        let values = if values.data_type() == &DataType::Float32 {
            values.as_primitive().clone()
        } else if values.data_type().is_numeric() || values.data_type() == &DataType::Null {
            cast(values, &DataType::Float32)?.as_primitive().clone()
        } else {
            return exec_err!(
                "{name}: expected float weights, got items of {}",
                values.data_type()
            );
        };
        Ok(Self {
            values,
            offsets,
            nulls: array.logical_nulls(),
            len: array.len(),
        })
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The weights of row `i` (`None` for a NULL row), or an error message for a null element.
    pub fn row(&self, i: usize) -> Result<Option<&[f32]>, String> {
        if i >= self.len {
            return Err(format!("row {i} is outside the list's {} rows", self.len));
        }
        if matches!(self.offsets, Offsets::AllNull)
            || self.nulls.as_ref().is_some_and(|n| n.is_null(i))
        {
            return Ok(None);
        }
        let pair = |a: Option<i64>, b: Option<i64>| match (a, b) {
            (Some(a), Some(b)) if 0 <= a && a <= b => Ok((a as usize, b as usize)),
            _ => Err(format!("row {i} is outside the list's {} rows", self.len)),
        };
        let (start, end) = match &self.offsets {
            Offsets::Small(o) => pair(
                o.get(i).map(|&v| i64::from(v)),
                o.get(i + 1).map(|&v| i64::from(v)),
            )?,
            Offsets::Large(o) => pair(o.get(i).copied(), o.get(i + 1).copied())?,
            Offsets::Fixed { size, first } => ((first + i) * size, (first + i + 1) * size),
            Offsets::AllNull => return Ok(None),
        };
        let all = self.values.values();
        let Some(row) = all.get(start..end) else {
            return Err(format!(
                "list offsets {start}..{end} exceed the {} values",
                all.len()
            ));
        };
        if let Some(nulls) = self.values.nulls()
            && let Some(k) = (start..end).find(|&k| nulls.is_null(k))
        {
            return Err(format!(
                "element {} is null, but weights must be non-null",
                k - start
            ));
        }
        Ok(Some(row))
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
    /// Reads an argument coerced to utf8.
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

/// A per-row numeric argument (literal or column), read as `f64` or `i64`.
pub enum NumArg {
    /// The same value for every row.
    Const(Option<f64>),
    /// One value per row (cast to float64).
    Column(datafusion::arrow::array::Float64Array),
}

impl NumArg {
    /// Reads a numeric argument.
    pub fn new(v: &ColumnarValue) -> Result<Self> {
        Ok(match v {
            ColumnarValue::Scalar(s) => match s.cast_to(&DataType::Float64)? {
                datafusion::common::ScalarValue::Float64(v) => NumArg::Const(v),
                other => return exec_err!("expected a number, got {other:?}"),
            },
            ColumnarValue::Array(a) => {
                NumArg::Column(cast(a, &DataType::Float64)?.as_primitive().clone())
            }
        })
    }

    /// The value at row `i`.
    pub fn get(&self, i: usize) -> Option<f64> {
        match self {
            NumArg::Const(v) => *v,
            NumArg::Column(a) => (i < a.len() && a.is_valid(i)).then(|| a.value(i)),
        }
    }
}

/// Parses a scheme name, with an error listing the valid ones.
pub fn parse_scheme(s: &str) -> Result<Scheme, String> {
    Scheme::parse(s).ok_or_else(|| format!("expected one of {}, got '{s}'", Scheme::names()))
}

/// The item field of every `list<float32>` we produce.
pub fn f32_item() -> FieldRef {
    Arc::new(Field::new_list_field(DataType::Float32, true))
}

/// The fields of the `q` struct (DESIGN.md §2).
pub fn q_fields() -> Fields {
    Fields::from(vec![
        Field::new("scheme", DataType::Utf8, true),
        Field::new("bits", DataType::UInt8, true),
        Field::new("group_size", DataType::Int32, true),
        Field::new("numel", DataType::Int64, true),
        Field::new("codes", DataType::LargeBinary, true),
        Field::new("scales", DataType::List(f32_item()), true),
        Field::new("mins", DataType::List(f32_item()), true),
    ])
}

/// The type of the `q` struct.
pub fn q_type() -> DataType {
    DataType::Struct(q_fields())
}

/// Checks that `t` is a `q` struct (same field names, in order) and returns the canonical type
/// it is cast to; Parquet readers may hand back view or large variants of the same fields.
pub fn coerce_q(name: &str, position: usize, t: &DataType) -> Result<DataType> {
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

/// Accumulates quantized rows and builds the `q` struct array.
#[derive(Default)]
pub struct QBuilder {
    bufs: QuantizedBuffers,
    schemes: Vec<Option<&'static str>>,
    bits: Vec<u8>,
    group_sizes: Vec<i32>,
    numels: Vec<i64>,
    code_offsets: Vec<i64>,
    scale_offsets: Vec<i32>,
    min_offsets: Vec<i32>,
    min_valid: Vec<bool>,
}

impl QBuilder {
    /// A builder for `rows` rows.
    pub fn with_capacity(rows: usize) -> Self {
        let mut b = Self::default();
        b.schemes.reserve(rows);
        b.code_offsets.push(0);
        b.scale_offsets.push(0);
        b.min_offsets.push(0);
        b
    }

    /// The buffers the next row's kernel appends to.
    pub fn buffers(&mut self) -> &mut QuantizedBuffers {
        &mut self.bufs
    }

    /// Records a row whose codes, scales and mins were just appended to [`Self::buffers`].
    pub fn finish_row(
        &mut self,
        scheme: Scheme,
        group_size: usize,
        numel: usize,
    ) -> Result<(), String> {
        self.schemes.push(Some(scheme.name()));
        self.bits.push(scheme.bits());
        self.group_sizes.push(to_i32("group_size", group_size)?);
        self.numels.push(numel as i64);
        self.push_offsets(scheme.is_asymmetric())
    }

    /// Records a NULL row.
    pub fn null_row(&mut self) -> Result<(), String> {
        self.schemes.push(None);
        self.bits.push(0);
        self.group_sizes.push(0);
        self.numels.push(0);
        self.push_offsets(false)
    }

    fn push_offsets(&mut self, has_mins: bool) -> Result<(), String> {
        self.code_offsets.push(self.bufs.codes.len() as i64);
        self.scale_offsets
            .push(to_i32("scales offset", self.bufs.scales.len())?);
        self.min_offsets
            .push(to_i32("mins offset", self.bufs.mins.len())?);
        self.min_valid.push(has_mins);
        Ok(())
    }

    /// Builds the struct array.
    pub fn finish(self) -> Result<ArrayRef> {
        let valid: Vec<bool> = self.schemes.iter().map(Option::is_some).collect();
        let nulls = NullBuffer::from(valid);
        let nulls = (nulls.null_count() > 0).then_some(nulls);
        let QuantizedBuffers {
            codes,
            scales,
            mins,
            ..
        } = self.bufs;
        let list =
            |offsets: Vec<i32>, values: Vec<f32>, nulls: Option<NullBuffer>| -> Result<ArrayRef> {
                Ok(Arc::new(ListArray::try_new(
                    f32_item(),
                    OffsetBuffer::new(ScalarBuffer::from(offsets)),
                    Arc::new(Float32Array::from(values)),
                    nulls,
                )?))
            };
        let min_nulls = NullBuffer::from(self.min_valid);
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(self.schemes)),
            Arc::new(UInt8Array::new(
                ScalarBuffer::from(self.bits),
                nulls.clone(),
            )),
            Arc::new(datafusion::arrow::array::Int32Array::new(
                ScalarBuffer::from(self.group_sizes),
                nulls.clone(),
            )),
            Arc::new(datafusion::arrow::array::Int64Array::new(
                ScalarBuffer::from(self.numels),
                nulls.clone(),
            )),
            Arc::new(LargeBinaryArray::try_new(
                OffsetBuffer::new(ScalarBuffer::from(self.code_offsets)),
                codes.into(),
                nulls.clone(),
            )?),
            list(self.scale_offsets, scales, nulls.clone())?,
            list(self.min_offsets, mins, Some(min_nulls))?,
        ];
        Ok(Arc::new(StructArray::try_new(q_fields(), columns, nulls)?))
    }
}

fn to_i32(what: &str, v: usize) -> Result<i32, String> {
    i32::try_from(v).map_err(|_| format!("{what} {v} exceeds int32; use smaller batches"))
}

/// Row access to a column of `q` structs.
pub struct QRows {
    nulls: Option<NullBuffer>,
    scheme: StringArray,
    group_size: datafusion::arrow::array::Int32Array,
    numel: datafusion::arrow::array::Int64Array,
    codes: LargeBinaryArray,
    scales: WeightRows,
    mins: WeightRows,
    len: usize,
}

impl QRows {
    /// Wraps a `q` column (any struct that [`coerce_q`] accepted, cast to the canonical type).
    pub fn try_new(name: &str, array: &ArrayRef) -> Result<Self> {
        let array = if array.data_type() == &q_type() {
            Arc::clone(array)
        } else {
            cast(array, &q_type())?
        };
        let Some(s) = array.as_struct_opt() else {
            return exec_err!("{name}: expected the q struct, got {}", array.data_type());
        };
        let col = |i: usize| Arc::clone(s.column(i));
        Ok(Self {
            nulls: s.logical_nulls(),
            scheme: col(0).as_string::<i32>().clone(),
            group_size: col(2).as_primitive::<Int32Type>().clone(),
            numel: col(3).as_primitive::<Int64Type>().clone(),
            codes: col(4).as_binary::<i64>().clone(),
            scales: WeightRows::try_new(name, &col(5))?,
            mins: WeightRows::try_new(name, &col(6))?,
            len: s.len(),
        })
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Row `i` as a borrowed quantized tensor (`None` when NULL), or an error message saying
    /// which field is missing or malformed.
    pub fn row(&self, i: usize) -> Result<Option<QuantizedRef<'_>>, String> {
        if i >= self.len {
            return Err(format!("row {i} is outside the {} rows", self.len));
        }
        if self.nulls.as_ref().is_some_and(|n| n.is_null(i)) {
            return Ok(None);
        }
        let field_null = |f: &str| format!("q.{f} is null");
        if self.scheme.is_null(i) {
            return Err(field_null("scheme"));
        }
        let scheme = parse_scheme(self.scheme.value(i)).map_err(|e| format!("q.scheme: {e}"))?;
        if self.group_size.is_null(i) {
            return Err(field_null("group_size"));
        }
        let group_size = usize::try_from(self.group_size.value(i)).map_err(|_| {
            format!(
                "q.group_size must be >= 0, got {}",
                self.group_size.value(i)
            )
        })?;
        if self.numel.is_null(i) {
            return Err(field_null("numel"));
        }
        let numel = usize::try_from(self.numel.value(i))
            .map_err(|_| format!("q.numel must be >= 0, got {}", self.numel.value(i)))?;
        if self.codes.is_null(i) {
            return Err(field_null("codes"));
        }
        let scales = self.scales.row(i).map_err(|e| format!("q.scales: {e}"))?;
        let Some(scales) = scales else {
            return Err(field_null("scales"));
        };
        let mins = self.mins.row(i).map_err(|e| format!("q.mins: {e}"))?;
        Ok(Some(QuantizedRef {
            scheme,
            group_size,
            numel,
            codes: self.codes.value(i),
            scales,
            mins,
        }))
    }
}
