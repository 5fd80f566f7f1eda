//! Decoding what the checks let through: a DoPut's FlightData, and any decode that could still
//! panic, caught.

use arrow::array::RecordBatch;
use arrow_flight::FlightData;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use futures::{Stream, StreamExt, TryStreamExt};

use crate::error::EngineError;
use crate::limits::IpcLimits;

use super::guard::IpcGuard;
use super::layout::malformed;

/// The FlightData of a DoPut, each message checked by one [`IpcGuard`] before it passes on.
/// A refusal is a `FlightError::ExternalError` holding the [`EngineError`].
pub fn guard_flight_data<S>(
    stream: S,
    limits: IpcLimits,
) -> impl Stream<Item = Result<FlightData, FlightError>>
where
    S: Stream<Item = Result<FlightData, FlightError>>,
{
    let mut guard = IpcGuard::new(limits);
    stream.map(move |item| {
        let data = item?;
        guard
            .admit(&data.data_header, data.data_body.len())
            .map_err(|e| FlightError::ExternalError(Box::new(e)))?;
        Ok(data)
    })
}

/// Decodes the record batches of a DoPut, each message checked first.
pub async fn read_flight_data<S>(
    stream: S,
    limits: IpcLimits,
) -> Result<Vec<RecordBatch>, EngineError>
where
    S: Stream<Item = Result<FlightData, FlightError>> + Send + 'static,
{
    let decoded = FlightRecordBatchStream::new_from_flight_data(guard_flight_data(stream, limits));
    Unpanicking::new(decoded)
        .try_collect::<Vec<_>>()
        .await
        .map_err(|e| match e {
            FlightError::ExternalError(e) => match e.downcast::<EngineError>() {
                Ok(refused) => *refused,
                Err(e) => could_not_read(e),
            },
            e => could_not_read(e),
        })
}

fn could_not_read(e: impl std::fmt::Display) -> EngineError {
    EngineError::InvalidArgument(format!("could not read the sent batches: {e}"))
}

/// What a panic while decoding is reported as.
pub(super) const DECODER_PANICKED: &str = "arrow-ipc could not decode it";

/// Runs a decode of client-sent IPC. The checks above refuse every input known to make
/// arrow-ipc panic; should one they do not foresee get through, the request fails with
/// INVALID_ARGUMENT instead of unwinding through the server.
pub fn decode_or_refuse<T>(
    decode: impl FnOnce() -> Result<T, EngineError>,
) -> Result<T, EngineError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(decode))
        .unwrap_or_else(|_| Err(malformed(DECODER_PANICKED)))
}

/// A stream that ends with an error where polling it panicked (see [`decode_or_refuse`]).
pub(super) struct Unpanicking<S> {
    inner: S,
    done: bool,
}

impl<S> Unpanicking<S> {
    fn new(inner: S) -> Self {
        Self { inner, done: false }
    }
}

impl<S, T> Stream for Unpanicking<S>
where
    S: Stream<Item = Result<T, FlightError>> + Unpin,
{
    type Item = Result<T, FlightError>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        if self.done {
            return std::task::Poll::Ready(None);
        }
        let this = &mut *self;
        let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            this.inner.poll_next_unpin(cx)
        }));
        polled.unwrap_or_else(|_| {
            this.done = true;
            std::task::Poll::Ready(Some(Err(FlightError::DecodeError(DECODER_PANICKED.into()))))
        })
    }
}
