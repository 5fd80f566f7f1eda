//! The Flight SQL result contract: the schema a FlightInfo (or a prepared statement) announces is
//! exactly the schema its DoGet streams — names, types, nullability and metadata.
//!
//! The announcement comes from the logical plan; the batches come from the physical plan, which
//! may reshape them (a column the planner calls nullable that the executed plan knows is never
//! null, a dictionary, an `Int64` where the logical union said `Int32`). And the Flight encoder
//! rewrites some types on the wire (dictionaries sent as their values, `LargeList` as `List`).
//! So the announcement is the logical schema as the wire carries it (`announced`), and every
//! batch is brought to it at the edge (`conform`): re-annotated where only nullability or
//! metadata differ, cast where a type differs and the cast keeps every value, refused otherwise.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, RecordBatchOptions};
use arrow::compute::{CastOptions, can_cast_types, cast_with_options};
use arrow::datatypes::{DataType, Field, FieldRef, Fields, Schema, SchemaRef};
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use sha2::{Digest, Sha256};

use crate::error::EngineError;

/// The plan as the analyzer and optimizer leave it: what runs, and so what is announced (type
/// coercion happens there: before it, a UNION's column can still be called `Null` or `Int32`
/// where `Int64` is what runs). DDL and session statements are not optimized.
pub fn optimized(ctx: &SessionContext, plan: &LogicalPlan) -> Result<LogicalPlan, EngineError> {
    if matches!(plan, LogicalPlan::Ddl(_) | LogicalPlan::Statement(_)) {
        return Ok(plan.clone());
    }
    Ok(ctx.state().optimize(plan)?)
}

/// What a statement announces: its optimized plan's schema, as the wire carries it.
pub fn announce(ctx: &SessionContext, plan: &LogicalPlan) -> Result<SchemaRef, EngineError> {
    Ok(announced(optimized(ctx, plan)?.schema().as_arrow()))
}

/// What a statement with unbound placeholders announces: the optimizer may not be able to type
/// it until values are bound, and then the plan's own schema is the best answer.
pub fn announce_unbound(ctx: &SessionContext, plan: &LogicalPlan) -> SchemaRef {
    announce(ctx, plan).unwrap_or_else(|_| announced(plan.schema().as_arrow()))
}

/// The schema clients are told a statement's result has: `logical` as the Flight encoder will
/// put it on the wire (dictionaries as their value type, `LargeList` as `List`, recursively
/// through lists and structs, as the encoder recurses).
pub fn announced(logical: &Schema) -> SchemaRef {
    let fields: Fields = logical.fields().iter().map(wire_field).collect();
    Arc::new(Schema::new(fields).with_metadata(logical.metadata().clone()))
}

fn wire_field(field: &FieldRef) -> FieldRef {
    let data_type = wire_type(field.data_type());
    if &data_type == field.data_type() {
        return field.clone();
    }
    Arc::new(field.as_ref().clone().with_data_type(data_type))
}

fn wire_type(data_type: &DataType) -> DataType {
    match data_type {
        DataType::Dictionary(_, values) => wire_type(values),
        DataType::List(item) | DataType::LargeList(item) => DataType::List(wire_field(item)),
        DataType::Struct(fields) => DataType::Struct(fields.iter().map(wire_field).collect()),
        other => other.clone(),
    }
}

/// A short fingerprint of an announced schema, carried in the ticket so DoGet can tell that the
/// statement it plans again still has the result its FlightInfo promised.
pub fn fingerprint(schema: &Schema) -> String {
    // The schema's flatbuffer: canonical (arrow-ipc writes metadata keys sorted).
    let encoded = arrow::ipc::convert::IpcSchemaEncoder::new().schema_to_fb(schema);
    let digest = Sha256::digest(encoded.finished_data());
    hex::encode(&digest[..12])
}

/// `batch` as a batch of exactly `to`. Columns are matched by position; a column whose type
/// differs is cast, and only if the cast keeps every value (no overflow, no value turned NULL).
pub fn conform(batch: RecordBatch, to: &SchemaRef) -> Result<RecordBatch, EngineError> {
    if batch.schema_ref() == to {
        return Ok(batch);
    }
    let from = batch.schema();
    if from.fields().len() != to.fields().len() {
        return Err(mismatch(format!(
            "the result has {} columns where {} were announced",
            from.fields().len(),
            to.fields().len()
        )));
    }
    let columns = batch
        .columns()
        .iter()
        .zip(to.fields())
        .map(|(column, field)| conform_column(column, field))
        .collect::<Result<Vec<_>, _>>()?;
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    RecordBatch::try_new_with_options(to.clone(), columns, &options).map_err(|e| {
        mismatch(format!(
            "a result batch does not fit the announced schema: {e}"
        ))
    })
}

fn conform_column(column: &ArrayRef, to: &Field) -> Result<ArrayRef, EngineError> {
    if column.data_type() == to.data_type() {
        return Ok(column.clone());
    }
    if !can_cast_types(column.data_type(), to.data_type()) {
        return Err(mismatch(format!(
            "column '{}' is {} where {} was announced",
            to.name(),
            column.data_type(),
            to.data_type()
        )));
    }
    let strict = CastOptions {
        safe: false,
        ..Default::default()
    };
    let cast = cast_with_options(column, to.data_type(), &strict).map_err(|e| {
        mismatch(format!(
            "column '{}' ({}) does not fit the announced {}: {e}",
            to.name(),
            column.data_type(),
            to.data_type()
        ))
    })?;
    if cast.logical_null_count() != column.logical_null_count() {
        return Err(mismatch(format!(
            "column '{}' ({}) would lose values as the announced {}",
            to.name(),
            column.data_type(),
            to.data_type()
        )));
    }
    Ok(cast)
}

fn mismatch(what: String) -> EngineError {
    EngineError::Internal(format!(
        "{what}; the result was stopped rather than sent with a schema other than announced"
    ))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use arrow::array::{
        DictionaryArray, Int32Array, Int64Array, LargeListArray, ListArray, StringArray,
        StringViewArray, StructArray,
    };
    use arrow::datatypes::{Int32Type, Int64Type};
    use arrow_flight::decode::FlightRecordBatchStream;
    use arrow_flight::encode::FlightDataEncoderBuilder;
    use futures::StreamExt;

    use super::*;

    fn batch(fields: Vec<Field>, columns: Vec<ArrayRef>) -> RecordBatch {
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
    }

    /// What a client receives when the engine announces `announced` and streams `batches` through
    /// its conform step and the Flight encoder: the schema message and the batches.
    async fn over_the_wire(
        announced: SchemaRef,
        batches: Vec<RecordBatch>,
    ) -> (SchemaRef, Vec<RecordBatch>) {
        let to = announced.clone();
        let conformed = futures::stream::iter(batches).map(move |b| {
            conform(b, &to)
                .map_err(|e| arrow_flight::error::FlightError::ExternalError(Box::new(e)))
        });
        let flight = FlightDataEncoderBuilder::new()
            .with_schema(announced)
            .build(conformed);
        let mut decoded = FlightRecordBatchStream::new_from_flight_data(flight);
        let mut got = Vec::new();
        while let Some(b) = decoded.next().await {
            got.push(b.unwrap());
        }
        (decoded.schema().unwrap().clone(), got)
    }

    #[tokio::test]
    async fn what_the_wire_carries_is_what_was_announced() {
        let dict_utf8 = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
        let item = Arc::new(Field::new("item", DataType::Int64, true));
        let logical = Schema::new(vec![
            Field::new("y", DataType::Utf8, true),
            Field::new("d", dict_utf8.clone(), true),
            Field::new("l", DataType::LargeList(item.clone()), true),
            Field::new(
                "s",
                DataType::Struct(vec![Field::new("k", dict_utf8.clone(), false)].into()),
                true,
            ),
            Field::new("v", DataType::Utf8View, false),
            Field::new("m", DataType::Int64, true)
                .with_metadata(HashMap::from([("comment".to_string(), "kept".to_string())])),
        ])
        .with_metadata(HashMap::from([("origin".into(), "sqe".into())]));
        let announced = announced(&logical);
        // The physical plan's batch: never-null strings, a dictionary, a LargeList, a struct
        // holding a dictionary, a view column, and no field metadata.
        let dict: DictionaryArray<Int32Type> = vec!["a", "b", "a"].into_iter().collect();
        let list = LargeListArray::from_iter_primitive::<Int64Type, _, _>(vec![
            Some(vec![Some(1), None]),
            None,
            Some(vec![]),
        ]);
        let inner: DictionaryArray<Int32Type> = vec!["k1", "k2", "k3"].into_iter().collect();
        let strukt = StructArray::from(vec![(
            Arc::new(Field::new("k", dict_utf8.clone(), false)),
            Arc::new(inner) as ArrayRef,
        )]);
        let physical = batch(
            vec![
                Field::new("y", DataType::Utf8, false),
                Field::new("d", dict_utf8.clone(), false),
                Field::new("l", DataType::LargeList(item), true),
                Field::new("s", strukt.data_type().clone(), true),
                Field::new("v", DataType::Utf8View, false),
                Field::new("m", DataType::Int64, true),
            ],
            vec![
                Arc::new(StringArray::from(vec!["x", "y", "z"])),
                Arc::new(dict),
                Arc::new(list),
                Arc::new(strukt),
                Arc::new(StringViewArray::from(vec!["p", "q", "r"])),
                Arc::new(Int64Array::from(vec![Some(1), None, Some(3)])),
            ],
        );
        let (schema, got) = over_the_wire(announced.clone(), vec![physical]).await;
        assert_eq!(schema, announced);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].schema(), announced);
        let d = got[0]
            .column(1)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_eq!(
            d.iter().collect::<Vec<_>>(),
            [Some("a"), Some("b"), Some("a")]
        );
        let l = got[0]
            .column(2)
            .as_any()
            .downcast_ref::<ListArray>()
            .unwrap();
        assert!(l.is_null(1));
        assert_eq!(l.value(0).len(), 2);
    }

    #[tokio::test]
    async fn an_empty_result_still_carries_the_announced_schema() {
        let announced = announced(&Schema::new(vec![Field::new("n", DataType::Int64, true)]));
        let (schema, got) = over_the_wire(announced.clone(), vec![]).await;
        assert_eq!(schema, announced);
        assert!(got.is_empty());
    }

    #[test]
    fn a_wider_stream_is_narrowed_only_when_every_value_fits() {
        let to = Arc::new(Schema::new(vec![Field::new("n", DataType::Int32, true)]));
        let fits = batch(
            vec![Field::new("n", DataType::Int64, false)],
            vec![Arc::new(Int64Array::from(vec![1, -7]))],
        );
        let got = conform(fits, &to).unwrap();
        assert_eq!(
            got.column(0)
                .as_any()
                .downcast_ref::<Int32Array>()
                .unwrap()
                .values(),
            &[1, -7]
        );
        let too_big = batch(
            vec![Field::new("n", DataType::Int64, false)],
            vec![Arc::new(Int64Array::from(vec![1, i64::MAX]))],
        );
        let e = conform(too_big, &to).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Internal);
        assert!(e.to_string().contains("column 'n'"), "{e}");
    }

    #[test]
    fn a_null_where_never_null_was_announced_is_refused() {
        let to = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let has_null = batch(
            vec![Field::new("n", DataType::Int64, true)],
            vec![Arc::new(Int64Array::from(vec![Some(1), None]))],
        );
        let e = conform(has_null, &to).unwrap_err();
        assert!(e.to_string().contains("announced schema"), "{e}");
        let no_null = batch(
            vec![Field::new("n", DataType::Int64, true)],
            vec![Arc::new(Int64Array::from(vec![1, 2]))],
        );
        assert_eq!(conform(no_null, &to).unwrap().schema(), to);
    }

    #[test]
    fn a_different_shape_is_refused_never_guessed() {
        let to = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, true)]));
        let two = batch(
            vec![
                Field::new("n", DataType::Int64, true),
                Field::new("m", DataType::Int64, true),
            ],
            vec![
                Arc::new(Int64Array::from(vec![1])),
                Arc::new(Int64Array::from(vec![2])),
            ],
        );
        assert!(
            conform(two, &to)
                .unwrap_err()
                .to_string()
                .contains("2 columns")
        );
        let strukt = StructArray::from(vec![(
            Arc::new(Field::new("k", DataType::Int64, true)),
            Arc::new(Int64Array::from(vec![1])) as ArrayRef,
        )]);
        let not_castable = batch(
            vec![Field::new("n", strukt.data_type().clone(), true)],
            vec![Arc::new(strukt)],
        );
        assert!(conform(not_castable, &to).is_err());
    }

    #[test]
    fn fingerprints_tell_schemas_apart() {
        let a = Schema::new(vec![Field::new("n", DataType::Int64, true)]);
        let b = Schema::new(vec![Field::new("n", DataType::Int64, false)]);
        assert_eq!(fingerprint(&a), fingerprint(&a.clone()));
        assert_ne!(fingerprint(&a), fingerprint(&b));
    }
}
