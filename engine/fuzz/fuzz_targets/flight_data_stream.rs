//! The FlightData of a DoPut, read as the engine reads them (each IPC message checked, then
//! decoded, then held as rows of values). Input framing: for each message a little-endian u32
//! header length, the header, a u32 body length, the body.
#![no_main]

use arrow_flight::FlightData;
use libfuzzer_sys::fuzz_target;
use sqe_engine::{DO_PUT_LIMITS, bound_rows, read_flight_data};

fn take<'a>(data: &mut &'a [u8]) -> Option<&'a [u8]> {
    let (len, rest) = data.split_first_chunk::<4>()?;
    let len = (u32::from_le_bytes(*len) as usize).min(rest.len());
    let (taken, rest) = rest.split_at(len);
    *data = rest;
    Some(taken)
}

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    let mut messages = Vec::new();
    while let Some(header) = take(&mut rest) {
        let body = take(&mut rest).unwrap_or_default();
        messages.push(Ok(FlightData {
            data_header: header.to_vec().into(),
            data_body: body.to_vec().into(),
            ..Default::default()
        }));
    }
    let read = read_flight_data(futures::stream::iter(messages), DO_PUT_LIMITS);
    if let Ok(batches) = futures::executor::block_on(read) {
        let _ = bound_rows(&batches);
    }
});
