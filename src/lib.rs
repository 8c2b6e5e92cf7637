//! arrowquant: quantize neural-network weights stored as Arrow tables.
//!
//! - [`kernels`]: the pure core, `&[f32]` in, codes and scales out.
//! - [`job`], [`cli`]: Parquet-to-Parquet jobs and the `arrowquant` command line; [`input`]:
//!   their Parquet input, read page by page.
//! - [`mem`]: large output buffers on huge pages.
//! - [`table`]: weight tables, batch by batch (schema checks, layer names in errors).
//! - [`udf`]: the DataFusion SQL functions over it, all registered by [`register_all`].

pub mod cli;
pub mod error;
pub mod input;
pub mod job;
pub mod kernels;
pub mod mem;
pub mod safetensors;
pub mod table;
pub mod udf;

#[cfg(feature = "python")]
mod python;

pub use udf::{functions, register_all};
