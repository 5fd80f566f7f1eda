//! `?` placeholders, numbered on the AST.
//!
//! JDBC and ADBC users write `?`; DataFusion binds `$1, $2, …`. Every `?` the parser found (so
//! never one inside a string literal, quoted name or comment) becomes `$n`, numbered in the
//! order it appears in the text. A statement mixing `?` and `$n` is refused: which value goes
//! where would be a guess.

use std::ops::ControlFlow;

use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{Expr, Value, VisitorMut};
use datafusion::sql::sqlparser::tokenizer::Location;

use crate::error::EngineError;

/// Numbers the statement's `?` placeholders as `$1, $2, …` in source order.
pub fn number(statement: &mut DFStatement) -> Result<(), EngineError> {
    let mut found = Found::default();
    super::ast::visit(statement, &mut found);
    if found.questions.is_empty() {
        return Ok(());
    }
    if found.numbered {
        return Err(EngineError::InvalidArgument(
            "use either `?` or `$n` placeholders in one statement, not both".into(),
        ));
    }
    // The visitor walks the AST, whose order is not always the text's (a window's ORDER BY, a
    // LIMIT written before OFFSET or after): the spans decide.
    let mut order: Vec<usize> = (0..found.questions.len()).collect();
    order.sort_by_key(|&i| found.questions[i]);
    let mut numbers = vec![0; order.len()];
    for (n, i) in order.into_iter().enumerate() {
        numbers[i] = n + 1;
    }
    super::ast::visit(
        statement,
        &mut Renumber {
            numbers: numbers.into_iter(),
        },
    );
    Ok(())
}

fn is_question(e: &Expr) -> bool {
    matches!(e, Expr::Value(v) if matches!(&v.value, Value::Placeholder(p) if p == "?"))
}

/// Where each `?` starts, in visiting order, and whether any `$n` was seen.
#[derive(Default)]
struct Found {
    questions: Vec<(u64, u64)>,
    numbered: bool,
}

impl VisitorMut for Found {
    type Break = ();

    fn pre_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
        if let Expr::Value(v) = e
            && let Value::Placeholder(p) = &v.value
        {
            if p == "?" {
                let Location { line, column } = v.span.start;
                self.questions.push((line, column));
            } else if p.starts_with('$') {
                self.numbered = true;
            }
        }
        ControlFlow::Continue(())
    }
}

/// Gives each `?`, in the same visiting order as [`Found`], its number.
struct Renumber {
    numbers: std::vec::IntoIter<usize>,
}

impl VisitorMut for Renumber {
    type Break = ();

    fn pre_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
        if is_question(e)
            && let (Expr::Value(v), Some(n)) = (e, self.numbers.next())
        {
            v.value = Value::Placeholder(format!("${n}"));
        }
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use crate::sql::parse::parse;

    fn numbered(sql: &str) -> String {
        parse(sql).unwrap().statement.to_string()
    }

    #[test]
    fn question_marks_are_numbered_in_the_order_they_are_written() {
        assert_eq!(
            numbered("SELECT ? AS a, '?' AS b, x FROM t WHERE y = ? -- why?"),
            "SELECT $1 AS a, '?' AS b, x FROM t WHERE y = $2"
        );
        assert_eq!(
            numbered(
                "SELECT row_number() OVER (PARTITION BY ? ORDER BY ?) FROM t LIMIT ? OFFSET ?"
            ),
            "SELECT row_number() OVER (PARTITION BY $1 ORDER BY $2) FROM t LIMIT $3 OFFSET $4"
        );
        assert_eq!(
            numbered("INSERT INTO t VALUES (?, 'it''s'), (?, ?)"),
            "INSERT INTO t VALUES ($1, 'it''s'), ($2, $3)"
        );
        assert_eq!(numbered("SELECT $2, $1"), "SELECT $2, $1");
    }

    #[test]
    fn question_marks_in_strings_names_and_comments_are_not_placeholders() {
        assert_eq!(
            numbered(
                "SELECT ?, E'it\\'s ?', $$a ? ''b$$, \"c?\" /* ? */ -- ?\n, ? FROM t WHERE a = 'x'' OR ''1''=''1' AND b = ?"
            ),
            "SELECT $1, E'it\\'s ?', $$a ? ''b$$, \"c?\", $2 FROM t WHERE a = 'x'' OR ''1''=''1' AND b = $3"
        );
        assert_eq!(
            numbered(
                "SELECT 'é' AS \"ü\",\r\n  ? AS a -- ñ?\n\tFROM t WHERE s = '日本''?' AND x = ?"
            ),
            "SELECT 'é' AS \"ü\", $1 AS a FROM t WHERE s = '日本''?' AND x = $2"
        );
    }

    #[test]
    fn mixing_both_styles_is_refused() {
        let e = parse("SELECT ?, $1").unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.to_string().contains("not both"), "{e}");
    }

    #[test]
    fn placeholders_inside_explain_and_subqueries_are_numbered_too() {
        assert_eq!(
            numbered("EXPLAIN SELECT * FROM t WHERE a IN (SELECT b FROM u WHERE c = ?) AND d = ?"),
            "EXPLAIN SELECT * FROM t WHERE a IN (SELECT b FROM u WHERE c = $1) AND d = $2"
        );
    }
}
