//! Row access to a column of weight lists as `&[f32]`, and the `list<float32>` types we write.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float32Array};
use datafusion::arrow::buffer::{NullBuffer, OffsetBuffer};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{Result, exec_err};

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

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len == 0
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

/// The item field of every `list<float32>` we produce.
pub fn f32_item() -> FieldRef {
    Arc::new(Field::new_list_field(DataType::Float32, true))
}

/// `list<float32>`, the type of the weights we produce.
pub fn f32_list() -> DataType {
    DataType::List(f32_item())
}

/// `list<int64>`, the type of a shape.
pub fn i64_list() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Int64, true)))
}
