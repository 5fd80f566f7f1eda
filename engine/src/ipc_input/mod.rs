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
//! - **it fits the budgets** of [`IpcLimits`](crate::limits::IpcLimits), summed over the whole stream: bytes (headers and
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
//!
//! - `guard`: one stream's messages in order, each header checked and the budgets charged.
//! - `layout`: what a schema's columns are to the decoder (types it would panic on refused).
//! - `batch`: a record batch against its columns and its body.
//! - `decode`: the decode itself, and a DoPut's FlightData, panics caught.

mod batch;
mod decode;
mod guard;
mod layout;

pub use decode::{decode_or_refuse, read_flight_data};
pub use guard::check_stream;

#[cfg(test)]
#[path = "checks_tests.rs"]
mod tests;
