//! Statement text is the client's: parsed, measured against the engine's bounds and planned in a
//! plain session context (with SQE's planner extensions and bounded functions), as the engine
//! does before anything runs. Never a panic, a stack overflow, or a plan that takes longer than
//! the budget below.
#![no_main]

use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use datafusion::execution::memory_pool::MemoryPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{Expr, Visit, Visitor};
use libfuzzer_sys::fuzz_target;
use std::ops::ControlFlow;
use sqe_engine::{SessionPool, install_bounded_functions, shared_pool};

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_stack_size(sqe_engine::WORKER_STACK_BYTES)
        .enable_all()
        .build()
        .expect("runtime")
});

/// What planning one statement may take, the bounds being what they are (a release build).
const BUDGET: Duration = Duration::from_secs(5);

fn context() -> SessionContext {
    let pool: Arc<dyn MemoryPool> = SessionPool::new(shared_pool(256 << 20), 64 << 20);
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(pool.clone())
        .build_arc()
        .expect("runtime env");
    let ctx = SessionContext::new_with_config_rt(
        SessionConfig::new().with_information_schema(true),
        runtime,
    );
    install_bounded_functions(&ctx, &pool);
    sqe_engine::install_planners(&ctx).expect("extensions");
    ctx
}

/// Whether the statement names a compound identifier of more than four parts: DataFusion 53
/// panics planning one that names no struct field (`SELECT a.b.c.d.e`), which the engine turns
/// into INVALID_ARGUMENT (`exec::admission`) but libFuzzer's panic hook counts as a crash.
fn known_planner_panic(sql: &str) -> bool {
    struct Long(bool);
    impl Visitor for Long {
        type Break = ();
        fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
            if matches!(e, Expr::CompoundIdentifier(ids) if ids.len() > 4) {
                self.0 = true;
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }
    }
    let Ok(parsed) = sqe_engine::parse_statement(sql) else {
        return false;
    };
    let mut long = Long(false);
    if let DFStatement::Statement(s) = &parsed.statement {
        let _ = s.visit(&mut long);
    }
    long.0
}

fuzz_target!(|data: &[u8]| {
    let Ok(sql) = std::str::from_utf8(data) else {
        return;
    };
    if known_planner_panic(sql) {
        return;
    }
    let started = Instant::now();
    RUNTIME.block_on(async {
        let ctx = context();
        let _ = sqe_engine::plan_statement(&ctx, sql).await;
    });
    let took = started.elapsed();
    assert!(took < BUDGET, "planning took {took:?}");
});
