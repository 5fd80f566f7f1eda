//! What a client's statement may do, decided on its logical plan before anything runs.
//!
//! - No path access: `CREATE EXTERNAL TABLE … LOCATION` and `COPY … TO` would read or write with
//!   whatever the engine process can reach (its file system), not with credentials vended for the
//!   user. They are refused anywhere in the plan, so `EXPLAIN ANALYZE COPY …` is refused too.
//! - No runtime settings: `SET`/`RESET datafusion.runtime.*` would replace the session's memory
//!   pool (lifting the limits) or move spill files anywhere; the catalog-location settings would
//!   make DataFusion list a local directory as tables. The operator sets these, not the client.

use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::logical_expr::{DdlStatement, LogicalPlan, Statement};
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::Token;

use crate::error::EngineError;

/// The longest statement text accepted. Generous for generated SQL; a 20 MB statement costs
/// seconds of tokenizing and planning before anything could refuse it.
pub const MAX_SQL_BYTES: usize = 1 << 20;

/// The longest chain of binary operators one expression may have (`a + b + … `, `x = 1 OR x = 2
/// OR …`). Such a chain is a tree as deep as it is long, and DataFusion's planning time grows with
/// the square of its depth: on the debug build, `SELECT 1+1+…` took 1.6 s with 1 001 terms
/// (`e2e/bench/operator_chain.py`), 137 s
/// with 10 000, and with 30 000 held over 10 GB after 8 minutes — synchronous work no time limit
/// can interrupt. Lists (`IN (…)`, `VALUES`, select lists) are not chains and are not limited.
pub const MAX_OPERATOR_CHAIN: usize = 1000;

/// Refuses statement text over `MAX_SQL_BYTES`, before it is tokenized.
pub fn check_text(sql: &str) -> Result<(), EngineError> {
    if sql.len() > MAX_SQL_BYTES {
        return Err(EngineError::InvalidArgument(format!(
            "the statement is {} bytes; at most {MAX_SQL_BYTES} are accepted",
            sql.len()
        )));
    }
    Ok(())
}

/// Refuses a statement with an operator chain longer than `MAX_OPERATOR_CHAIN`, before it is
/// parsed.
pub fn check_tokens<'a>(tokens: impl Iterator<Item = &'a Token>) -> Result<(), EngineError> {
    let longest = longest_operator_chain(tokens);
    if longest > MAX_OPERATOR_CHAIN {
        return Err(EngineError::InvalidArgument(format!(
            "an expression chains {longest} operators; at most {MAX_OPERATOR_CHAIN} are \
             accepted (use IN (…) or a table for long lists)"
        )));
    }
    Ok(())
}

/// The most binary operators in one run at one parenthesis level, a run ending at a comma, a
/// clause keyword or the end of its parentheses. It over-counts rather than under-counts: every
/// operator between two separators is taken to be in the same chain.
pub fn longest_operator_chain<'a>(tokens: impl Iterator<Item = &'a Token>) -> usize {
    let mut runs: Vec<usize> = vec![0];
    let mut longest = 0;
    for t in tokens {
        match t {
            Token::LParen | Token::LBracket | Token::LBrace => runs.push(0),
            Token::RParen | Token::RBracket | Token::RBrace if runs.len() > 1 => {
                runs.pop();
            }
            Token::Comma | Token::SemiColon => {
                if let Some(r) = runs.last_mut() {
                    *r = 0;
                }
            }
            Token::Word(w) if CLAUSES.contains(&w.keyword) => {
                if let Some(r) = runs.last_mut() {
                    *r = 0;
                }
            }
            Token::Word(w) if matches!(w.keyword, Keyword::AND | Keyword::OR | Keyword::XOR) => {
                bump(&mut runs, &mut longest)
            }
            Token::Plus
            | Token::Minus
            | Token::Mul
            | Token::Div
            | Token::Mod
            | Token::DuckIntDiv
            | Token::StringConcat
            | Token::Eq
            | Token::DoubleEq
            | Token::Neq
            | Token::Lt
            | Token::Gt
            | Token::LtEq
            | Token::GtEq
            | Token::Spaceship
            | Token::Ampersand
            | Token::Pipe
            | Token::Caret
            | Token::ShiftLeft
            | Token::ShiftRight
            | Token::Arrow
            | Token::LongArrow
            | Token::HashArrow
            | Token::HashLongArrow
            | Token::Tilde
            | Token::TildeAsterisk
            | Token::ExclamationMarkTilde
            | Token::ExclamationMarkTildeAsterisk => bump(&mut runs, &mut longest),
            _ => {}
        }
    }
    longest
}

fn bump(runs: &mut [usize], longest: &mut usize) {
    if let Some(r) = runs.last_mut() {
        *r += 1;
        *longest = (*longest).max(*r);
    }
}

/// Keywords that start a new clause, and so a new expression.
const CLAUSES: &[Keyword] = &[
    Keyword::SELECT,
    Keyword::FROM,
    Keyword::WHERE,
    Keyword::GROUP,
    Keyword::HAVING,
    Keyword::ORDER,
    Keyword::LIMIT,
    Keyword::OFFSET,
    Keyword::ON,
    Keyword::USING,
    Keyword::JOIN,
    Keyword::UNION,
    Keyword::INTERSECT,
    Keyword::EXCEPT,
    Keyword::WHEN,
    Keyword::THEN,
    Keyword::ELSE,
    Keyword::END,
    Keyword::VALUES,
    Keyword::SET,
    Keyword::AS,
    Keyword::WITH,
];

/// Settings no client may change; everything else under `datafusion.` is the session's own.
const OPERATOR_SETTINGS: &[&str] = &[
    "datafusion.runtime.",
    "datafusion.catalog.location",
    "datafusion.catalog.format",
    "datafusion.catalog.has_header",
    "datafusion.catalog.create_default_catalog_and_schema",
    "datafusion.catalog.default_catalog",
];

/// Whether a client may `SET`/`RESET` this variable (names are case-insensitive in SQL).
pub fn settable(variable: &str) -> Result<(), EngineError> {
    let v = variable.trim().to_ascii_lowercase();
    if OPERATOR_SETTINGS.iter().any(|p| v.starts_with(p)) {
        return Err(EngineError::PermissionDenied(format!(
            "`{variable}` is set by the operator for the whole engine and cannot be changed from a session"
        )));
    }
    Ok(())
}

/// The first reason `plan` (any node of it, subqueries included) may not run.
pub fn check(plan: &LogicalPlan) -> Result<(), EngineError> {
    let mut refusal = None;
    plan.apply_with_subqueries(|node| {
        refusal = refusal_of(node).err();
        Ok(if refusal.is_some() {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    })?;
    refusal.map_or(Ok(()), Err)
}

fn refusal_of(node: &LogicalPlan) -> Result<(), EngineError> {
    let path = match node {
        LogicalPlan::Ddl(DdlStatement::CreateExternalTable(_)) => Some("CREATE EXTERNAL TABLE"),
        LogicalPlan::Copy(_) => Some("COPY ... TO"),
        _ => None,
    };
    if let Some(what) = path {
        return Err(EngineError::PermissionDenied(format!(
            "{what} is not allowed: tables are read and written only through the catalog, as you"
        )));
    }
    match node {
        LogicalPlan::Statement(Statement::SetVariable(s)) => settable(&s.variable),
        LogicalPlan::Statement(Statement::ResetVariable(r)) => settable(&r.variable),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;
    use tonic::Code;

    async fn verdict(sql: &str) -> Result<(), EngineError> {
        let ctx = SessionContext::new();
        let plan = ctx.state().create_logical_plan(sql).await.unwrap();
        check(&plan)
    }

    #[tokio::test]
    async fn statements_that_reach_storage_by_path_are_refused_wherever_they_appear() {
        for sql in [
            "CREATE EXTERNAL TABLE t (line VARCHAR) STORED AS CSV LOCATION '/etc/passwd'",
            "COPY (SELECT 1 AS x) TO '/tmp/x.csv' STORED AS CSV",
            "EXPLAIN COPY (SELECT 1 AS x) TO '/tmp/x.csv' STORED AS CSV",
            "EXPLAIN ANALYZE COPY (SELECT 1 AS x) TO '/tmp/x.csv' STORED AS CSV",
        ] {
            let e = verdict(sql).await.unwrap_err();
            assert_eq!(e.code(), Code::PermissionDenied, "{sql}");
        }
        for sql in [
            "SELECT 1",
            "EXPLAIN SELECT 1",
            "CREATE TABLE t (x INT)",
            "INSERT INTO t VALUES (1)",
        ] {
            let ctx = SessionContext::new();
            if let Ok(plan) = ctx.state().create_logical_plan(sql).await {
                assert!(check(&plan).is_ok(), "{sql}");
            }
        }
    }

    #[test]
    fn statement_text_over_the_limit_is_refused_before_parsing() {
        assert!(check_text(&"x".repeat(MAX_SQL_BYTES)).is_ok());
        let e = check_text(&"x".repeat(MAX_SQL_BYTES + 1)).unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
    }

    fn tokens(sql: &str) -> Vec<Token> {
        let dialect = datafusion::sql::sqlparser::dialect::GenericDialect {};
        datafusion::sql::sqlparser::tokenizer::Tokenizer::new(&dialect, sql)
            .tokenize()
            .unwrap()
    }

    fn chain(sql: &str) -> usize {
        longest_operator_chain(tokens(sql).iter())
    }

    fn check_sql(sql: &str) -> Result<(), EngineError> {
        check_tokens(tokens(sql).iter())
    }

    #[test]
    fn long_operator_chains_are_refused_but_lists_and_many_short_expressions_are_not() {
        let terms = |n: usize, op: &str| vec!["x"; n].join(op);
        assert_eq!(
            chain("SELECT a + b * c - d FROM t WHERE a = 1 AND b = 2"),
            3
        );
        assert_eq!(
            chain(&format!("SELECT {}", terms(MAX_OPERATOR_CHAIN + 1, "+"))),
            MAX_OPERATOR_CHAIN
        );
        let deep = format!("SELECT {} AS x", terms(MAX_OPERATOR_CHAIN + 2, "+"));
        assert_eq!(check_sql(&deep).unwrap_err().code(), Code::InvalidArgument);
        let ors = format!(
            "SELECT * FROM t WHERE {}",
            terms(MAX_OPERATOR_CHAIN + 2, " = 1 OR ")
        );
        assert!(check_sql(&ors).is_err());
        // Long lists and many separate expressions are fine.
        let list = format!("SELECT * FROM t WHERE x IN ({})", terms(50_000, ", "));
        assert!(check_sql(&list).is_ok());
        let columns = vec!["a + b + c"; 5_000].join(", ");
        assert!(check_sql(&format!("SELECT {columns} FROM t")).is_ok());
        // Parentheses do not hide a chain, and a chain split by them is counted per level.
        assert_eq!(chain("SELECT (a + b) + (c + d + e)"), 2);
    }

    #[tokio::test]
    async fn runtime_and_catalog_location_settings_are_the_operators() {
        for sql in [
            "SET datafusion.runtime.memory_limit = '100G'",
            "SET DATAFUSION.RUNTIME.MEMORY_LIMIT = '100G'",
            "RESET datafusion.runtime.memory_limit",
            "SET datafusion.runtime.temp_directory = '/'",
            "SET datafusion.catalog.location = '/etc'",
        ] {
            let e = verdict(sql).await.unwrap_err();
            assert_eq!(e.code(), Code::PermissionDenied, "{sql}");
            assert!(e.to_string().contains("set by the operator"), "{e}");
        }
        for sql in [
            "SET datafusion.execution.batch_size = 1234",
            "RESET datafusion.execution.batch_size",
            "SET datafusion.execution.parquet.pushdown_filters = true",
        ] {
            assert!(verdict(sql).await.is_ok(), "{sql}");
        }
    }
}
