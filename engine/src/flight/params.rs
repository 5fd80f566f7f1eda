//! Statement handles and the parameter values clients send.
//!
//! Bound values travel inside the statement handle as an Arrow IPC stream, which keeps handles
//! stateless: nothing is stored per statement, and a handle means nothing without a session.
//! Binding them to a plan is the SQL layer's (`crate::sql::bind`).

use std::io::Cursor;

use arrow::array::RecordBatch;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use base64::Engine as _;

use datafusion::common::ScalarValue;
use serde::{Deserialize, Serialize};

use crate::error::EngineError;
use crate::ipc_input;
use crate::limits::{BOUND_LIMITS, MAX_BOUND_BYTES, MAX_ROW_VALUE_BYTES};

/// Each row of the bound batches as one set of positional values.
pub fn rows(batches: &[RecordBatch]) -> Result<Vec<Vec<ScalarValue>>, EngineError> {
    rows_within(batches, MAX_ROW_VALUE_BYTES)
}

fn rows_within(
    batches: &[RecordBatch],
    max_bytes: usize,
) -> Result<Vec<Vec<ScalarValue>>, EngineError> {
    let mut out = Vec::new();
    let mut held = 0usize;
    for batch in batches {
        for row in 0..batch.num_rows() {
            let mut values = Vec::with_capacity(batch.num_columns());
            for column in batch.columns() {
                let value = ScalarValue::try_from_array(column, row)?;
                held = held.saturating_add(value.size());
                if held > max_bytes {
                    return Err(EngineError::InvalidArgument(format!(
                        "the bound values take more than {max_bytes} bytes once read; \
                         bind fewer or smaller values"
                    )));
                }
                values.push(value);
            }
            out.push(values);
        }
    }
    Ok(out)
}

/// What a statement or prepared-statement handle carries: the SQL and, once bound, the
/// parameter values (Arrow IPC stream, base64).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatementHandle {
    pub sql: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<String>,
    /// Set on tickets of statements that already ran while planning (DDL): DoGet returns an
    /// empty result instead of running them again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub executed: bool,
    /// Makes each FlightInfo's ticket unique, so cancelling one run never hits another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// The fingerprint of the result schema the run's FlightInfo announced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
}

impl StatementHandle {
    pub fn new(sql: &str) -> Self {
        Self {
            sql: sql.to_string(),
            params: None,
            executed: false,
            nonce: None,
            schema: None,
        }
    }

    /// This statement as the ticket of one run that streams the schema `fingerprint` names.
    pub fn run_once(&self, fingerprint: String) -> Self {
        Self {
            nonce: Some(format!("{:032x}", rand::random::<u128>())),
            schema: Some(fingerprint),
            ..self.clone()
        }
    }

    /// The ticket of a statement that has already run.
    pub fn executed(&self) -> Self {
        Self {
            sql: self.sql.clone(),
            params: None,
            executed: true,
            nonce: None,
            schema: None,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, EngineError> {
        serde_json::from_slice(bytes)
            .map_err(|_| EngineError::InvalidArgument("unknown statement handle".into()))
    }

    /// The same statement with these values bound (replacing earlier ones).
    pub fn with_params(&self, batches: &[RecordBatch]) -> Result<Self, EngineError> {
        let Some(first) = batches.first() else {
            return Ok(Self::new(&self.sql));
        };
        let mut buf = Vec::new();
        {
            let mut w = StreamWriter::try_new(&mut buf, &first.schema())?;
            for b in batches {
                w.write(b)?;
            }
            w.finish()?;
        }
        if buf.len() > MAX_BOUND_BYTES {
            return Err(EngineError::InvalidArgument(format!(
                "bound parameters are {} bytes; at most {MAX_BOUND_BYTES} are accepted",
                buf.len()
            )));
        }
        // What `bound_rows` will accept when the handle comes back.
        ipc_input::check_stream(&buf, BOUND_LIMITS)?;
        Ok(Self {
            sql: self.sql.clone(),
            params: Some(base64::engine::general_purpose::STANDARD.encode(buf)),
            ..Self::new(&self.sql)
        })
    }

    /// The bound rows; empty when nothing was bound. The parameters are checked before they
    /// are decoded ([`ipc_input`]): the handle may have been built by the client.
    pub fn bound_rows(&self) -> Result<Vec<Vec<ScalarValue>>, EngineError> {
        let Some(b64) = &self.params else {
            return Ok(Vec::new());
        };
        // Base64 takes 4 characters for every 3 bytes.
        if b64.len() > MAX_BOUND_BYTES.div_ceil(3) * 4 {
            return Err(unknown_handle(format!(
                "its bound parameters are over {MAX_BOUND_BYTES} bytes"
            )));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| unknown_handle("its bound parameters are not base64"))?;
        ipc_input::check_stream(&bytes, BOUND_LIMITS).map_err(unknown_handle)?;
        let unreadable = |e: arrow::error::ArrowError| {
            EngineError::InvalidArgument(format!("its bound parameters do not read: {e}"))
        };
        let batches = ipc_input::decode_or_refuse(|| {
            StreamReader::try_new(Cursor::new(bytes), None)
                .map_err(unreadable)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(unreadable)
        })
        .map_err(unknown_handle)?;
        rows(&batches)
    }
}

fn unknown_handle(why: impl std::fmt::Display) -> EngineError {
    EngineError::InvalidArgument(format!("unknown statement handle: {why}"))
}

#[cfg(test)]
#[path = "params_tests.rs"]
mod tests;
