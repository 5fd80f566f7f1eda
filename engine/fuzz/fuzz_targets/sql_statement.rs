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
use libfuzzer_sys::fuzz_target;
use sqe_engine::memory::{SessionPool, functions, shared_pool};

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
    functions::install(&ctx, &pool);
    sqe_engine::sql::extend(&ctx).expect("extensions");
    ctx
}

fuzz_target!(|data: &[u8]| {
    let Ok(sql) = std::str::from_utf8(data) else {
        return;
    };
    let started = Instant::now();
    RUNTIME.block_on(async {
        let ctx = context();
        let _ = sqe_engine::sql::plan::plan(&ctx, sql).await;
    });
    let took = started.elapsed();
    assert!(took < BUDGET, "planning took {took:?}");
});
