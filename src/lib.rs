//! arrowquant: quantize neural-network weights stored as Arrow tables.
//!
//! - [`kernels`]: the pure core, `&[f32]` in, codes and scales out.
//! - [`table`]: weight tables, batch by batch (schema checks, layer names in errors).
//! - [`udf`]: the DataFusion SQL functions over it, all registered by [`register_all`].

pub mod error;
pub mod kernels;
pub mod table;
pub mod udf;

#[cfg(feature = "python")]
mod python;

pub use udf::{functions, register_all};
