//! What client-sent Arrow IPC the engine agrees to decode.
//!
//! Clients send Arrow IPC in two places: the batches of a DoPut (bound parameters, the rows of a
//! prepared update) and the bound parameters inside a prepared-statement handle, which the client
//! hands back and may have built itself. arrow-ipc trusts the headers of what it decodes: it
//! allocates whatever uncompressed length a compressed buffer declares in its first 8 bytes (a
//! forged 2^60 aborts the process), slices buffers at the offsets the header gives (a panic past
//! the body), asserts that variadic buffer counts match the schema, and panics on schema types or
//! parameters it does not know. So every message header is inspected here, before arrow-ipc sees
//! it, and refused with INVALID_ARGUMENT unless:
//!
//! - **it is uncompressed.** The engine accepts only uncompressed IPC on input (Arrow writers'
//!   default): decompression is where arrow-ipc trusts a client-chosen length, and bound values
//!   are small enough not to need it.
//! - **it fits the budgets** of [`IpcLimits`], summed over the whole stream: bytes (headers and
//!   bodies), rows (the `length` of each record batch) and values (the length of every array,
//!   nested ones and dictionaries included, which bounds what decoding can build from arrays that
//!   take no bytes, such as `Null`).
//! - **its schema uses types arrow-ipc decodes without panicking**, little-endian, without unions
//!   (arrow-ipc slices union buffers without checking their length).
//! - **its batches agree with the schema and their body**: every field node and buffer the
//!   decoder will take is there, lengths are not negative, every buffer lies inside the body,
//!   the validity bitmap of an array with nulls covers the array, buffers arrow views as typed
//!   slices (offsets, string views, dictionary indices, run ends) hold whole values, variadic
//!   buffer counts match the view columns, and a dictionary batch names a dictionary of the
//!   schema. None of this needs decoding.
//!
//! Decoding itself runs under [`decode_or_refuse`] (and, for DoPut, a stream that does the
//! same): should input these checks do not foresee still make arrow-ipc panic, the request
//! fails with INVALID_ARGUMENT. The fuzz targets in `engine/fuzz` report such panics all the
//! same, so each one found gets its check here.

use std::collections::HashMap;

use arrow::array::RecordBatch;
use arrow::ipc::{self, MessageHeader, Type};
use arrow_flight::FlightData;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use futures::{Stream, StreamExt, TryStreamExt};

use crate::error::EngineError;

/// How much one request may send, summed over all its IPC messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpcLimits {
    /// Header and body bytes.
    pub max_bytes: usize,
    /// Rows: the sum of the record batches' lengths.
    pub max_rows: usize,
    /// Values: the sum of the lengths of all arrays (field nodes), nested ones included.
    pub max_values: usize,
}

/// One DoPut stream. The bytes match the largest gRPC message the server accepts (64 MiB) and
/// bound what the engine holds while it collects the batches; 1 000 000 rows and 8 000 000
/// values (64 MiB of 64-bit numbers) are far more than a statement binds, and each row of a
/// prepared update runs the statement once.
pub const DO_PUT_LIMITS: IpcLimits = IpcLimits {
    max_bytes: 64 << 20,
    max_rows: 1_000_000,
    max_values: 8_000_000,
};

/// Anything refused here: the message says what, for the client.
fn malformed(what: impl std::fmt::Display) -> EngineError {
    EngineError::InvalidArgument(format!("malformed Arrow IPC: {what}"))
}

/// How the decoder walks a column: which field nodes and buffers it takes, in order.
#[derive(Debug, Clone, PartialEq)]
enum Layout {
    /// One node, no buffer.
    Null,
    /// One node, a validity and a values buffer (fixed width types, booleans).
    Fixed,
    /// Like `Fixed`, for integers of this many bytes that arrow views as one typed slice (the
    /// indices of a dictionary-encoded column, run ends).
    Indices(usize),
    /// One node; validity, offsets (of this many bytes) and data buffers.
    Bytes(usize),
    /// One node; validity, views and as many data buffers as its variadic count says.
    View,
    /// One node; validity and offsets (of this many bytes) buffers; the child (lists, large
    /// lists, maps).
    List(usize, Box<Layout>),
    /// One node; validity, offsets and sizes (of this many bytes) buffers; the child.
    ListView(usize, Box<Layout>),
    /// One node; a validity buffer; the child.
    FixedSizeList(Box<Layout>),
    /// One node; a validity buffer; the children.
    Struct(Vec<Layout>),
    /// One node, no buffer; the run ends and the values.
    RunEnds(Box<Layout>, Box<Layout>),
}

/// What the stream's schema says about the batches that follow it.
#[derive(Debug)]
struct Shape {
    columns: Vec<Layout>,
    /// The values of each dictionary, by id. Like arrow-ipc, the first field with an id decides.
    dictionaries: HashMap<i64, Layout>,
}

/// The running totals of one stream.
#[derive(Debug, Default)]
struct Spent {
    bytes: usize,
    rows: usize,
    values: usize,
}

/// Checks the messages of one IPC stream in order, before they are decoded.
#[derive(Debug)]
pub struct IpcGuard {
    limits: IpcLimits,
    spent: Spent,
    shape: Option<Shape>,
}

impl IpcGuard {
    pub fn new(limits: IpcLimits) -> Self {
        Self {
            limits,
            spent: Spent::default(),
            shape: None,
        }
    }

    /// Checks one message: its flatbuffer header and the length of the body that came with it.
    pub fn admit(&mut self, header: &[u8], body_len: usize) -> Result<(), EngineError> {
        self.charge(header.len(), body_len)?;
        let message = ipc::root_as_message(header)
            .map_err(|e| malformed(format!("the message header does not parse ({e})")))?;
        self.check(message, body_len)
    }

    fn charge(&mut self, header_len: usize, body_len: usize) -> Result<(), EngineError> {
        self.spent.bytes = self
            .spent
            .bytes
            .saturating_add(header_len)
            .saturating_add(body_len);
        if self.spent.bytes > self.limits.max_bytes {
            return Err(EngineError::InvalidArgument(format!(
                "the sent Arrow data is larger than {} bytes; send fewer rows per request",
                self.limits.max_bytes
            )));
        }
        Ok(())
    }

    fn check(&mut self, message: ipc::Message, body_len: usize) -> Result<(), EngineError> {
        let declared = message.bodyLength();
        if !usize::try_from(declared).is_ok_and(|d| d <= body_len) {
            return Err(malformed(format!(
                "a message declares a body of {declared} bytes but carries {body_len}"
            )));
        }
        match message.header_type() {
            MessageHeader::Schema => {
                if self.shape.is_some() {
                    return Err(malformed("a second schema in one stream"));
                }
                let schema = message
                    .header_as_schema()
                    .ok_or_else(|| malformed("a schema message without a schema"))?;
                self.shape = Some(shape(schema)?);
                Ok(())
            }
            MessageHeader::RecordBatch => {
                let shape = self
                    .shape
                    .as_ref()
                    .ok_or_else(|| malformed("a record batch before the schema"))?;
                let batch = message
                    .header_as_record_batch()
                    .ok_or_else(|| malformed("a record batch message without a record batch"))?;
                check_batch(
                    batch,
                    body_len,
                    &shape.columns,
                    &self.limits,
                    &mut self.spent,
                )?;
                self.spent.rows = self.spent.rows.saturating_add(batch.length() as usize);
                if self.spent.rows > self.limits.max_rows {
                    return Err(EngineError::InvalidArgument(format!(
                        "the sent batches hold more than {} rows; send fewer rows per request",
                        self.limits.max_rows
                    )));
                }
                Ok(())
            }
            MessageHeader::DictionaryBatch => {
                let shape = self
                    .shape
                    .as_ref()
                    .ok_or_else(|| malformed("a dictionary batch before the schema"))?;
                let dictionary = message
                    .header_as_dictionary_batch()
                    .ok_or_else(|| malformed("a dictionary message without a dictionary"))?;
                let data = dictionary
                    .data()
                    .ok_or_else(|| malformed("a dictionary batch without data"))?;
                let id = dictionary.id();
                let values = shape
                    .dictionaries
                    .get(&id)
                    .ok_or_else(|| malformed(format!("dictionary {id} is not in the schema")))?;
                check_batch(
                    data,
                    body_len,
                    std::slice::from_ref(values),
                    &self.limits,
                    &mut self.spent,
                )
            }
            // Carries nothing to decode (arrow-flight passes it on as is).
            MessageHeader::NONE => Ok(()),
            other => Err(malformed(format!(
                "unexpected {} message",
                other.variant_name().unwrap_or("unknown")
            ))),
        }
    }
}

/// Checks an IPC stream (as `StreamWriter` writes it: for each message an optional continuation
/// marker `0xFFFFFFFF`, the header length as a little-endian i32, the flatbuffer header, the
/// body), before `StreamReader` reads it. The stream ends at an end-of-stream marker (length 0;
/// what follows it is not read, by arrow-ipc either) or exactly at the end of the bytes.
pub fn check_stream(bytes: &[u8], limits: IpcLimits) -> Result<(), EngineError> {
    let truncated = || malformed("the stream is truncated");
    let mut guard = IpcGuard::new(limits);
    let mut rest = bytes;
    while !rest.is_empty() {
        let (prefix, after) = match rest {
            [0xff, 0xff, 0xff, 0xff, a, b, c, d, after @ ..] => ([*a, *b, *c, *d], after),
            [0xff, 0xff, 0xff, 0xff, ..] => return Err(truncated()),
            [a, b, c, d, after @ ..] => ([*a, *b, *c, *d], after),
            _ => return Err(truncated()),
        };
        let header_len = match i32::from_le_bytes(prefix) {
            0 => return Ok(()),
            n => usize::try_from(n)
                .map_err(|_| malformed(format!("a message header length of {n}")))?,
        };
        let header = after.get(..header_len).ok_or_else(truncated)?;
        let message = ipc::root_as_message(header)
            .map_err(|e| malformed(format!("the message header does not parse ({e})")))?;
        let body_len = usize::try_from(message.bodyLength())
            .map_err(|_| malformed(format!("a message body length of {}", message.bodyLength())))?;
        let end = header_len
            .checked_add(body_len)
            .filter(|&end| end <= after.len())
            .ok_or_else(truncated)?;
        guard.charge(header_len, body_len)?;
        guard.check(message, body_len)?;
        rest = &after[end..];
    }
    Ok(())
}

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
const DECODER_PANICKED: &str = "arrow-ipc could not decode it";

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
struct Unpanicking<S> {
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

/// The shape of a schema, refusing what `arrow_ipc::convert::fb_to_schema` would panic on.
fn shape(schema: ipc::Schema) -> Result<Shape, EngineError> {
    if schema.endianness() != ipc::Endianness::Little {
        return Err(malformed("big-endian data is not accepted"));
    }
    let fields = schema
        .fields()
        .ok_or_else(|| malformed("a schema without fields"))?;
    let mut dictionaries = HashMap::new();
    let columns = fields
        .iter()
        .map(|f| column_layout(f, &mut dictionaries))
        .collect::<Result<_, _>>()?;
    Ok(Shape {
        columns,
        dictionaries,
    })
}

/// A field as a column of a batch: a dictionary-encoded one is its indices (its values come in
/// dictionary batches, recorded under its id).
fn column_layout(
    field: ipc::Field,
    dictionaries: &mut HashMap<i64, Layout>,
) -> Result<Layout, EngineError> {
    let Some(dictionary) = field.dictionary() else {
        return value_layout(field, dictionaries);
    };
    let index = dictionary
        .indexType()
        .ok_or_else(|| malformed("a dictionary without an index type"))?;
    let index_bytes = int_bytes(index.bitWidth())?;
    // This field comes before the fields nested in it (arrow-ipc's order): it decides its id.
    let id = dictionary.id();
    let first = !dictionaries.contains_key(&id);
    let values = value_layout(field, dictionaries)?;
    if first {
        dictionaries.insert(id, values);
    }
    Ok(Layout::Indices(index_bytes))
}

/// The bytes of an integer of `bits` bits, if arrow-ipc knows it.
fn int_bytes(bits: i32) -> Result<usize, EngineError> {
    match bits {
        8 | 16 | 32 | 64 => Ok(bits as usize / 8),
        _ => Err(malformed(format!("an integer of {bits} bits"))),
    }
}

/// A field's values, checked as `arrow_ipc::convert::get_data_type` reads them.
fn value_layout(
    field: ipc::Field,
    dictionaries: &mut HashMap<i64, Layout>,
) -> Result<Layout, EngineError> {
    let ty = field.type_type();
    let missing = || malformed(format!("a {ty:?} field without its type parameters"));
    let unsupported = |what: String| malformed(format!("a {ty:?} field with {what}"));
    let children = || field.children().map(|c| c.iter().collect::<Vec<_>>());
    let only_child = |dictionaries: &mut HashMap<i64, Layout>| match children().as_deref() {
        Some([child]) => column_layout(*child, dictionaries).map(Box::new),
        _ => Err(malformed(format!(
            "a {ty:?} field without exactly one child"
        ))),
    };
    Ok(match ty {
        Type::Null => Layout::Null,
        Type::Bool => Layout::Fixed,
        Type::Int => {
            int_bytes(field.type_as_int().ok_or_else(missing)?.bitWidth())?;
            Layout::Fixed
        }
        Type::FloatingPoint => match field
            .type_as_floating_point()
            .ok_or_else(missing)?
            .precision()
        {
            ipc::Precision::HALF | ipc::Precision::SINGLE | ipc::Precision::DOUBLE => Layout::Fixed,
            p => return Err(unsupported(format!("precision {p:?}"))),
        },
        Type::Decimal => {
            let d = field.type_as_decimal().ok_or_else(missing)?;
            let max_precision = match d.bitWidth() {
                32 => 9,
                64 => 18,
                128 => 38,
                256 => 76,
                bits => return Err(unsupported(format!("{bits} bits"))),
            };
            if !(1..=max_precision).contains(&d.precision())
                || !(-128..=d.precision()).contains(&d.scale())
            {
                return Err(unsupported(format!(
                    "precision {} and scale {}",
                    d.precision(),
                    d.scale()
                )));
            }
            Layout::Fixed
        }
        Type::Date => match field.type_as_date().ok_or_else(missing)?.unit() {
            ipc::DateUnit::DAY | ipc::DateUnit::MILLISECOND => Layout::Fixed,
            u => return Err(unsupported(format!("unit {u:?}"))),
        },
        Type::Time => {
            let t = field.type_as_time().ok_or_else(missing)?;
            match (t.bitWidth(), t.unit()) {
                (32, ipc::TimeUnit::SECOND | ipc::TimeUnit::MILLISECOND)
                | (64, ipc::TimeUnit::MICROSECOND | ipc::TimeUnit::NANOSECOND) => Layout::Fixed,
                (bits, unit) => return Err(unsupported(format!("{bits} bits in {unit:?}"))),
            }
        }
        Type::Timestamp => time_unit(field.type_as_timestamp().ok_or_else(missing)?.unit())
            .map_err(|u| unsupported(format!("unit {u:?}")))?,
        Type::Duration => time_unit(field.type_as_duration().ok_or_else(missing)?.unit())
            .map_err(|u| unsupported(format!("unit {u:?}")))?,
        Type::Interval => match field.type_as_interval().ok_or_else(missing)?.unit() {
            ipc::IntervalUnit::YEAR_MONTH
            | ipc::IntervalUnit::DAY_TIME
            | ipc::IntervalUnit::MONTH_DAY_NANO => Layout::Fixed,
            u => return Err(unsupported(format!("unit {u:?}"))),
        },
        Type::FixedSizeBinary => {
            let width = field
                .type_as_fixed_size_binary()
                .ok_or_else(missing)?
                .byteWidth();
            if width < 0 {
                return Err(unsupported(format!("width {width}")));
            }
            Layout::Fixed
        }
        Type::Binary | Type::Utf8 => Layout::Bytes(4),
        Type::LargeBinary | Type::LargeUtf8 => Layout::Bytes(8),
        Type::BinaryView | Type::Utf8View => Layout::View,
        Type::List => Layout::List(4, only_child(dictionaries)?),
        Type::LargeList => Layout::List(8, only_child(dictionaries)?),
        Type::Map => {
            field.type_as_map().ok_or_else(missing)?;
            Layout::List(4, only_child(dictionaries)?)
        }
        Type::ListView => Layout::ListView(4, only_child(dictionaries)?),
        Type::LargeListView => Layout::ListView(8, only_child(dictionaries)?),
        Type::FixedSizeList => {
            let size = field
                .type_as_fixed_size_list()
                .ok_or_else(missing)?
                .listSize();
            if size < 0 {
                return Err(unsupported(format!("size {size}")));
            }
            Layout::FixedSizeList(only_child(dictionaries)?)
        }
        Type::Struct_ => Layout::Struct(
            children()
                .unwrap_or_default()
                .into_iter()
                .map(|c| column_layout(c, dictionaries))
                .collect::<Result<_, _>>()?,
        ),
        Type::RunEndEncoded => match children().as_deref() {
            Some([run_ends, values]) if run_ends.dictionary().is_none() => {
                let run_ends = run_ends
                    .type_as_int()
                    .ok_or_else(|| malformed("a RunEndEncoded field without integer run ends"))?;
                Layout::RunEnds(
                    Box::new(Layout::Indices(int_bytes(run_ends.bitWidth())?)),
                    Box::new(column_layout(*values, dictionaries)?),
                )
            }
            _ => {
                return Err(malformed(
                    "a RunEndEncoded field without integer run ends and values",
                ));
            }
        },
        Type::Union => {
            return Err(EngineError::InvalidArgument(
                "union-typed columns are not accepted".into(),
            ));
        }
        other => return Err(malformed(format!("an unknown type {other:?}"))),
    })
}

fn time_unit(unit: ipc::TimeUnit) -> Result<Layout, ipc::TimeUnit> {
    match unit {
        ipc::TimeUnit::SECOND
        | ipc::TimeUnit::MILLISECOND
        | ipc::TimeUnit::MICROSECOND
        | ipc::TimeUnit::NANOSECOND => Ok(Layout::Fixed),
        u => Err(u),
    }
}

/// Checks a record batch (or a dictionary batch's data) against the columns it should hold and
/// the body it came with, and charges its values.
fn check_batch(
    batch: ipc::RecordBatch,
    body_len: usize,
    columns: &[Layout],
    limits: &IpcLimits,
    spent: &mut Spent,
) -> Result<(), EngineError> {
    if let Some(compression) = batch.compression() {
        let codec = compression.codec();
        return Err(EngineError::InvalidArgument(format!(
            "the sent Arrow data is compressed ({}); the engine accepts only uncompressed Arrow \
             IPC: send it without IPC compression",
            codec.variant_name().unwrap_or("unknown codec")
        )));
    }
    if batch.length() < 0 {
        return Err(malformed(format!("a batch of {} rows", batch.length())));
    }
    let nodes = batch
        .nodes()
        .ok_or_else(|| malformed("a batch without field nodes"))?;
    let buffers = batch
        .buffers()
        .ok_or_else(|| malformed("a batch without buffers"))?;
    for node in nodes.iter() {
        if node.length() < 0 || node.null_count() < 0 || node.null_count() > node.length() {
            return Err(malformed(format!(
                "an array of length {} with {} nulls",
                node.length(),
                node.null_count()
            )));
        }
        spent.values = spent.values.saturating_add(node.length() as usize);
    }
    if spent.values > limits.max_values {
        return Err(EngineError::InvalidArgument(format!(
            "the sent batches hold more than {} values; send fewer rows per request",
            limits.max_values
        )));
    }
    for buffer in buffers.iter() {
        let inside = usize::try_from(buffer.offset())
            .ok()
            .zip(usize::try_from(buffer.length()).ok())
            .and_then(|(offset, length)| offset.checked_add(length))
            .is_some_and(|end| end <= body_len);
        if !inside {
            return Err(malformed(format!(
                "a buffer at offset {} of length {} in a body of {body_len} bytes",
                buffer.offset(),
                buffer.length()
            )));
        }
    }
    let mut walk = Walk {
        nodes: nodes.iter(),
        buffers: buffers.iter(),
        variadic: batch.variadicBufferCounts().into_iter().flatten(),
    };
    for column in columns {
        walk.column(column)?;
    }
    if walk.variadic.next().is_some() {
        return Err(malformed("more variadic buffer counts than view columns"));
    }
    Ok(())
}

/// The field nodes, buffers and variadic counts of a batch, taken in the decoder's order.
struct Walk<N, B, V> {
    nodes: N,
    buffers: B,
    variadic: V,
}

impl<'a, N, B, V> Walk<N, B, V>
where
    N: Iterator<Item = &'a ipc::FieldNode>,
    B: Iterator<Item = &'a ipc::Buffer> + ExactSizeIterator,
    V: Iterator<Item = i64>,
{
    fn node(&mut self) -> Result<&'a ipc::FieldNode, EngineError> {
        self.nodes
            .next()
            .ok_or_else(|| malformed("fewer field nodes than the schema has arrays"))
    }

    fn buffer(&mut self) -> Result<&'a ipc::Buffer, EngineError> {
        self.buffers
            .next()
            .ok_or_else(|| malformed("fewer buffers than the schema's arrays have"))
    }

    /// A buffer arrow views as one slice of `width`-byte values (`Buffer::typed_data`, which
    /// panics unless the length is a multiple of the width).
    fn typed_buffer(&mut self, width: usize) -> Result<(), EngineError> {
        let buffer = self.buffer()?;
        if buffer.length() % width as i64 != 0 {
            return Err(malformed(format!(
                "a buffer of {} bytes holding {width}-byte values",
                buffer.length()
            )));
        }
        Ok(())
    }

    fn buffers(&mut self, n: usize) -> Result<(), EngineError> {
        for _ in 0..n {
            self.buffer()?;
        }
        Ok(())
    }

    /// An array's node and validity buffer. arrow builds the bitmap of an array with nulls
    /// (`BooleanBuffer::new`) before it validates anything, and panics if it is too short.
    fn node_and_validity(&mut self) -> Result<(), EngineError> {
        let node = self.node()?;
        let validity = self.buffer()?;
        if node.null_count() > 0 && validity.length().saturating_mul(8) < node.length() {
            return Err(malformed(format!(
                "an array of {} values with nulls and a validity bitmap of {} bytes",
                node.length(),
                validity.length()
            )));
        }
        Ok(())
    }

    fn column(&mut self, layout: &Layout) -> Result<(), EngineError> {
        match layout {
            Layout::Null => {
                self.node()?;
            }
            Layout::Fixed => {
                self.node_and_validity()?;
                self.buffers(1)?;
            }
            Layout::Indices(width) => {
                self.node_and_validity()?;
                self.typed_buffer(*width)?;
            }
            Layout::Bytes(offset_width) => {
                self.node_and_validity()?;
                self.typed_buffer(*offset_width)?;
                self.buffers(1)?;
            }
            Layout::View => {
                let count = self
                    .variadic
                    .next()
                    .ok_or_else(|| malformed("a view column without a variadic buffer count"))?;
                self.node_and_validity()?;
                self.typed_buffer(16)?;
                match usize::try_from(count) {
                    Ok(n) if n <= self.buffers.len() => self.buffers(n)?,
                    _ => return Err(malformed(format!("a variadic buffer count of {count}"))),
                }
            }
            Layout::List(offset_width, child) => {
                self.node_and_validity()?;
                self.typed_buffer(*offset_width)?;
                self.column(child)?;
            }
            Layout::ListView(offset_width, child) => {
                self.node_and_validity()?;
                self.typed_buffer(*offset_width)?;
                self.typed_buffer(*offset_width)?;
                self.column(child)?;
            }
            Layout::FixedSizeList(child) => {
                self.node_and_validity()?;
                self.column(child)?;
            }
            Layout::Struct(children) => {
                self.node_and_validity()?;
                for child in children {
                    self.column(child)?;
                }
            }
            Layout::RunEnds(run_ends, values) => {
                self.node()?;
                self.column(run_ends)?;
                self.column(values)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "ipc_input_tests.rs"]
mod tests;
