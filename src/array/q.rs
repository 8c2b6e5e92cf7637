//! The quantized value `q` (DESIGN.md §2): its struct type, a builder and a row reader.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float32Array, Int32Array, Int64Array, LargeBinaryArray, ListArray,
    StringArray, StructArray, UInt8Array,
};
use datafusion::arrow::buffer::{NullBuffer, OffsetBuffer, ScalarBuffer};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Fields, Int32Type, Int64Type};
use datafusion::common::{Result, exec_err};

use super::weights::{WeightRows, f32_item};
use crate::kernels::{QuantizedBuffers, QuantizedRef, Scheme};

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
            Arc::new(Int32Array::new(
                ScalarBuffer::from(self.group_sizes),
                nulls.clone(),
            )),
            Arc::new(Int64Array::new(
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
    group_size: Int32Array,
    numel: Int64Array,
    codes: LargeBinaryArray,
    scales: WeightRows,
    mins: WeightRows,
    len: usize,
}

impl QRows {
    /// Wraps a `q` column (any struct with the fields of [`q_fields`], cast to the canonical type).
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

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len == 0
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
        let scheme: Scheme = self
            .scheme
            .value(i)
            .parse()
            .map_err(|e| format!("q.scheme: {e}"))?;
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
