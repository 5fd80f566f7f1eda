//! Scalar functions whose result can dwarf their arguments, bounded and paid for before they
//! run.
//!
//! DataFusion's functions allocate their results outside any memory pool: `repeat('x',
//! 1100000000)` makes a 1.1 GB string however small the session's share. Every function is
//! classified (a unit test fails on one that is not): most produce at most a constant times
//! their arguments, which the pool already holds or bounds; the ones in [`GROWERS`] get their
//! result's size worked out from their arguments first. A value over [`MAX_VALUE_BYTES`], or a
//! batch's results that the session's share cannot hold, is RESOURCE_EXHAUSTED before anything
//! is allocated; what fits is reserved from the share while the function runs.

use std::any::Any;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use super::result_size::{Growth, named_width, result_size};
use crate::limits::{MAX_PAIR_WORK, MAX_VALUE_BYTES};
use arrow::datatypes::DataType;
use arrow::datatypes::FieldRef;
use datafusion::common::ExprSchema;
use datafusion::common::config::ConfigOptions;
use datafusion::error::{DataFusionError, Result as DFResult};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool};
use datafusion::logical_expr::interval_arithmetic::Interval;
use datafusion::logical_expr::preimage::PreimageResult;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::sort_properties::{ExprProperties, SortProperties};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ExpressionPlacement, ReturnFieldArgs, ScalarFunctionArgs,
    ScalarUDF, ScalarUDFImpl, Signature,
};
use datafusion::prelude::Expr;
use datafusion::prelude::SessionContext;

/// `arrow_cast` to a type at most this wide per value is left to DataFusion (it becomes a plain
/// `CAST`, at most a constant times its argument); wider targets stay this wrapper's, which
/// reserves their results before casting.
const PLAIN_CAST_WIDTH: u64 = 1024;

/// The functions whose result can be larger than a constant times their arguments.
const GROWERS: &[(&str, Growth)] = &[
    ("repeat", Growth::Repeat),
    ("lpad", Growth::Pad),
    ("rpad", Growth::Pad),
    ("array_repeat", Growth::Copies),
    ("array_resize", Growth::Resize),
    ("range", Growth::Series),
    ("generate_series", Growth::Series),
    ("replace", Growth::Replace),
    ("regexp_replace", Growth::RegexpReplace),
    ("arrow_cast", Growth::Cast),
    ("array_replace", Growth::ReplaceElements),
    ("array_replace_n", Growth::ReplaceElements),
    ("array_replace_all", Growth::ReplaceElements),
    ("array_to_string", Growth::Join),
    ("levenshtein", Growth::PairWork),
];

/// Functions whose result is at most a constant times the size of their arguments (or of a
/// row): the arguments are already held or bounded by the pool, so these need nothing more.
#[cfg(test)]
const AT_MOST_THEIR_ARGUMENTS: &[&str] = &[
    "abs",
    "acos",
    "acosh",
    "array_any_value",
    "array_append",
    "array_concat",
    "array_dims",
    "array_distance",
    "array_distinct",
    "array_element",
    "array_empty",
    "array_except",
    "array_has",
    "array_has_all",
    "array_has_any",
    "array_intersect",
    "array_length",
    "array_max",
    "array_min",
    "array_ndims",
    "array_pop_back",
    "array_pop_front",
    "array_position",
    "array_positions",
    "array_prepend",
    "array_remove",
    "array_remove_all",
    "array_remove_n",
    "array_reverse",
    "array_slice",
    "array_sort",
    "array_union",
    "arrays_overlap",
    "arrays_zip",
    "arrow_metadata",
    "arrow_typeof",
    "ascii",
    "asin",
    "asinh",
    "atan",
    "atan2",
    "atanh",
    "bit_length",
    "btrim",
    "cardinality",
    "cbrt",
    "ceil",
    "character_length",
    "chr",
    "coalesce",
    "concat",
    "concat_ws",
    "contains",
    "cos",
    "cosh",
    "cot",
    "current_date",
    "current_time",
    "date_bin",
    "date_part",
    "date_trunc",
    "decode",
    "degrees",
    "digest",
    "empty",
    "encode",
    "ends_with",
    "exp",
    "factorial",
    "find_in_set",
    "flatten",
    "floor",
    "from_unixtime",
    "gcd",
    "get_field",
    "greatest",
    "initcap",
    "isnan",
    "iszero",
    "lcm",
    "least",
    "left",
    "length",
    "ln",
    "log",
    "log10",
    "log2",
    "lower",
    "ltrim",
    "make_array",
    "make_date",
    "make_time",
    "map",
    "map_entries",
    "map_extract",
    "map_keys",
    "map_values",
    "md5",
    "named_struct",
    "nanvl",
    "now",
    "nullif",
    "nvl",
    "nvl2",
    "octet_length",
    "overlay",
    "pi",
    "power",
    "radians",
    "random",
    "regexp_count",
    "regexp_instr",
    "regexp_like",
    "regexp_match",
    "reverse",
    "right",
    "round",
    "rtrim",
    "sha224",
    "sha256",
    "sha384",
    "sha512",
    "signum",
    "sin",
    "sinh",
    "split_part",
    "sqrt",
    "starts_with",
    "string_to_array",
    "strpos",
    "struct",
    "substr",
    "substr_index",
    "tan",
    "tanh",
    "to_char",
    "to_date",
    "to_hex",
    "to_local_time",
    "to_time",
    "to_timestamp",
    "to_timestamp_micros",
    "to_timestamp_millis",
    "to_timestamp_nanos",
    "to_timestamp_seconds",
    "to_unixtime",
    "translate",
    "trunc",
    "union_extract",
    "union_tag",
    "upper",
    "uuid",
    "version",
];

/// Replaces each function of `ctx` that can grow with its bounded form, paid for from `pool`
/// (the session's share).
pub fn install(ctx: &SessionContext, pool: &Arc<dyn MemoryPool>) {
    let state = ctx.state();
    for (name, growth) in GROWERS {
        if let Some(inner) = state.scalar_functions().get(*name) {
            ctx.register_udf(ScalarUDF::new_from_impl(Bounded {
                inner: inner.as_ref().clone(),
                growth: *growth,
                pool: pool.clone(),
            }));
        }
    }
}

#[derive(Debug)]
struct Bounded {
    inner: ScalarUDF,
    growth: Growth,
    pool: Arc<dyn MemoryPool>,
}

impl PartialEq for Bounded {
    fn eq(&self, other: &Self) -> bool {
        self.inner == other.inner && Arc::ptr_eq(&self.pool, &other.pool)
    }
}

impl Eq for Bounded {}

impl Hash for Bounded {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.inner.hash(state);
    }
}

fn exhausted(message: String) -> DataFusionError {
    DataFusionError::ResourcesExhausted(message)
}

/// Everything but the size check is the wrapped function's own: its name, types, nullability,
/// simplifications, orderings and bounds, so the planner treats it exactly as DataFusion would.
impl ScalarUDFImpl for Bounded {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn display_name(&self, args: &[Expr]) -> DFResult<String> {
        #[expect(deprecated)]
        self.inner.inner().display_name(args)
    }

    fn schema_name(&self, args: &[Expr]) -> DFResult<String> {
        self.inner.inner().schema_name(args)
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> DFResult<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> DFResult<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn is_nullable(&self, args: &[Expr], schema: &dyn ExprSchema) -> bool {
        #[expect(deprecated)]
        self.inner.inner().is_nullable(args, schema)
    }

    fn with_updated_config(&self, config: &ConfigOptions) -> Option<ScalarUDF> {
        let updated = self.inner.inner().with_updated_config(config)?;
        Some(ScalarUDF::new_from_impl(Bounded {
            inner: updated,
            growth: self.growth,
            pool: self.pool.clone(),
        }))
    }

    fn simplify(&self, args: Vec<Expr>, info: &SimplifyContext) -> DFResult<ExprSimplifyResult> {
        if self.growth == Growth::Cast && cast_target_width(&args) > PLAIN_CAST_WIDTH {
            return Ok(ExprSimplifyResult::Original(args));
        }
        self.inner.simplify(args, info)
    }

    fn preimage(
        &self,
        args: &[Expr],
        lit_expr: &Expr,
        info: &SimplifyContext,
    ) -> DFResult<PreimageResult> {
        self.inner.inner().preimage(args, lit_expr, info)
    }

    fn conditional_arguments<'a>(
        &self,
        args: &'a [Expr],
    ) -> Option<(Vec<&'a Expr>, Vec<&'a Expr>)> {
        self.inner.inner().conditional_arguments(args)
    }

    fn short_circuits(&self) -> bool {
        self.inner.short_circuits()
    }

    fn evaluate_bounds(&self, input: &[&Interval]) -> DFResult<Interval> {
        self.inner.evaluate_bounds(input)
    }

    fn propagate_constraints(
        &self,
        interval: &Interval,
        inputs: &[&Interval],
    ) -> DFResult<Option<Vec<Interval>>> {
        self.inner.propagate_constraints(interval, inputs)
    }

    fn output_ordering(&self, inputs: &[ExprProperties]) -> DFResult<SortProperties> {
        self.inner.output_ordering(inputs)
    }

    fn preserves_lex_ordering(&self, inputs: &[ExprProperties]) -> DFResult<bool> {
        self.inner.preserves_lex_ordering(inputs)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> DFResult<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }

    fn placement(&self, args: &[ExpressionPlacement]) -> ExpressionPlacement {
        self.inner.inner().placement(args)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DFResult<ColumnarValue> {
        let rows = if args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)))
        {
            1
        } else {
            args.number_rows
        };
        let (largest, total) = result_size(self.growth, &args.args, rows)?;
        let name = self.inner.name();
        if self.growth == Growth::PairWork {
            if largest > MAX_PAIR_WORK {
                return Err(exhausted(format!(
                    "{name}() of values this long compares {largest} character pairs; at most \
                     {MAX_PAIR_WORK}"
                )));
            }
            return self.inner.invoke_with_args(args);
        }
        if largest > MAX_VALUE_BYTES {
            return Err(exhausted(format!(
                "{name}() would make a value of {largest} bytes; at most {MAX_VALUE_BYTES} bytes \
                 per value"
            )));
        }
        let reservation = MemoryConsumer::new(format!("{name}() results")).register(&self.pool);
        reservation.try_grow(usize::try_from(total).unwrap_or(usize::MAX))?;
        let result = if self.growth == Growth::Cast {
            // DataFusion's own arrow_cast only plans (it simplifies to CAST, which this wide a
            // target was kept from): the cast itself, as CAST would run it.
            let target = args.return_field.data_type().clone();
            match args.args.first() {
                Some(value) => value.cast_to(&target, None),
                None => Err(DataFusionError::Plan("arrow_cast needs a value".into())),
            }
        } else {
            self.inner.invoke_with_args(args)
        };
        drop(reservation);
        result
    }
}

/// The per-value width of the type an `arrow_cast` call names, when it names one as a literal.
fn cast_target_width(args: &[Expr]) -> u64 {
    match args.get(1) {
        Some(Expr::Literal(named, _)) => named_width(named),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EngineError;
    use crate::memory::{SessionPool, shared_pool};
    use datafusion::execution::runtime_env::RuntimeEnvBuilder;
    use datafusion::prelude::SessionConfig;
    use tonic::Code;

    /// A context whose session share is `share` bytes, with the bounded functions installed.
    fn context(share: usize) -> SessionContext {
        let pool: Arc<dyn MemoryPool> = SessionPool::new(shared_pool(4 << 30), share);
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(pool.clone())
            .build_arc()
            .unwrap();
        let ctx = SessionContext::new_with_config_rt(SessionConfig::new(), runtime);
        install(&ctx, &pool);
        ctx
    }

    async fn run(ctx: &SessionContext, sql: &str) -> Result<String, EngineError> {
        let batches = ctx.sql(sql).await?.collect().await?;
        Ok(arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string())
    }

    #[tokio::test]
    async fn results_too_big_for_a_value_or_the_share_are_refused_before_they_are_made() {
        let ctx = context(64 << 20);
        for sql in [
            "SELECT length(repeat(s, 1100000000)) FROM (VALUES ('x')) t(s)",
            "SELECT length(lpad('x', 2000000000))",
            "SELECT length(rpad(s, 2000000000, 'ab')) FROM (VALUES ('x')) t(s)",
            "SELECT cardinality(array_repeat('x', 1000000000))",
            "SELECT cardinality(array_resize([1, 2], 1000000000))",
            "SELECT cardinality(range(0, 10000000000))",
            "SELECT cardinality(generate_series(1, 10000000000, 1))",
            "SELECT cardinality(range(TIMESTAMP '1700-01-01', TIMESTAMP '2200-01-01', INTERVAL '1 second'))",
            "SELECT length(replace(repeat('a', 1000000), '', repeat('b', 1000)))",
            "SELECT length(regexp_replace(repeat('a', 100000), '', repeat('b', 1000), 'g'))",
            "SELECT arrow_cast(NULL, 'FixedSizeBinary(1000000000)') IS NULL",
            "SELECT cardinality(array_replace_all(array_repeat('a', 100000), 'a', repeat('b', 10000)))",
            "SELECT length(array_to_string(array_repeat('a', 100000), repeat('-', 10000)))",
            "SELECT levenshtein(repeat('a', 20000), repeat('b', 20000))",
        ] {
            let Err(e) = run(&ctx, sql).await else {
                panic!("{sql} ran")
            };
            assert_eq!(e.code(), Code::ResourceExhausted, "{sql}: {e}");
        }
        // Each value fits, but the batch's results together do not fit the share.
        let rows = "SELECT length(repeat(CAST(value AS VARCHAR), 100000)) FROM range(1000)";
        let Err(e) = run(&ctx, rows).await else {
            panic!("{rows} ran")
        };
        assert_eq!(e.code(), Code::ResourceExhausted, "{e}");
        assert!(e.to_string().contains("memory limit"), "{e}");
    }

    /// Every function DataFusion registers is either bounded here or makes at most a constant
    /// times its arguments: a new function fails this test until it is classified.
    #[test]
    fn every_scalar_function_is_classified() {
        let ctx = SessionContext::new();
        let state = ctx.state();
        let mut unclassified: Vec<&str> = state
            .scalar_functions()
            .values()
            .map(|f| f.name())
            .filter(|name| {
                !GROWERS.iter().any(|(g, _)| g == name) && !AT_MOST_THEIR_ARGUMENTS.contains(name)
            })
            .collect();
        unclassified.dedup();
        unclassified.sort();
        assert!(unclassified.is_empty(), "classify: {unclassified:?}");
    }

    #[tokio::test]
    async fn bounded_functions_answer_as_before_and_give_their_reservation_back() {
        let ctx = context(64 << 20);
        let got = run(
            &ctx,
            "SELECT repeat('ab', 3) AS r, lpad('x', 3, '-') AS l, rpad('x', 3) AS p, \
             range(3) AS g, array_repeat(1, 2) AS a, replace('aXa', 'X', 'yy') AS s, \
             regexp_replace('abc', 'b', 'B') AS x, array_resize([1], 2, 0) AS z, \
             array_to_string([1, 2], '-') AS j, levenshtein('kitten', 'sitting') AS d",
        )
        .await
        .unwrap();
        for part in [
            "ababab",
            "--x",
            "x  ",
            "[0, 1, 2]",
            "[1, 1]",
            "ayya",
            "aBc",
            "[1, 0]",
            "1-2",
            "| 3 ",
        ] {
            assert!(got.contains(part), "{part} in {got}");
        }
        let many = run(
            &ctx,
            "SELECT sum(length(repeat('x', 1000))) AS n FROM range(10000)",
        )
        .await
        .unwrap();
        assert!(many.contains("10000000"), "{many}");
        let left = ctx.runtime_env().memory_pool.reserved();
        assert_eq!(left, 0, "reservations are given back");
    }
}
