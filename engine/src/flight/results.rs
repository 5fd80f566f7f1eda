//! Shapes of the answers: the DoGet stream type and the small results every handler builds.

use std::pin::Pin;

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::{
    FlightData, FlightDescriptor, FlightEndpoint, FlightInfo, IpcMessage, SchemaAsIpc, Ticket,
};
use futures::{Stream, TryStreamExt};
use tonic::Status;

use crate::error::EngineError;

pub type DoGetStream = Pin<Box<dyn Stream<Item = Result<FlightData, Status>> + Send + 'static>>;

/// A one-batch result that always carries its schema, even when empty.
pub fn one_batch(schema: SchemaRef, batch: Result<RecordBatch, FlightError>) -> DoGetStream {
    let stream = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(futures::stream::once(async move { batch }))
        .map_err(Status::from);
    Box::pin(stream)
}

/// FlightInfo with one endpoint whose ticket is `ticket`.
pub fn flight_info(
    schema: &Schema,
    ticket: Vec<u8>,
    descriptor: FlightDescriptor,
) -> Result<FlightInfo, EngineError> {
    Ok(FlightInfo::new()
        .try_with_schema(schema)?
        .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket)))
        .with_descriptor(descriptor)
        .with_ordered(true))
}

/// A schema as the IPC message Flight SQL puts in prepared-statement results.
pub fn schema_bytes(schema: &Schema) -> Result<bytes::Bytes, EngineError> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e: arrow::error::ArrowError| EngineError::Internal(e.to_string()))?;
    Ok(bytes)
}
