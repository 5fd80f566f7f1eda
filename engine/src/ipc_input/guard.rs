//! One stream's messages, in order: each header checked, every budget charged.

use arrow::ipc::{self, MessageHeader};

use crate::error::EngineError;
use crate::limits::IpcLimits;

use super::batch::{Spent, check_batch};
use super::layout::{Shape, malformed, shape};

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
