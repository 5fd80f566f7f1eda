//! Tests of `params`, in a file of their own so the source reads as source.

use super::*;
use std::sync::Arc;

use crate::sql::bind::single_row;
use arrow::array::{Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
#[test]
fn statement_handles_round_trip_and_reject_garbage() {
    let h = StatementHandle::new("SELECT 'a:b' AS x").encode();
    assert_eq!(
        StatementHandle::decode(&h).unwrap().sql,
        "SELECT 'a:b' AS x"
    );
    assert!(StatementHandle::decode(b"\x00garbage").is_err());
}

#[test]
fn handles_carry_bound_rows_and_reject_garbage() {
    let schema = Arc::new(Schema::new(vec![
        Field::new("$1", DataType::Int64, true),
        Field::new("$2", DataType::Utf8, true),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(vec![1, 2])),
            Arc::new(StringArray::from(vec!["a", "b"])),
        ],
    )
    .unwrap();
    let h = StatementHandle::new("INSERT INTO t VALUES ($1, $2)")
        .with_params(&[batch])
        .unwrap();
    let back = StatementHandle::decode(&h.encode()).unwrap();
    assert_eq!(back, h);
    let rows = back.bound_rows().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1][1], ScalarValue::Utf8(Some("b".into())));
    assert!(single_row(rows).is_err());

    assert!(StatementHandle::decode(b"\x00garbage").is_err());
    let tampered = StatementHandle {
        sql: "SELECT 1".into(),
        params: Some("not base64!".into()),
        ..StatementHandle::new("SELECT 1")
    };
    assert!(tampered.bound_rows().is_err());
    assert!(
        StatementHandle::new("SELECT 1")
            .bound_rows()
            .unwrap()
            .is_empty()
    );
}

fn handle_with(params: String) -> StatementHandle {
    StatementHandle {
        sql: "SELECT $1".into(),
        params: Some(params),
        ..StatementHandle::new("SELECT $1")
    }
}

fn stream_of(batch: &RecordBatch, options: arrow::ipc::writer::IpcWriteOptions) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut w = StreamWriter::try_new_with_options(&mut buf, &batch.schema(), options).unwrap();
    w.write(batch).unwrap();
    w.finish().unwrap();
    drop(w);
    buf
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn refusal(r: Result<Vec<Vec<ScalarValue>>, EngineError>) -> String {
    let e = r.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
    e.to_string()
}

fn one_int(n: i64) -> RecordBatch {
    RecordBatch::try_from_iter([("$1", Arc::new(Int64Array::from(vec![n])) as _)]).unwrap()
}

#[test]
fn params_over_the_limit_are_refused_before_they_are_decoded() {
    // Not even base64: only the length can have refused it.
    let over = "!".repeat(MAX_BOUND_BYTES.div_ceil(3) * 4 + 1);
    let message = refusal(handle_with(over).bound_rows());
    assert!(
        message.contains(&format!("over {MAX_BOUND_BYTES} bytes")),
        "{message}"
    );
    let message = refusal(handle_with("!".repeat(8)).bound_rows());
    assert!(message.contains("not base64"), "{message}");
}

#[test]
fn compressed_params_are_refused_even_with_a_forged_length() {
    use arrow::ipc::CompressionType;
    let options = arrow::ipc::writer::IpcWriteOptions::default()
        .try_with_compression(Some(CompressionType::ZSTD))
        .unwrap();
    let long = RecordBatch::try_from_iter([(
        "$1",
        Arc::new(StringArray::from(vec!["x".repeat(200)])) as _,
    )])
    .unwrap();
    let mut bytes = stream_of(&long, options);
    let message = refusal(handle_with(b64(&bytes)).bound_rows());
    assert!(message.contains("uncompressed"), "{message}");

    // Each compressed buffer's length prefix rewritten to declare 2^60 bytes: arrow-ipc
    // would allocate that much and abort the process.
    let frame_len = |at: usize| i32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap());
    let batch_at = 8 + frame_len(0) as usize;
    let header = batch_at + 8..batch_at + 8 + frame_len(batch_at) as usize;
    let body_at = header.end;
    let offsets: Vec<usize> = arrow::ipc::root_as_message(&bytes[header])
        .unwrap()
        .header_as_record_batch()
        .unwrap()
        .buffers()
        .unwrap()
        .iter()
        .filter(|b| b.length() >= 8)
        .map(|b| body_at + b.offset() as usize)
        .collect();
    assert!(!offsets.is_empty());
    for at in offsets {
        bytes[at..at + 8].copy_from_slice(&(1u64 << 60).to_le_bytes());
    }
    let message = refusal(handle_with(b64(&bytes)).bound_rows());
    assert!(message.contains("uncompressed"), "{message}");
}

#[test]
fn truncated_or_garbled_params_are_invalid_arguments() {
    let bytes = stream_of(&one_int(7), Default::default());
    assert_eq!(
        handle_with(b64(&bytes)).bound_rows().unwrap(),
        [[ScalarValue::Int64(Some(7))]]
    );
    for cut in 1..bytes.len() - 8 {
        let r = handle_with(b64(&bytes[..cut])).bound_rows();
        // A cut between messages is a shorter stream (the batch is then missing).
        if let Err(e) = r {
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "cut at {cut}: {e}");
        }
    }
    for flip in 0..bytes.len() {
        let mut garbled = bytes.clone();
        garbled[flip] ^= 0xa5;
        if let Err(e) = handle_with(b64(&garbled)).bound_rows() {
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "byte {flip}: {e}");
        }
    }
    refusal(handle_with(String::new()).bound_rows());
}

#[test]
fn a_handle_carries_no_more_rows_than_it_can_bring_back() {
    let rows = BOUND_LIMITS.max_rows + 1;
    let many = RecordBatch::try_from_iter([(
        "$1",
        Arc::new(arrow::array::Int8Array::from(vec![1i8; rows])) as _,
    )])
    .unwrap();
    let e = StatementHandle::new("SELECT $1")
        .with_params(&[many])
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.to_string().contains("rows"), "{e}");
}

/// One long string named by every row of a dictionary: a few bytes sent, many held.
#[test]
fn bound_values_are_refused_once_they_take_more_than_the_budget() {
    let long = "x".repeat(10_000);
    let keys = arrow::array::Int32Array::from(vec![0; 1_000]);
    let values = StringArray::from(vec![long.as_str()]);
    let dictionary = arrow::array::DictionaryArray::try_new(keys, Arc::new(values)).unwrap();
    let batch = RecordBatch::try_from_iter([("$1", Arc::new(dictionary) as _)]).unwrap();
    assert_eq!(
        rows_within(std::slice::from_ref(&batch), 20 << 20)
            .unwrap()
            .len(),
        1_000
    );
    let message = refusal(rows_within(&[batch], 1 << 20));
    assert!(message.contains("more than 1048576 bytes"), "{message}");
}
