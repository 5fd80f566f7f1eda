//! How big a statement's tree may be, measured on the parsed AST before anything plans it.
//!
//! DataFusion's planning time grows with the square of an expression's depth, on a thread no
//! deadline can interrupt: on the debug build `SELECT 1+1+…` took 1.6 s with 1 001 terms, 137 s
//! with 10 000 (`e2e/bench/operator_chain.py`). Whatever makes the depth — binary operators,
//! casts, `IS NULL`, `CASE`, function arguments, subqueries — it is the tree that is measured,
//! so no spelling of the same tree passes where another is refused.
//!
//! The walk never goes deeper than the bounds: it stops at the first node past one, so
//! measuring a tree costs at most the bound in stack, whatever the statement holds. (The
//! parser's own recursion is bounded by [`PARSER_RECURSION_LIMIT`](crate::limits::PARSER_RECURSION_LIMIT); chains the parser builds in
//! a loop — `a + b + …`, `x::INT::INT…`, `UNION` after `UNION` — are what this measures.)

use std::ops::ControlFlow;

use datafusion::sql::parser::{CopyToSource, Statement as DFStatement};
use datafusion::sql::sqlparser::ast::{Expr, Query, SetExpr, TableFactor, Visit, Visitor};

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion, TreeNodeVisitor};
use datafusion::error::Result as DFResult;

use crate::error::EngineError;
use crate::limits::{MAX_EXPR_DEPTH, MAX_RELATIONS, MAX_SET_OPERATIONS};

/// Refuses a statement whose tree is over one of the bounds above, naming the bound.
pub fn check_statement(statement: &DFStatement) -> Result<(), EngineError> {
    let mut measure = Measure::default();
    let flow = match statement {
        DFStatement::Statement(s) => s.visit(&mut measure),
        DFStatement::Explain(e) => return check_statement(&e.statement),
        DFStatement::CopyTo(c) => match &c.source {
            CopyToSource::Query(q) => q.visit(&mut measure),
            CopyToSource::Relation(_) => ControlFlow::Continue(()),
        },
        DFStatement::CreateExternalTable(_) | DFStatement::Reset(_) => ControlFlow::Continue(()),
    };
    match flow {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(over) => Err(EngineError::InvalidArgument(over.message())),
    }
}

/// Whether a planned expression nests deeper than `bound`; the walk goes no deeper than that.
pub fn expr_deeper_than(expr: &datafusion::logical_expr::Expr, bound: usize) -> bool {
    struct Depth {
        now: usize,
        bound: usize,
        over: bool,
    }
    impl<'n> TreeNodeVisitor<'n> for Depth {
        type Node = datafusion::logical_expr::Expr;
        fn f_down(&mut self, _: &'n Self::Node) -> DFResult<TreeNodeRecursion> {
            self.now += 1;
            self.over = self.now > self.bound;
            Ok(if self.over {
                TreeNodeRecursion::Stop
            } else {
                TreeNodeRecursion::Continue
            })
        }
        fn f_up(&mut self, _: &'n Self::Node) -> DFResult<TreeNodeRecursion> {
            self.now -= 1;
            Ok(TreeNodeRecursion::Continue)
        }
    }
    let mut depth = Depth {
        now: 0,
        bound,
        over: false,
    };
    let _ = expr.visit(&mut depth);
    depth.over
}

/// The first bound a statement went past.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Over {
    ExprDepth,
    SetOperations,
    Relations,
}

impl Over {
    fn message(self) -> String {
        match self {
            Over::ExprDepth => format!(
                "an expression nests deeper than {MAX_EXPR_DEPTH} levels (a chain of operators, \
                 casts or CASEs counts one level per link); write long lists as IN (…) or join a \
                 table"
            ),
            Over::SetOperations => format!(
                "a query combines more than {MAX_SET_OPERATIONS} results with UNION, INTERSECT \
                 or EXCEPT; load the rows into a table instead"
            ),
            Over::Relations => format!("the statement names more than {MAX_RELATIONS} relations"),
        }
    }
}

#[derive(Default)]
struct Measure {
    depth: usize,
    relations: usize,
}

impl Visitor for Measure {
    type Break = Over;

    fn pre_visit_expr(&mut self, _: &Expr) -> ControlFlow<Over> {
        self.depth += 1;
        if self.depth > MAX_EXPR_DEPTH {
            return ControlFlow::Break(Over::ExprDepth);
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, _: &Expr) -> ControlFlow<Over> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }

    /// A query's set operations are counted before its body is walked: the walk of a body
    /// recurses once per operation, the count here loops.
    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<Over> {
        if set_operations(&query.body) > MAX_SET_OPERATIONS {
            return ControlFlow::Break(Over::SetOperations);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, _: &TableFactor) -> ControlFlow<Over> {
        self.relations += 1;
        if self.relations > MAX_RELATIONS {
            return ControlFlow::Break(Over::Relations);
        }
        ControlFlow::Continue(())
    }
}

/// Set operations in one query body, nested queries' own bodies excluded (they are counted when
/// the walk reaches them), counted with an explicit stack; stops counting past the bound.
fn set_operations(body: &SetExpr) -> usize {
    let mut count = 0;
    let mut pending = vec![body];
    while let Some(node) = pending.pop() {
        if let SetExpr::SetOperation { left, right, .. } = node {
            count += 1;
            if count > MAX_SET_OPERATIONS {
                break;
            }
            pending.push(left);
            pending.push(right);
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::SqeDialect;
    use datafusion::sql::parser::DFParserBuilder;
    use tonic::Code;

    fn parsed(sql: &str) -> DFStatement {
        DFParserBuilder::new(sql)
            .with_dialect(&SqeDialect::default())
            .with_recursion_limit(crate::limits::PARSER_RECURSION_LIMIT)
            .build()
            .unwrap()
            .parse_statement()
            .unwrap()
    }

    fn verdict(sql: &str) -> Result<(), Over> {
        match check_statement(&parsed(sql)) {
            Ok(()) => Ok(()),
            Err(e) => {
                assert_eq!(e.code(), Code::InvalidArgument, "{e}");
                let msg = e.to_string();
                Err(if msg.contains("nests deeper") {
                    Over::ExprDepth
                } else if msg.contains("UNION") {
                    Over::SetOperations
                } else {
                    assert!(msg.contains("relations"), "{msg}");
                    Over::Relations
                })
            }
        }
    }

    /// `n` terms of `term` joined by `op`: a chain `n - 1` links long.
    fn chain(term: &str, op: &str, n: usize) -> String {
        vec![term; n].join(op)
    }

    /// Runs `f` on a thread with the engine's worker stack, as statements are parsed there.
    fn on_worker_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::Builder::new()
            .stack_size(crate::WORKER_STACK_BYTES)
            .spawn(f)
            .unwrap()
            .join()
            .unwrap()
    }

    /// A statement whose expression is a chain `n` links long.
    type Spelling = fn(usize) -> String;

    #[test]
    fn every_spelling_of_a_deep_expression_is_measured_by_its_depth() {
        let spellings: [(&str, Spelling); 6] = [
            ("plus", |n| format!("SELECT {}", chain("1", " + ", n))),
            ("CASE terms", |n| {
                format!("SELECT {}", chain("CASE WHEN true THEN 1 END", " + ", n))
            }),
            ("casts", |n| format!("SELECT x{} FROM t", "::INT".repeat(n))),
            ("IS NULL", |n| {
                format!("SELECT x{} FROM t", " IS NULL".repeat(n))
            }),
            ("OR", |n| {
                format!("SELECT * FROM t WHERE {}", chain("x = 1", " OR ", n))
            }),
            ("concatenation", |n| {
                format!("SELECT {}", chain("'a'", " || ", n))
            }),
        ];
        // Each link of every chain below adds at least one level.
        for (name, sql) in spellings {
            let past = sql(MAX_EXPR_DEPTH + 1);
            assert_eq!(verdict(&past), Err(Over::ExprDepth), "{name}");
            let within = sql(MAX_EXPR_DEPTH / 3);
            assert_eq!(verdict(&within), Ok(()), "{name}");
        }
    }

    #[test]
    fn wide_statements_are_not_deep() {
        let list = format!("SELECT * FROM t WHERE x IN ({})", chain("1", ", ", 50_000));
        assert_eq!(verdict(&list), Ok(()));
        let columns = format!("SELECT {} FROM t", chain("a + b + c", ", ", 5_000));
        assert_eq!(verdict(&columns), Ok(()));
        let branches: String = (0..3_000)
            .map(|i| format!(" WHEN x = {i} THEN 'v{i}'"))
            .collect();
        assert_eq!(
            verdict(&format!("SELECT CASE{branches} END FROM t")),
            Ok(())
        );
        let values = format!("VALUES {}", chain("(1, 'a')", ", ", 20_000));
        assert_eq!(verdict(&values), Ok(()));
    }

    #[test]
    fn depth_counts_through_subqueries_and_function_arguments() {
        // 10 nested scalar subqueries stay within the parser's limit; each adds a chain.
        let inner = chain("1", " + ", 120);
        let mut sql = inner.clone();
        for _ in 0..10 {
            sql = format!("(SELECT {sql} + {inner})");
        }
        assert_eq!(verdict(&format!("SELECT {sql}")), Err(Over::ExprDepth));
        let args = format!("SELECT coalesce({}, 0)", chain("x", " * ", MAX_EXPR_DEPTH));
        assert_eq!(verdict(&args), Err(Over::ExprDepth));
    }

    #[test]
    fn set_operations_and_relations_are_bounded() {
        let unions = chain("SELECT 1", " UNION ALL ", MAX_SET_OPERATIONS + 2);
        assert_eq!(verdict(&unions), Err(Over::SetOperations));
        let fine = chain("SELECT 1", " UNION ALL ", 500);
        assert_eq!(verdict(&fine), Ok(()));
        let joins = format!(
            "SELECT 1 FROM {}",
            chain("t", " CROSS JOIN ", MAX_RELATIONS + 1)
        );
        assert_eq!(verdict(&joins), Err(Over::Relations));
        let commas = format!("SELECT 1 FROM {}", chain("t", ", ", MAX_RELATIONS + 1));
        assert_eq!(verdict(&commas), Err(Over::Relations));
    }

    #[test]
    fn explain_and_insert_are_measured_like_what_they_wrap() {
        let deep = chain("1", " + ", MAX_EXPR_DEPTH + 1);
        for sql in [
            format!("EXPLAIN SELECT {deep}"),
            format!("EXPLAIN ANALYZE SELECT {deep}"),
            format!("INSERT INTO t SELECT {deep}"),
            format!("CREATE TABLE t AS SELECT {deep}"),
            format!("CREATE VIEW v AS SELECT {deep}"),
        ] {
            assert_eq!(verdict(&sql), Err(Over::ExprDepth), "{sql}");
        }
    }

    #[test]
    fn planned_expressions_are_measured_too() {
        use datafusion::logical_expr::{col, lit};
        let mut deep = col("x");
        for _ in 0..MAX_EXPR_DEPTH {
            deep = deep + lit(1);
        }
        assert!(expr_deeper_than(&deep, MAX_EXPR_DEPTH));
        assert!(!expr_deeper_than(&(col("x") + lit(1)), MAX_EXPR_DEPTH));
    }

    /// The largest statement accepted, spent entirely on one chain, is parsed, measured and
    /// dropped on a worker's stack without overflowing it.
    #[test]
    fn the_deepest_tree_a_statement_can_hold_is_refused_without_exhausting_the_stack() {
        let max = crate::limits::MAX_SQL_BYTES;
        let statements = [
            format!("SELECT x{} FROM t", "::INT".repeat((max - 20) / 5)),
            format!("SELECT {}", chain("1", "+", (max - 10) / 2)),
            format!("SELECT x{}", " IS NULL".repeat((max - 10) / 8)),
        ];
        for sql in statements {
            assert!(sql.len() <= max);
            let over = on_worker_stack(move || verdict(&sql));
            assert_eq!(over, Err(Over::ExprDepth));
        }
    }
}
