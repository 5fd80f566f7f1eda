//! A record batch's header against its schema's columns and the body it came with.

use arrow::ipc;

use crate::error::EngineError;
use crate::limits::IpcLimits;

use super::layout::{Layout, malformed};

/// The running totals of one stream.
#[derive(Debug, Default)]
pub(super) struct Spent {
    pub(super) bytes: usize,
    pub(super) rows: usize,
    pub(super) values: usize,
}

/// Checks a record batch (or a dictionary batch's data) against the columns it should hold and
/// the body it came with, and charges its values.
pub(super) fn check_batch(
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
pub(super) struct Walk<N, B, V> {
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
