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
mod tests {
    use super::*;

    /// Builds a forged message header from one length or offset.
    type ForgeFn = dyn Fn(i64) -> Forged;
    use std::sync::Arc;

    use arrow::array::{
        ArrayRef, BooleanArray, Date32Array, Decimal128Array, DictionaryArray,
        FixedSizeBinaryArray, FixedSizeListArray, Int32Array, Int64Array, LargeStringArray,
        ListArray, NullArray, StringArray, StringViewArray, StructArray, TimestampMicrosecondArray,
    };
    use arrow::datatypes::{DataType, Field, Int32Type};
    use arrow::ipc::CompressionType;
    use arrow::ipc::writer::{IpcWriteOptions, StreamWriter};
    use arrow_flight::encode::{DictionaryHandling, FlightDataEncoderBuilder};
    use flatbuffers::{FlatBufferBuilder, UnionWIPOffset, WIPOffset};
    use futures::stream;

    const TINY: IpcLimits = IpcLimits {
        max_bytes: 1 << 20,
        max_rows: 5,
        max_values: 1_000,
    };

    fn simple_batch() -> RecordBatch {
        RecordBatch::try_from_iter([
            ("n", Arc::new(Int64Array::from(vec![1, 2, 3])) as ArrayRef),
            ("s", Arc::new(StringArray::from(vec!["a", "it's", "c"]))),
        ])
        .unwrap()
    }

    /// One column of (almost) every layout the decoder knows, with nulls where they matter.
    fn every_layout() -> RecordBatch {
        let long = "a string longer than twelve bytes, so it lives in a data buffer";
        let point = Arc::new(StructArray::new(
            vec![Field::new("x", DataType::Int32, true)].into(),
            vec![Arc::new(Int32Array::from(vec![Some(1), None, Some(3)])) as ArrayRef],
            Some(vec![true, false, true].into()),
        ));
        let list = ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
            Some(vec![Some(1), None]),
            None,
            Some(vec![]),
        ]);
        let fixed_list = FixedSizeListArray::from_iter_primitive::<Int32Type, _, _>(
            vec![
                Some(vec![Some(1), Some(2)]),
                None,
                Some(vec![None, Some(4)]),
            ],
            2,
        );
        let dictionary: DictionaryArray<Int32Type> =
            vec![Some("x"), None, Some("x")].into_iter().collect();
        RecordBatch::try_from_iter([
            ("null", Arc::new(NullArray::new(3)) as ArrayRef),
            (
                "bool",
                Arc::new(BooleanArray::from(vec![Some(true), None, Some(false)])),
            ),
            (
                "int",
                Arc::new(Int64Array::from(vec![Some(1), None, Some(3)])),
            ),
            (
                "utf8",
                Arc::new(StringArray::from(vec![Some("a"), None, Some(long)])),
            ),
            (
                "large",
                Arc::new(LargeStringArray::from(vec!["a", "b", long])),
            ),
            (
                "view",
                Arc::new(StringViewArray::from(vec![Some(long), None, Some("short")])),
            ),
            ("dict", Arc::new(dictionary)),
            ("struct", point),
            ("list", Arc::new(list)),
            ("fixed_list", Arc::new(fixed_list)),
            (
                "fixed_binary",
                Arc::new(
                    FixedSizeBinaryArray::try_from_iter(vec![b"ab", b"cd", b"ef"].into_iter())
                        .unwrap(),
                ),
            ),
            (
                "decimal",
                Arc::new(
                    Decimal128Array::from(vec![Some(1), None, Some(-5)])
                        .with_precision_and_scale(10, 2)
                        .unwrap(),
                ),
            ),
            ("date", Arc::new(Date32Array::from(vec![1, 2, 3]))),
            (
                "ts",
                Arc::new(TimestampMicrosecondArray::from(vec![1, 2, 3]).with_timezone("+01:00")),
            ),
        ])
        .unwrap()
    }

    fn encode(batches: Vec<RecordBatch>, options: IpcWriteOptions) -> Vec<FlightData> {
        let encoded = FlightDataEncoderBuilder::new()
            .with_options(options)
            .with_dictionary_handling(DictionaryHandling::Resend)
            .build(stream::iter(batches.into_iter().map(Ok)));
        futures::executor::block_on(encoded.try_collect()).unwrap()
    }

    fn read(data: Vec<FlightData>, limits: IpcLimits) -> Result<Vec<RecordBatch>, EngineError> {
        futures::executor::block_on(read_flight_data(
            stream::iter(data.into_iter().map(Ok)),
            limits,
        ))
    }

    fn stream_bytes(batches: &[RecordBatch], options: IpcWriteOptions) -> Vec<u8> {
        let mut buf = Vec::new();
        let mut w =
            StreamWriter::try_new_with_options(&mut buf, &batches[0].schema(), options).unwrap();
        for b in batches {
            w.write(b).unwrap();
        }
        w.finish().unwrap();
        drop(w);
        buf
    }

    /// The refusal's message; it must be INVALID_ARGUMENT.
    fn refusal<T: std::fmt::Debug>(r: Result<T, EngineError>) -> String {
        let e = r.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
        e.to_string()
    }

    fn compressed(codec: CompressionType) -> IpcWriteOptions {
        IpcWriteOptions::default()
            .try_with_compression(Some(codec))
            .unwrap()
    }

    fn finish_message(
        mut fbb: FlatBufferBuilder,
        kind: MessageHeader,
        header: WIPOffset<UnionWIPOffset>,
        body_len: i64,
    ) -> Vec<u8> {
        let mut m = ipc::MessageBuilder::new(&mut fbb);
        m.add_version(ipc::MetadataVersion::V5);
        m.add_header_type(kind);
        m.add_header(header);
        m.add_bodyLength(body_len);
        let m = m.finish();
        fbb.finish(m, None);
        fbb.finished_data().to_vec()
    }

    /// A record batch header built by hand: what a client can send, whatever it says.
    #[derive(Clone)]
    struct Forged {
        length: i64,
        nodes: Vec<(i64, i64)>,
        buffers: Vec<(i64, i64)>,
        compression: Option<CompressionType>,
        variadic: Option<Vec<i64>>,
        body_len: i64,
        dictionary_id: Option<i64>,
    }

    impl Forged {
        /// What the writer sends for `n`/`s` rows of [`simple_batch`] (no nulls).
        fn simple(rows: i64) -> Self {
            Self {
                length: rows,
                nodes: vec![(rows, 0), (rows, 0)],
                buffers: vec![(0, 0), (0, 8 * rows), (0, 0), (0, 4 * (rows + 1)), (0, 0)],
                compression: None,
                variadic: None,
                body_len: 8 * rows + 4 * (rows + 1),
                dictionary_id: None,
            }
        }

        fn header(&self) -> Vec<u8> {
            let mut fbb = FlatBufferBuilder::new();
            let nodes: Vec<_> = self
                .nodes
                .iter()
                .map(|&(l, n)| ipc::FieldNode::new(l, n))
                .collect();
            let nodes = fbb.create_vector(&nodes);
            let buffers: Vec<_> = self
                .buffers
                .iter()
                .map(|&(o, l)| ipc::Buffer::new(o, l))
                .collect();
            let buffers = fbb.create_vector(&buffers);
            let compression = self.compression.map(|codec| {
                let mut c = ipc::BodyCompressionBuilder::new(&mut fbb);
                c.add_codec(codec);
                c.add_method(ipc::BodyCompressionMethod::BUFFER);
                c.finish()
            });
            let variadic = self.variadic.as_ref().map(|v| fbb.create_vector(v));
            let mut b = ipc::RecordBatchBuilder::new(&mut fbb);
            b.add_length(self.length);
            b.add_nodes(nodes);
            b.add_buffers(buffers);
            if let Some(c) = compression {
                b.add_compression(c);
            }
            if let Some(v) = variadic {
                b.add_variadicBufferCounts(v);
            }
            let batch = b.finish();
            match self.dictionary_id {
                None => finish_message(
                    fbb,
                    MessageHeader::RecordBatch,
                    batch.as_union_value(),
                    self.body_len,
                ),
                Some(id) => {
                    let mut d = ipc::DictionaryBatchBuilder::new(&mut fbb);
                    d.add_id(id);
                    d.add_data(batch);
                    let d = d.finish();
                    finish_message(
                        fbb,
                        MessageHeader::DictionaryBatch,
                        d.as_union_value(),
                        self.body_len,
                    )
                }
            }
        }

        fn flight_data(&self) -> FlightData {
            FlightData {
                data_header: self.header().into(),
                data_body: vec![0u8; self.body_len.max(0) as usize].into(),
                ..Default::default()
            }
        }
    }

    /// A schema field built by hand.
    enum F {
        Int(i32),
        IntWithoutBitWidthTable,
        Utf8,
        Utf8View,
        Union,
        ListWithoutChild,
        Struct(Vec<F>),
        DictionaryUtf8 { id: i64, index_bits: i32 },
    }

    fn forge_field<'a>(fbb: &mut FlatBufferBuilder<'a>, f: &F) -> WIPOffset<ipc::Field<'a>> {
        let name = fbb.create_string("f");
        let (kind, ty, children, dictionary) = match f {
            F::Int(bits) => {
                let mut i = ipc::IntBuilder::new(fbb);
                i.add_bitWidth(*bits);
                i.add_is_signed(true);
                (Type::Int, Some(i.finish().as_union_value()), None, None)
            }
            F::IntWithoutBitWidthTable => (Type::Int, None, None, None),
            F::Utf8 | F::DictionaryUtf8 { .. } => {
                let t = ipc::Utf8Builder::new(fbb).finish().as_union_value();
                let dictionary = match f {
                    F::DictionaryUtf8 { id, index_bits } => {
                        let mut i = ipc::IntBuilder::new(fbb);
                        i.add_bitWidth(*index_bits);
                        i.add_is_signed(true);
                        let index = i.finish();
                        let mut d = ipc::DictionaryEncodingBuilder::new(fbb);
                        d.add_id(*id);
                        d.add_indexType(index);
                        Some(d.finish())
                    }
                    _ => None,
                };
                (Type::Utf8, Some(t), None, dictionary)
            }
            F::Utf8View => (
                Type::Utf8View,
                Some(ipc::Utf8ViewBuilder::new(fbb).finish().as_union_value()),
                None,
                None,
            ),
            F::Union => {
                let mut u = ipc::UnionBuilder::new(fbb);
                u.add_mode(ipc::UnionMode::Sparse);
                (Type::Union, Some(u.finish().as_union_value()), None, None)
            }
            F::ListWithoutChild => (
                Type::List,
                Some(ipc::ListBuilder::new(fbb).finish().as_union_value()),
                None,
                None,
            ),
            F::Struct(children) => {
                let children: Vec<_> = children.iter().map(|c| forge_field(fbb, c)).collect();
                let children = fbb.create_vector(&children);
                (
                    Type::Struct_,
                    Some(ipc::Struct_Builder::new(fbb).finish().as_union_value()),
                    Some(children),
                    None,
                )
            }
        };
        let mut b = ipc::FieldBuilder::new(fbb);
        b.add_name(name);
        b.add_nullable(true);
        b.add_type_type(kind);
        if let Some(t) = ty {
            b.add_type_(t);
        }
        if let Some(c) = children {
            b.add_children(c);
        }
        if let Some(d) = dictionary {
            b.add_dictionary(d);
        }
        b.finish()
    }

    fn forge_schema(fields: &[F], endianness: ipc::Endianness, with_fields: bool) -> Vec<u8> {
        let mut fbb = FlatBufferBuilder::new();
        let fields: Vec<_> = fields.iter().map(|f| forge_field(&mut fbb, f)).collect();
        let fields = fbb.create_vector(&fields);
        let mut s = ipc::SchemaBuilder::new(&mut fbb);
        s.add_endianness(endianness);
        if with_fields {
            s.add_fields(fields);
        }
        let s = s.finish();
        finish_message(fbb, MessageHeader::Schema, s.as_union_value(), 0)
    }

    fn schema_data(fields: &[F]) -> FlightData {
        FlightData {
            data_header: forge_schema(fields, ipc::Endianness::Little, true).into(),
            ..Default::default()
        }
    }

    /// The genuine schema message of [`simple_batch`].
    fn simple_schema() -> FlightData {
        encode(vec![simple_batch()], IpcWriteOptions::default()).remove(0)
    }

    #[test]
    fn uncompressed_batches_of_every_layout_pass_and_decode_as_sent() {
        for batch in [simple_batch(), every_layout()] {
            let data = encode(
                vec![batch.clone(), batch.clone()],
                IpcWriteOptions::default(),
            );
            assert_eq!(
                read(data, DO_PUT_LIMITS).unwrap(),
                [batch.clone(), batch.clone()]
            );

            let bytes = stream_bytes(std::slice::from_ref(&batch), IpcWriteOptions::default());
            check_stream(&bytes, DO_PUT_LIMITS).unwrap();
        }
    }

    #[test]
    fn compressed_batches_are_refused_with_a_hint_to_send_uncompressed_ipc() {
        for codec in [CompressionType::LZ4_FRAME, CompressionType::ZSTD] {
            let data = encode(vec![simple_batch()], compressed(codec));
            let message = refusal(read(data, DO_PUT_LIMITS));
            assert!(
                message.contains("accepts only uncompressed Arrow IPC"),
                "{message}"
            );

            let bytes = stream_bytes(&[simple_batch()], compressed(codec));
            let message = refusal(check_stream(&bytes, DO_PUT_LIMITS));
            assert!(
                message.contains("send it without IPC compression"),
                "{message}"
            );
        }
        // Whatever the codec: the field alone is enough, even one arrow-ipc cannot decode.
        let mut forged = Forged::simple(3);
        forged.compression = Some(CompressionType(7));
        let message = refusal(read(
            vec![simple_schema(), forged.flight_data()],
            DO_PUT_LIMITS,
        ));
        assert!(message.contains("uncompressed"), "{message}");
    }

    /// arrow-ipc would `Vec::with_capacity(2^60)` for this buffer: the process would abort.
    #[test]
    fn a_compressed_buffer_declaring_2_pow_60_bytes_is_refused_before_it_is_decoded() {
        let huge = (1u64 << 60).to_le_bytes();
        // A genuine LZ4 batch whose buffers are rewritten to declare 2^60 uncompressed bytes.
        let mut data = encode(vec![simple_batch()], compressed(CompressionType::LZ4_FRAME));
        let message = ipc::root_as_message(&data[1].data_header).unwrap();
        let extents: Vec<_> = message
            .header_as_record_batch()
            .unwrap()
            .buffers()
            .unwrap()
            .iter()
            .filter(|b| b.length() >= 8)
            .map(|b| b.offset() as usize)
            .collect();
        assert!(!extents.is_empty());
        let mut body = data[1].data_body.to_vec();
        for at in extents {
            body[at..at + 8].copy_from_slice(&huge);
        }
        data[1].data_body = body.into();
        refusal(read(data, DO_PUT_LIMITS));

        // The same by hand, for any codec, whatever arrow-ipc was built with.
        for codec in [CompressionType::LZ4_FRAME, CompressionType::ZSTD] {
            let mut forged = Forged::simple(3);
            forged.compression = Some(codec);
            forged.buffers = vec![(0, 0), (0, 16), (0, 0), (16, 16), (32, 16)];
            forged.body_len = 48;
            let mut data = forged.flight_data();
            let mut body = vec![0u8; 48];
            for at in [0, 16, 32] {
                body[at..at + 8].copy_from_slice(&huge);
            }
            data.data_body = body.into();
            refusal(read(vec![simple_schema(), data], DO_PUT_LIMITS));
        }
    }

    #[test]
    fn budgets_are_summed_over_the_whole_stream() {
        // Rows: two batches of 3 rows against a budget of 5.
        let data = encode(
            vec![simple_batch(), simple_batch()],
            IpcWriteOptions::default(),
        );
        assert_eq!(read(data[..2].to_vec(), TINY).unwrap().len(), 1);
        let message = refusal(read(data, TINY));
        assert!(message.contains("more than 5 rows"), "{message}");

        // A length no body backs (a Null column takes no bytes) still counts.
        let null_rows =
            RecordBatch::try_from_iter([("n", Arc::new(NullArray::new(6)) as ArrayRef)]).unwrap();
        refusal(read(
            encode(vec![null_rows], IpcWriteOptions::default()),
            TINY,
        ));

        // Values: every array counts, nested ones too.
        let wide = every_layout();
        let values = IpcLimits {
            max_values: 20,
            ..DO_PUT_LIMITS
        };
        let message = refusal(read(encode(vec![wide], IpcWriteOptions::default()), values));
        assert!(message.contains("more than 20 values"), "{message}");

        // Bytes: headers and bodies.
        let data = encode(vec![simple_batch(); 4], IpcWriteOptions::default());
        let total: usize = data
            .iter()
            .map(|d| d.data_header.len() + d.data_body.len())
            .sum();
        let bytes = |max_bytes| IpcLimits {
            max_bytes,
            ..DO_PUT_LIMITS
        };
        assert_eq!(read(data.clone(), bytes(total)).unwrap().len(), 4);
        let message = refusal(read(data, bytes(total - 1)));
        assert!(
            message.contains(&format!("larger than {} bytes", total - 1)),
            "{message}"
        );
    }

    #[test]
    fn buffers_must_lie_inside_the_body_they_came_with() {
        // A genuine batch whose body lost its last bytes.
        let mut data = encode(vec![simple_batch()], IpcWriteOptions::default());
        let body = data[1].data_body.clone();
        data[1].data_body = body.slice(..body.len() - 8);
        let message = refusal(read(data, DO_PUT_LIMITS));
        assert!(message.contains("malformed Arrow IPC"), "{message}");

        for buffers in [
            vec![(0, 0), (-8, 24), (0, 0), (0, 16), (0, 0)],
            vec![(0, 0), (0, -1), (0, 0), (0, 16), (0, 0)],
            vec![(0, 0), (i64::MAX, i64::MAX), (0, 0), (0, 16), (0, 0)],
            vec![(0, 0), (1 << 40, 8), (0, 0), (0, 16), (0, 0)],
        ] {
            let mut forged = Forged::simple(3);
            forged.buffers = buffers;
            refusal(read(
                vec![simple_schema(), forged.flight_data()],
                DO_PUT_LIMITS,
            ));
        }
    }

    #[test]
    fn lengths_and_null_counts_must_be_possible() {
        let cases = [
            (-1, vec![(3, 0), (3, 0)]),
            (3, vec![(-3, 0), (3, 0)]),
            (3, vec![(3, -1), (3, 0)]),
            (3, vec![(3, 4), (3, 0)]),
        ];
        for (length, nodes) in cases {
            let mut forged = Forged::simple(3);
            forged.length = length;
            forged.nodes = nodes;
            refusal(read(
                vec![simple_schema(), forged.flight_data()],
                DO_PUT_LIMITS,
            ));
        }
    }

    #[test]
    fn field_nodes_and_buffers_must_cover_the_schema() {
        let mut forged = Forged::simple(3);
        forged.nodes.pop();
        let message = refusal(read(
            vec![simple_schema(), forged.flight_data()],
            DO_PUT_LIMITS,
        ));
        assert!(message.contains("fewer field nodes"), "{message}");
        let mut forged = Forged::simple(3);
        forged.buffers.truncate(4);
        let message = refusal(read(
            vec![simple_schema(), forged.flight_data()],
            DO_PUT_LIMITS,
        ));
        assert!(message.contains("fewer buffers"), "{message}");
    }

    /// arrow-ipc asserts (panics) when a batch has more variadic counts than view columns.
    #[test]
    fn variadic_buffer_counts_must_match_the_view_columns() {
        let mut forged = Forged::simple(3);
        forged.variadic = Some(vec![0]);
        let message = refusal(read(
            vec![simple_schema(), forged.flight_data()],
            DO_PUT_LIMITS,
        ));
        assert!(message.contains("variadic"), "{message}");

        let view = || Forged {
            length: 1,
            nodes: vec![(1, 0)],
            buffers: vec![(0, 0), (0, 16)],
            compression: None,
            variadic: Some(vec![0]),
            body_len: 16,
            dictionary_id: None,
        };
        let schema = || schema_data(&[F::Utf8View]);
        assert_eq!(
            read(vec![schema(), view().flight_data()], DO_PUT_LIMITS).unwrap()[0].num_rows(),
            1
        );
        for counts in [
            None,
            Some(vec![]),
            Some(vec![-1]),
            Some(vec![i64::MAX]),
            Some(vec![0, 0]),
        ] {
            let mut forged = view();
            forged.variadic = counts;
            refusal(read(vec![schema(), forged.flight_data()], DO_PUT_LIMITS));
        }
    }

    /// arrow builds the validity bitmap of an array with nulls before validating it, and panics
    /// when it is too short (found by the statement_handle fuzz target, on a dictionary column).
    #[test]
    fn an_array_with_nulls_needs_a_validity_bitmap_that_covers_it() {
        // 64 rows: 8 bytes of bitmap are enough, 7 are not.
        let int = |validity: i64| Forged {
            length: 64,
            nodes: vec![(64, 1)],
            buffers: vec![(0, validity), (8, 512)],
            compression: None,
            variadic: None,
            body_len: 520,
            dictionary_id: None,
        };
        let indices = |validity: i64| Forged {
            length: 64,
            nodes: vec![(64, 1)],
            buffers: vec![(0, validity), (8, 256)],
            compression: None,
            variadic: None,
            body_len: 264,
            dictionary_id: None,
        };
        let point = |validity: i64| Forged {
            length: 64,
            nodes: vec![(64, 1), (64, 0)],
            buffers: vec![(0, validity), (0, 0), (8, 256)],
            compression: None,
            variadic: None,
            body_len: 264,
            dictionary_id: None,
        };
        let utf8 = |validity: i64| Forged {
            length: 64,
            nodes: vec![(64, 1)],
            buffers: vec![(0, validity), (8, 260), (268, 0)],
            compression: None,
            variadic: None,
            body_len: 268,
            dictionary_id: None,
        };
        let cases: [(Vec<F>, &ForgeFn); 4] = [
            (vec![F::Int(64)], &int),
            (
                vec![F::DictionaryUtf8 {
                    id: 0,
                    index_bits: 32,
                }],
                &indices,
            ),
            (vec![F::Struct(vec![F::Int(32)])], &point),
            (vec![F::Utf8], &utf8),
        ];
        for (fields, batch) in cases {
            let message = refusal(read(
                vec![schema_data(&fields), batch(7).flight_data()],
                DO_PUT_LIMITS,
            ));
            assert!(message.contains("validity bitmap of 7 bytes"), "{message}");
            // Long enough: arrow-ipc decodes it and finds the bitmap (all zeros) has 64 nulls,
            // not 1 — an error, not a panic.
            let message = refusal(read(
                vec![schema_data(&fields), batch(8).flight_data()],
                DO_PUT_LIMITS,
            ));
            assert!(
                message.contains("could not read the sent batches"),
                "{message}"
            );
        }
    }

    /// arrow views offsets, string views, dictionary indices and run ends as one typed slice
    /// of the whole buffer, and panics unless its length is a multiple of the value width
    /// (found by the statement_handle fuzz target, on a string view column).
    #[test]
    fn buffers_viewed_as_typed_values_hold_whole_values() {
        let view = |views: i64| Forged {
            length: 1,
            nodes: vec![(1, 0)],
            buffers: vec![(0, 0), (0, views)],
            compression: None,
            variadic: Some(vec![0]),
            body_len: 32,
            dictionary_id: None,
        };
        let utf8 = |offsets: i64| Forged {
            length: 1,
            nodes: vec![(1, 0)],
            buffers: vec![(0, 0), (0, offsets), (16, 0)],
            compression: None,
            variadic: None,
            body_len: 16,
            dictionary_id: None,
        };
        let indices = |keys: i64| Forged {
            length: 1,
            nodes: vec![(1, 0)],
            buffers: vec![(0, 0), (0, keys)],
            compression: None,
            variadic: None,
            body_len: 8,
            dictionary_id: None,
        };
        let cases: [(Vec<F>, &ForgeFn, i64, i64); 3] = [
            (vec![F::Utf8View], &view, 16, 17),
            (vec![F::Utf8], &utf8, 8, 9),
            (
                vec![F::DictionaryUtf8 {
                    id: 0,
                    index_bits: 32,
                }],
                &indices,
                4,
                6,
            ),
        ];
        for (fields, batch, whole, partial) in cases {
            let message = refusal(read(
                vec![schema_data(&fields), batch(partial).flight_data()],
                DO_PUT_LIMITS,
            ));
            assert!(
                message.contains(&format!("a buffer of {partial} bytes")),
                "{message}"
            );
            // Whole values pass the checks; what arrow-ipc then makes of the zeros is its call.
            let decoded = read(
                vec![schema_data(&fields), batch(whole).flight_data()],
                DO_PUT_LIMITS,
            );
            if let Err(e) = decoded {
                assert!(
                    e.to_string().contains("could not read the sent batches"),
                    "{e}"
                );
            }
        }
    }

    /// Each of these makes arrow-ipc's `fb_to_schema` panic.
    #[test]
    fn schemas_arrow_ipc_cannot_read_are_refused() {
        let data = |header: Vec<u8>| FlightData {
            data_header: header.into(),
            ..Default::default()
        };
        for fields in [
            vec![F::Int(7)],
            vec![F::IntWithoutBitWidthTable],
            vec![F::ListWithoutChild],
            vec![F::Struct(vec![F::Utf8, F::Int(12)])],
            vec![F::DictionaryUtf8 {
                id: 0,
                index_bits: 3,
            }],
            vec![F::Union],
        ] {
            let header = forge_schema(&fields, ipc::Endianness::Little, true);
            refusal(read(vec![data(header)], DO_PUT_LIMITS));
        }
        let no_fields = forge_schema(&[], ipc::Endianness::Little, false);
        refusal(read(vec![data(no_fields)], DO_PUT_LIMITS));
        let big_endian = forge_schema(&[F::Int(32)], ipc::Endianness::Big, true);
        refusal(read(vec![data(big_endian)], DO_PUT_LIMITS));
        // The same fields, well formed, are fine.
        let fine = forge_schema(
            &[F::Int(32), F::Struct(vec![F::Utf8])],
            ipc::Endianness::Little,
            true,
        );
        assert!(read(vec![data(fine)], DO_PUT_LIMITS).unwrap().is_empty());
    }

    #[test]
    fn dictionary_batches_need_data_and_a_dictionary_of_the_schema() {
        let schema = || {
            schema_data(&[F::DictionaryUtf8 {
                id: 3,
                index_bits: 32,
            }])
        };
        let values = |id| Forged {
            length: 1,
            nodes: vec![(1, 0)],
            buffers: vec![(0, 0), (0, 8), (8, 8)],
            compression: None,
            variadic: None,
            body_len: 16,
            dictionary_id: Some(id),
        };
        // A dictionary of the schema passes the checks (its offsets are zeros: one empty string).
        assert!(read(vec![schema(), values(3).flight_data()], DO_PUT_LIMITS).is_ok());
        let message = refusal(read(vec![schema(), values(4).flight_data()], DO_PUT_LIMITS));
        assert!(
            message.contains("dictionary 4 is not in the schema"),
            "{message}"
        );

        let mut fbb = FlatBufferBuilder::new();
        let mut d = ipc::DictionaryBatchBuilder::new(&mut fbb);
        d.add_id(3);
        let d = d.finish();
        let no_data = finish_message(fbb, MessageHeader::DictionaryBatch, d.as_union_value(), 0);
        let no_data = FlightData {
            data_header: no_data.into(),
            ..Default::default()
        };
        let message = refusal(read(vec![schema(), no_data], DO_PUT_LIMITS));
        assert!(message.contains("without data"), "{message}");
    }

    #[test]
    fn the_schema_comes_first_and_once() {
        let data = encode(vec![simple_batch()], IpcWriteOptions::default());
        let message = refusal(read(vec![data[1].clone()], DO_PUT_LIMITS));
        assert!(message.contains("before the schema"), "{message}");
        let message = refusal(read(
            vec![data[0].clone(), data[0].clone(), data[1].clone()],
            DO_PUT_LIMITS,
        ));
        assert!(message.contains("second schema"), "{message}");
        let garbage = FlightData {
            data_header: b"\x00garbage".to_vec().into(),
            ..Default::default()
        };
        refusal(read(vec![garbage], DO_PUT_LIMITS));
    }

    #[test]
    fn a_declared_body_longer_than_the_one_sent_is_refused() {
        let mut forged = Forged::simple(3);
        let mut data = forged.flight_data();
        forged.body_len += 8;
        data.data_header = forged.header().into();
        let message = refusal(read(vec![simple_schema(), data], DO_PUT_LIMITS));
        assert!(message.contains("declares a body"), "{message}");
    }

    #[test]
    fn a_stream_cut_anywhere_is_refused_or_ends_between_messages() {
        let bytes = stream_bytes(
            &[simple_batch(), simple_batch()],
            IpcWriteOptions::default(),
        );
        let mut boundaries = 0;
        for cut in 0..bytes.len() {
            match check_stream(&bytes[..cut], DO_PUT_LIMITS) {
                Ok(()) => {
                    boundaries += 1;
                    // What passes reads: up to the last whole message.
                    let read = StreamReaderCheck::read(&bytes[..cut]);
                    assert!(read.is_ok() || cut == 0, "cut at {cut}: {read:?}");
                }
                Err(e) => assert_eq!(e.code(), tonic::Code::InvalidArgument, "cut at {cut}"),
            }
        }
        // The empty stream, and after the schema and after each batch.
        assert_eq!(boundaries, 4);
        check_stream(&bytes, DO_PUT_LIMITS).unwrap();
    }

    struct StreamReaderCheck;

    impl StreamReaderCheck {
        fn read(bytes: &[u8]) -> Result<Vec<RecordBatch>, arrow::error::ArrowError> {
            arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)?.collect()
        }
    }

    #[test]
    fn framing_that_cannot_be_followed_is_refused() {
        let frame = |prefix: &[u8], header: &[u8], body: &[u8]| {
            let mut out = prefix.to_vec();
            out.extend_from_slice(&(header.len() as i32).to_le_bytes());
            out.extend_from_slice(header);
            out.extend_from_slice(body);
            out
        };
        let schema = forge_schema(&[F::Int(64), F::Utf8], ipc::Endianness::Little, true);
        let marker = [0xff; 4];
        // With and without the continuation marker (arrow-ipc's legacy framing), then the end.
        for prefix in [&marker[..], &[][..]] {
            let mut stream = frame(prefix, &schema, &[]);
            stream.extend_from_slice(&frame(prefix, &Forged::simple(3).header(), &[0; 40]));
            stream.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]);
            check_stream(&stream, DO_PUT_LIMITS).unwrap();
        }
        let mut negative = marker.to_vec();
        negative.extend_from_slice(&(-8i32).to_le_bytes());
        refusal(check_stream(&negative, DO_PUT_LIMITS));
        refusal(check_stream(&[0xff, 0xff, 0xff, 0xff, 8], DO_PUT_LIMITS));
        refusal(check_stream(
            &frame(&marker, &[0xab; 16], &[]),
            DO_PUT_LIMITS,
        ));
        // A body length that does not fit in the stream.
        let mut forged = Forged::simple(3);
        forged.body_len = i64::MAX;
        let mut stream = frame(&marker, &schema, &[]);
        stream.extend_from_slice(&frame(&marker, &forged.header(), &[0; 40]));
        refusal(check_stream(&stream, DO_PUT_LIMITS));
    }

    /// The last line of defence: input the checks do not foresee makes the request fail, not
    /// the server's task unwind.
    #[test]
    fn a_panic_while_decoding_is_an_invalid_argument() {
        let e = decode_or_refuse::<()>(|| panic!("a decoder bug")).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.to_string().contains(DECODER_PANICKED), "{e}");

        let panicking = stream::poll_fn(
            |_| -> std::task::Poll<Option<Result<FlightData, FlightError>>> {
                panic!("a decoder bug")
            },
        );
        let message = refusal(read_flight_data_from(panicking));
        assert!(message.contains(DECODER_PANICKED), "{message}");
    }

    fn read_flight_data_from<S>(stream: S) -> Result<Vec<RecordBatch>, EngineError>
    where
        S: Stream<Item = Result<FlightData, FlightError>> + Send + 'static,
    {
        futures::executor::block_on(read_flight_data(stream, DO_PUT_LIMITS))
    }

    /// Writes the seed inputs of the fuzz targets (engine/fuzz/seeds) when `SQE_FUZZ_SEEDS`
    /// names a directory; does nothing otherwise.
    #[test]
    fn fuzz_seeds() {
        use crate::flight::params::StatementHandle;
        use arrow_flight::sql::{
            CommandPreparedStatementQuery, ProstMessageExt, TicketStatementQuery,
        };
        use prost::Message;

        let Some(dir) = std::env::var_os("SQE_FUZZ_SEEDS") else {
            return;
        };
        let dir = std::path::PathBuf::from(dir);
        let write = |target: &str, name: &str, bytes: &[u8]| {
            std::fs::create_dir_all(dir.join(target)).unwrap();
            std::fs::write(dir.join(target).join(name), bytes).unwrap();
        };
        let lz4 = compressed(CompressionType::LZ4_FRAME);
        for (name, batch) in [("simple", simple_batch()), ("every_layout", every_layout())] {
            let handle = StatementHandle::new("SELECT $1")
                .with_params(std::slice::from_ref(&batch))
                .unwrap();
            write(
                "statement_handle",
                &format!("{name}.json"),
                &handle.encode(),
            );
            for (kind, options) in [("plain", IpcWriteOptions::default()), ("lz4", lz4.clone())] {
                let bytes = stream_bytes(std::slice::from_ref(&batch), options.clone());
                write("statement_handle", &format!("{name}_{kind}.arrows"), &bytes);
                let mut framed = Vec::new();
                for d in encode(vec![batch.clone()], options) {
                    for part in [&d.data_header[..], &d.data_body[..]] {
                        framed.extend_from_slice(&(part.len() as u32).to_le_bytes());
                        framed.extend_from_slice(part);
                    }
                }
                write("flight_data_stream", &format!("{name}_{kind}.bin"), &framed);
            }
            let ticket = TicketStatementQuery {
                statement_handle: handle.run_once("f".into()).encode().into(),
            };
            write(
                "ticket",
                &format!("{name}_statement"),
                &ticket.as_any().encode_to_vec(),
            );
            let prepared = CommandPreparedStatementQuery {
                prepared_statement_handle: handle.encode().into(),
            };
            write(
                "ticket",
                &format!("{name}_prepared"),
                &prepared.as_any().encode_to_vec(),
            );
        }
    }
}
