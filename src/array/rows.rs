//! The row loops: every row of a batch through the kernels. The SQL functions and
//! [`super::table`] both call these, so a table and a SQL query quantize the same way.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Float32Array, ListArray};
use datafusion::arrow::buffer::{NullBuffer, OffsetBuffer, ScalarBuffer};

use super::args::{FloatArg, IntArg, RowError, SchemeCache, StrArg, group_at};
use super::q::{QBuilder, QRows};
use super::weights::{WeightRows, f32_item};
use crate::kernels::{
    Method, dequantize_into, quantize_into_with, quantize_to_target, stored_group_size,
};
use crate::options;

/// Quantizes every row of `rows` with its scheme and group size (NULL in any gives NULL) and
/// `method`, a large row on up to `threads` threads (the SQL function uses 1: partitions are
/// its threads).
pub fn quantize_rows(
    rows: &WeightRows,
    scheme: &StrArg,
    group: &IntArg,
    method: Method,
    threads: usize,
) -> Result<ArrayRef, RowError> {
    let mut schemes = SchemeCache::default();
    let mut out = QBuilder::with_capacity(rows.len());
    // The codes of the whole batch in one allocation: exact for one scheme, at most one byte
    // per weight otherwise. Growing by doubling would copy the codes and hold both copies.
    let scheme_of_all = match scheme {
        StrArg::Const(Some(s)) => options::parse_scheme(s).ok(),
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
        quantize_into_with(x, scheme, group, method, out.buffers(), threads)
            .map_err(|e| RowError::kernel(i, e))?;
        out.finish_row(scheme, stored_group_size(scheme, group), x.len())
            .map_err(|e| RowError::new(i, e))?;
    }
    out.finish().map_err(|e| RowError::new(0, e))
}

/// Quantizes every row to its cosine target (NULL in any argument gives NULL).
pub fn quantize_rows_to_target(
    rows: &WeightRows,
    target: &FloatArg,
    group: &IntArg,
) -> Result<ArrayRef, RowError> {
    let mut out = QBuilder::with_capacity(rows.len());
    for i in 0..rows.len() {
        let x = rows.row(i).map_err(|e| RowError::new(i, e))?;
        let (Some(x), Some(t), Some(group)) = (x, target.get(i), group_at(group, i)?) else {
            out.null_row().map_err(|e| RowError::new(i, e))?;
            continue;
        };
        options::check_min_cosine(t).map_err(|e| RowError::new(i, e))?;
        let scheme =
            quantize_to_target(x, t, group, out.buffers()).map_err(|e| RowError::kernel(i, e))?;
        out.finish_row(scheme, stored_group_size(scheme, group), x.len())
            .map_err(|e| RowError::new(i, e))?;
    }
    out.finish().map_err(|e| RowError::new(0, e))
}

/// Reconstructs every row of `rows` as a `list<float32>` (NULL stays NULL).
pub fn dequantize_rows(rows: &QRows) -> Result<ArrayRef, RowError> {
    // One allocation for the batch: rows whose parts agree say how many weights they hold.
    let numel: usize = (0..rows.len())
        .filter_map(|i| rows.row(i).ok().flatten())
        .filter(|r| r.validate().is_ok())
        .map(|r| r.numel)
        .sum();
    let mut values = Vec::with_capacity(numel);
    crate::mem::advise_huge_pages(&mut values);
    let mut offsets = Vec::with_capacity(rows.len() + 1);
    offsets.push(0i32);
    let mut valid = Vec::with_capacity(rows.len());
    for i in 0..rows.len() {
        let row = rows.row(i).map_err(|e| RowError::new(i, e))?;
        if let Some(r) = row {
            dequantize_into(&r, &mut values).map_err(|e| RowError::kernel(i, e))?;
        }
        valid.push(row.is_some());
        let end = i32::try_from(values.len()).map_err(|_| {
            RowError::new(
                i,
                format!(
                    "the batch holds more than {} weights; use smaller batches",
                    i32::MAX
                ),
            )
        })?;
        offsets.push(end);
    }
    let nulls = NullBuffer::from(valid);
    let list = ListArray::try_new(
        f32_item(),
        OffsetBuffer::new(ScalarBuffer::from(offsets)),
        Arc::new(Float32Array::from(values)),
        (nulls.null_count() > 0).then_some(nulls),
    )
    .map_err(|e| RowError::new(0, e))?;
    Ok(Arc::new(list))
}
