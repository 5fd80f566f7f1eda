//! A DoGet ticket is client bytes: decoded as Flight SQL does (`Any`, then the command), then
//! as the engine does (the statement handle inside, its bound parameters). Never a panic.
#![no_main]

use arrow_flight::sql::{Any, Command};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use sqe_engine::{StatementHandle, single_row};

fuzz_target!(|data: &[u8]| {
    let Ok(any) = Any::decode(data) else {
        return;
    };
    let handle = match Command::try_from(any) {
        Ok(Command::TicketStatementQuery(t)) => t.statement_handle,
        Ok(Command::CommandPreparedStatementQuery(c)) => c.prepared_statement_handle,
        _ => return,
    };
    if let Ok(handle) = StatementHandle::decode(&handle) {
        if let Ok(rows) = handle.bound_rows() {
            let _ = single_row(rows);
        }
    }
});
