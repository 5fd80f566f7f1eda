//! Tests of `ipc_input`, in a file of their own so the source reads as source.

use super::decode::DECODER_PANICKED;
use super::*;
use crate::error::EngineError;
use crate::limits::{DO_PUT_LIMITS, IpcLimits};
use arrow::array::RecordBatch;
use arrow::ipc::{self, MessageHeader, Type};
use arrow_flight::FlightData;
use arrow_flight::error::FlightError;
use futures::{Stream, TryStreamExt};

/// Builds a forged message header from one length or offset.
type ForgeFn = dyn Fn(i64) -> Forged;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Decimal128Array, DictionaryArray, FixedSizeBinaryArray,
    FixedSizeListArray, Int32Array, Int64Array, LargeStringArray, ListArray, NullArray,
    StringArray, StringViewArray, StructArray, TimestampMicrosecondArray,
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
                FixedSizeBinaryArray::try_from_iter(vec![b"ab", b"cd", b"ef"].into_iter()).unwrap(),
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
        |_| -> std::task::Poll<Option<Result<FlightData, FlightError>>> { panic!("a decoder bug") },
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
    use crate::flight::StatementHandle;
    use arrow_flight::sql::{CommandPreparedStatementQuery, ProstMessageExt, TicketStatementQuery};
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
