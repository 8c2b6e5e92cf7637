//! Files in and out, as Arrow batches: the jobs' Parquet input read page by page, `.safetensors`
//! models memory-mapped tensor by tensor, and Parquet output that appears atomically.

pub mod gguf;
pub mod output;
pub mod parquet_source;
pub mod safetensors;
