//! A prepared-statement handle comes back from the client, which may have built it: decoding it
//! and reading its bound parameters must never panic or abort, whatever the bytes.
#![no_main]

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use sqe_engine::StatementHandle;

fuzz_target!(|data: &[u8]| {
    // The bytes as a whole handle (JSON)…
    if let Ok(handle) = StatementHandle::decode(data) {
        let _ = handle.bound_rows();
    }
    // …and as the Arrow IPC stream of a handle's parameters.
    let handle = StatementHandle {
        sql: "SELECT $1".into(),
        params: Some(base64::engine::general_purpose::STANDARD.encode(data)),
        executed: false,
        nonce: None,
        schema: None,
    };
    let _ = handle.bound_rows();
});
