//! A projection that names the layer when one of its rows fails.
//!
//! The SQL functions only know the row of their batch (`quantize: row 0: element 17 is NaN`).
//! A job's plan is a projection over the weight table, so [`name_layers`] swaps each projection
//! whose input has a `layer_name` column for a [`NameLayersExec`]: the same expressions,
//! evaluated the same way, which on an error looks up the failing row's layer name in the batch
//! in flight and puts it in front of the message. No second pass over the input.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, RecordBatch, RecordBatchOptions};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Result, internal_err};
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::projection::{ProjectionExec, ProjectionExpr};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::StreamExt;

use crate::array::LAYER_NAME;

/// Replaces every projection over a `layer_name` column in `plan` by a [`NameLayersExec`].
pub fn name_layers(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| match node.downcast_ref::<ProjectionExec>() {
        Some(p) if p.input().schema().field_with_name(LAYER_NAME).is_ok() => {
            Ok(Transformed::yes(Arc::new(NameLayersExec::new(p)) as _))
        }
        _ => Ok(Transformed::no(node)),
    })
    .map(|t| t.data)
}

/// A projection whose errors name the layer of the row that failed.
#[derive(Debug)]
pub struct NameLayersExec {
    exprs: Arc<[ProjectionExpr]>,
    input: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
}

impl NameLayersExec {
    /// The same projection as `p`.
    pub fn new(p: &ProjectionExec) -> Self {
        Self {
            exprs: p.expr().into(),
            input: Arc::clone(p.input()),
            properties: Arc::clone(p.properties()),
        }
    }
}

impl DisplayAs for NameLayersExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let exprs: Vec<String> = self
            .exprs
            .iter()
            .map(|e| format!("{} as {}", e.expr, e.alias))
            .collect();
        write!(f, "NameLayersExec: expr=[{}]", exprs.join(", "))
    }
}

impl ExecutionPlan for NameLayersExec {
    fn name(&self) -> &str {
        "NameLayersExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        let mut recursion = TreeNodeRecursion::Continue;
        for e in self.exprs.iter() {
            recursion = f(&e.expr)?;
            if recursion == TreeNodeRecursion::Stop {
                break;
            }
        }
        Ok(recursion)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let (Some(input), true) = (children.pop(), children.is_empty()) else {
            return internal_err!("NameLayersExec takes exactly one child");
        };
        Ok(Arc::new(Self {
            exprs: Arc::clone(&self.exprs),
            input,
            properties: Arc::clone(&self.properties),
        }))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let exprs = Arc::clone(&self.exprs);
        let schema = self.schema();
        let out = Arc::clone(&schema);
        let stream = input.map(move |batch| {
            let batch = batch?;
            project(&exprs, &out, &batch).map_err(|e| name_the_layer(&exprs, &out, &batch, e))
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}

/// Evaluates the projection on one batch.
fn project(
    exprs: &[ProjectionExpr],
    schema: &SchemaRef,
    batch: &RecordBatch,
) -> Result<RecordBatch> {
    let columns = exprs
        .iter()
        .map(|e| e.expr.evaluate(batch)?.into_array(batch.num_rows()))
        .collect::<Result<Vec<_>>>()?;
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    Ok(RecordBatch::try_new_with_options(
        Arc::clone(schema),
        columns,
        &options,
    )?)
}

/// `error` with the failing row's layer name in front (`layer 'x': quantize: …`). In a batch of
/// several rows, the failing one is found by evaluating the rows of this batch one at a time.
fn name_the_layer(
    exprs: &[ProjectionExpr],
    schema: &SchemaRef,
    batch: &RecordBatch,
    error: DataFusionError,
) -> DataFusionError {
    let DataFusionError::Execution(message) = error.find_root() else {
        return error;
    };
    let row = match batch.num_rows() {
        1 => Some(0),
        n => (0..n).find(|&i| project(exprs, schema, &batch.slice(i, 1)).is_err()),
    };
    let name = batch
        .column_by_name(LAYER_NAME)
        .and_then(|c| cast(c, &DataType::Utf8).ok())
        .zip(row)
        .and_then(|(names, row)| {
            let names = names.as_string::<i32>();
            (row < names.len() && names.is_valid(row)).then(|| names.value(row).to_string())
        });
    match name {
        Some(name) => {
            DataFusionError::Execution(format!("layer '{name}': {}", without_row(message)))
        }
        None => error,
    }
}

/// `quantize: row 3: message` (a SQL function's row error) without the row: `quantize: message`.
fn without_row(message: &str) -> String {
    let parts = message.split_once(": row ").and_then(|(function, rest)| {
        let (row, text) = rest.split_once(": ")?;
        row.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| format!("{function}: {text}"))
    });
    parts.unwrap_or_else(|| message.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn row_numbers_are_dropped_from_function_errors() {
        assert_eq!(
            super::without_row("quantize: row 12: element 1 is NaN"),
            "quantize: element 1 is NaN"
        );
        assert_eq!(super::without_row("something else"), "something else");
        assert_eq!(super::without_row("f: row x: y"), "f: row x: y");
    }
}
