//! The Arrow layer: weight tables and the `q` struct as Arrow arrays, between the pure kernels
//! below and the SQL functions, jobs and Python bindings above. Nothing here knows SQL.
//!
//! - [`weights`]: a column of weight lists as `&[f32]` rows, without copying.
//! - [`q`]: the `q` struct type (DESIGN.md §2), its builder and its row reader.
//! - [`args`]: per-row arguments (a literal or a column) and the error of one row.
//! - [`rows`]: the row loops that run the kernels over a batch.
//! - [`table`]: schema checks and batch-level quantize/dequantize of whole weight tables.

pub mod args;
pub mod q;
pub mod rows;
pub mod table;
pub mod weights;

pub use args::{FloatArg, IntArg, RowError, StrArg};
pub use q::{QBuilder, QRows, q_fields, q_type};
pub use rows::{dequantize_rows, quantize_rows, quantize_rows_to_target};
pub use table::{
    check_options, check_shapes, dequantize_batch, dequantized_schema, quantize_batch,
    quantized_schema, validate_schema,
};
pub use weights::{WeightRows, f32_item, f32_list, i64_list};

/// The layer-name column of a weight table.
pub const LAYER_NAME: &str = "layer_name";
/// The weights column.
pub const WEIGHTS: &str = "weights";
/// The optional shape column.
pub const SHAPE: &str = "shape";
/// The quantized column.
pub const Q: &str = "q";
