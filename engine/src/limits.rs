//! Every fixed budget of one statement or request, in one place: what a client may send, what
//! a statement may spell out, and what a function may make. Each is checked where the thing it
//! bounds is read (named on each line); a new budget goes here and is checked there.
//!
//! The budgets a platform team sets are the `query` section of the configuration
//! ([`crate::config`]): a statement's time limit and the concurrent statements of the server and
//! of each user (admitted by `crate::exec::admission`), the memory of each session and user
//! (`crate::memory`).

// What a statement may spell out: checked on its text and tree (`crate::policy`) and on its
// plan (`crate::policy::check`).

/// The longest statement text accepted. Generous for generated SQL; a 20 MB statement costs
/// seconds of tokenizing and planning before anything could refuse it.
pub const MAX_SQL_BYTES: usize = 1 << 20;

/// The most nodes a logical plan may have once planned (views and subqueries expanded): each is
/// optimized and executed, and a statement's tree bounds only what it spells out.
pub const MAX_PLAN_NODES: usize = 10_000;

/// The deepest one expression may nest, counting every expression node on the way down (an
/// operator, a cast, a `CASE`, a function call, a parenthesis). `a = 1 OR a = 2 OR …` is as
/// deep as it is long: write long lists as `IN (…)`, which are wide, not deep.
pub const MAX_EXPR_DEPTH: usize = 1000;

/// The most set operations (`UNION`, `INTERSECT`, `EXCEPT`) in one query body; each is a level
/// of the plan.
pub const MAX_SET_OPERATIONS: usize = 1000;

/// The most relations (tables, subqueries in `FROM`, joined items) one statement may name.
pub const MAX_RELATIONS: usize = 1000;

/// sqlparser's recursion limit (nested parentheses, subqueries, function calls): the engine's,
/// never the session's (`datafusion.sql_parser.recursion_limit` is not settable).
pub const PARSER_RECURSION_LIMIT: usize = 50;

// What a client may send: gRPC messages (`crate::flight::transport`), Arrow IPC
// (`crate::ipc_input`), bound parameters (`crate::flight::params`, `crate::sql::bind`).

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

/// Largest message of any RPC but DoPut (tonic's own default).
pub const MAX_MESSAGE_BYTES: usize = 4 << 20;

/// Largest DoPut message (one record batch of rows to insert, or parameters).
pub const MAX_DO_PUT_MESSAGE_BYTES: usize = 64 << 20;

/// One DoPut stream. The bytes match the largest gRPC message the server accepts (64 MiB) and
/// bound what the engine holds while it collects the batches; 1 000 000 rows and 8 000 000
/// values (64 MiB of 64-bit numbers) are far more than a statement binds, and each row of a
/// prepared update runs the statement once.
pub const DO_PUT_LIMITS: IpcLimits = IpcLimits {
    max_bytes: 64 << 20,
    max_rows: 1_000_000,
    max_values: 8_000_000,
};

/// Bound values larger than this are refused: they would be echoed in every handle.
pub const MAX_BOUND_BYTES: usize = 1 << 20;

/// What the parameters inside a handle may hold (the handle is client-built as far as the
/// engine knows: it is checked each time it comes back). A query binds one row; a prepared
/// INSERT binds any number, all in one plan (`crate::sql::bind::bind_rows`).
pub const BOUND_LIMITS: IpcLimits = IpcLimits {
    max_bytes: MAX_BOUND_BYTES,
    max_rows: 100_000,
    max_values: 1_000_000,
};

/// The bound rows of one request, as the engine holds them (`ScalarValue`s), take at most this
/// many bytes. A few bytes of Arrow can stand for many values (a dictionary, a string view or a
/// list view can name the same long value in every row), so the budget is on what is built.
pub const MAX_ROW_VALUE_BYTES: usize = 256 << 20;

/// Rows bound to an INSERT whose placeholders are outside one VALUES list become one input each,
/// under one UNION ALL: planning work grows with them, so they are capped.
pub const MAX_UNION_ROWS: usize = 10_000;

// What a function may make from its arguments (`crate::memory::functions`).

/// The largest single value (a string, a list) a function may make.
pub const MAX_VALUE_BYTES: u64 = 64 << 20;

/// The most character pairs `levenshtein` may compare in one value (about a second of one
/// core's time on these machines' release builds).
pub const MAX_PAIR_WORK: u64 = 100_000_000;
