//! A statement's text to its one AST: tokenized once, checked, parsed once with [`SqeDialect`].
//!
//! Nothing here rebuilds SQL text. The only change before the parser is in the token stream:
//! Trino's `FOR VERSION|TIMESTAMP AS OF` (see [`trino_versions`]). After it, `?` placeholders are
//! numbered on the AST ([`super::placeholders`]).

use std::ops::ControlFlow;

use datafusion::error::DataFusionError;
use datafusion::sql::parser::{DFParserBuilder, Statement as DFStatement};
use datafusion::sql::sqlparser::ast::{
    Expr, FromTable, Statement, TableFactor, TableVersion, Value, ValueWithSpan, VisitorMut,
};
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::ParserError;
use datafusion::sql::sqlparser::tokenizer::{Location, Span, Token, TokenWithSpan, Tokenizer};

use super::ast::visit;
use super::dialect::SqeDialect;
use super::placeholders;
use crate::error::EngineError;
use crate::policy;

/// A parsed statement and the keywords it starts with (`SELECT`, `CREATE TABLE`, `SHOW
/// FUNCTIONS`): its form, for errors and logs, which must not carry the statement's literals.
#[derive(Debug)]
pub struct Parsed {
    pub statement: DFStatement,
    pub form: String,
}

fn invalid(msg: impl Into<String>) -> EngineError {
    EngineError::InvalidArgument(msg.into())
}

/// [`parse_in`] the generic dialect.
pub fn parse(sql: &str) -> Result<Parsed, EngineError> {
    parse_in(sql, &SqeDialect::default())
}

/// Parses exactly one statement (a trailing `;` is fine) in `dialect` and measures its tree
/// ([`policy::check_statement`]) before anything else walks it.
pub fn parse_in(sql: &str, dialect: &SqeDialect) -> Result<Parsed, EngineError> {
    policy::check_text(sql)?;
    let mut tokens = Tokenizer::new(dialect, sql)
        .tokenize_with_location()
        .map_err(|e| invalid(format!("SQL error: {e}")))?;
    let form = form(&tokens);
    let mut versions = trino_versions(&mut tokens)?;
    plain_at_and_before(&mut tokens);
    let mut statements = DFParserBuilder::new(tokens)
        .with_dialect(dialect)
        .with_recursion_limit(crate::limits::PARSER_RECURSION_LIMIT)
        .build()?
        .parse_statements()
        .map_err(too_deep)?;
    let mut statement = match (statements.pop_front(), statements.is_empty()) {
        (Some(s), true) => s,
        (None, _) => return Err(invalid("the statement is empty")),
        (Some(_), false) => {
            return Err(invalid(
                "send one statement at a time; this text holds several",
            ));
        }
    };
    policy::check_statement(&statement)?;
    visit(&mut statement, &mut versions);
    if let Some(table) = versions.twice {
        return Err(invalid(format!("{table} has two versions; give one")));
    }
    if writes_a_version(&statement) {
        return Err(invalid("a past version is read-only: it cannot be written"));
    }
    if let Some(v) = versions.unplaced.first() {
        return Err(invalid(format!(
            "FOR VERSION AS OF {} must follow a table read in FROM or JOIN: a past version is \
             read-only",
            v.1
        )));
    }
    placeholders::number(&mut statement)?;
    Ok(Parsed { statement, form })
}

/// The parser's recursion limit, said as what the client wrote.
fn too_deep(e: DataFusionError) -> EngineError {
    match e {
        DataFusionError::SQL(p, _) if matches!(*p, ParserError::RecursionLimitExceeded) => {
            invalid(format!(
                "the statement nests deeper than {} levels (parentheses, subqueries, function \
             calls)",
                crate::limits::PARSER_RECURSION_LIMIT
            ))
        }
        other => other.into(),
    }
}

/// The leading keywords of the statement, at most three, upper case.
fn form(tokens: &[TokenWithSpan]) -> String {
    tokens
        .iter()
        .map(|t| &t.token)
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .map_while(|t| match t {
            Token::Word(w) if w.quote_style.is_none() && w.keyword != Keyword::NoKeyword => {
                Some(w.value.to_ascii_uppercase())
            }
            _ => None,
        })
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// `FOR VERSION AS OF` clauses taken out of the token stream, waiting to be put on their table.
#[derive(Debug, Default)]
struct Versions {
    /// (where the table's name ends, the version's value).
    unplaced: Vec<(Location, ValueWithSpan)>,
    /// A table that ended up with two versions (`t FOR VERSION AS OF 1 VERSION AS OF 2`).
    twice: Option<String>,
}

impl VisitorMut for Versions {
    type Break = ();

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        if let TableFactor::Table { name, version, .. } = factor {
            let end = name.0.last().and_then(|p| p.as_ident()).map(|i| i.span.end);
            if let Some(at) = self.unplaced.iter().position(|(loc, _)| Some(*loc) == end) {
                let (_, value) = self.unplaced.remove(at);
                if version.is_some() {
                    self.twice = Some(name.to_string());
                }
                *version = Some(TableVersion::VersionAsOf(Expr::Value(value)));
            }
        }
        ControlFlow::Continue(())
    }
}

/// Whether the table a DML statement writes carries a version (`UPDATE t FOR VERSION AS OF 1
/// …`): DataFusion's planners of writes do not look at versions, so it is refused here.
fn writes_a_version(statement: &DFStatement) -> bool {
    let versioned = |f: &TableFactor| {
        matches!(
            f,
            TableFactor::Table {
                version: Some(_),
                ..
            }
        )
    };
    let DFStatement::Statement(s) = statement else {
        return false;
    };
    match s.as_ref() {
        Statement::Update(u) => versioned(&u.table.relation),
        Statement::Delete(d) => match &d.from {
            FromTable::WithFromKeyword(t) | FromTable::WithoutKeyword(t) => {
                t.iter().any(|t| versioned(&t.relation))
            }
        },
        Statement::Merge(m) => versioned(&m.table),
        _ => false,
    }
}

/// sqlparser reads an unquoted `AT` or `BEFORE` after a table name as the start of a version
/// function (`t AT(…)`) once table versions are on; without a `(` after it (nor `TIME ZONE`,
/// `LOCAL`: `ts AT TIME ZONE 'UTC'`) it is the alias it always was, so it stays a plain word.
fn plain_at_and_before(tokens: &mut [TokenWithSpan]) {
    let significant: Vec<usize> = (0..tokens.len())
        .filter(|&i| !matches!(tokens[i].token, Token::Whitespace(_)))
        .collect();
    for (n, &i) in significant.iter().enumerate() {
        let next = significant.get(n + 1).map(|&j| &tokens[j].token);
        let keeps_keyword = match next {
            Some(Token::LParen) => true,
            Some(Token::Word(w)) => matches!(w.keyword, Keyword::TIME | Keyword::LOCAL),
            _ => false,
        };
        if let Token::Word(w) = &mut tokens[i].token
            && w.quote_style.is_none()
            && matches!(w.keyword, Keyword::AT | Keyword::BEFORE)
            && !keeps_keyword
        {
            w.keyword = Keyword::NoKeyword;
        }
    }
}

/// Trino writes `t FOR VERSION AS OF 42`, `t FOR VERSION AS OF 'branch'` and `t FOR TIMESTAMP AS
/// OF <expr>`; sqlparser knows `t VERSION AS OF <number>` and `t TIMESTAMP AS OF <expr>`. So the
/// `FOR` goes, and a version clause (whose value is one token) is taken out whole, to be put on the
/// table it follows once parsed: sqlparser's version clause takes no quoted branch or tag name.
fn trino_versions(tokens: &mut Vec<TokenWithSpan>) -> Result<Versions, EngineError> {
    let significant: Vec<usize> = (0..tokens.len())
        .filter(|&i| !matches!(tokens[i].token, Token::Whitespace(_)))
        .collect();
    let word = |i: usize, kw: Keyword| matches!(&tokens[i].token, Token::Word(w) if w.keyword == kw && w.quote_style.is_none());
    let mut drop = vec![false; tokens.len()];
    let mut versions = Versions::default();
    let mut n = 0;
    while n < significant.len() {
        let at = |k: usize| significant.get(n + k).copied();
        let clause = match (at(0), at(1), at(2), at(3)) {
            (Some(f), Some(what), Some(a), Some(o))
                if word(f, Keyword::FOR) && word(a, Keyword::AS) && word(o, Keyword::OF) =>
            {
                if word(what, Keyword::TIMESTAMP) {
                    Some(Keyword::TIMESTAMP)
                } else if word(what, Keyword::VERSION) {
                    Some(Keyword::VERSION)
                } else {
                    None
                }
            }
            _ => None,
        };
        match clause {
            Some(Keyword::TIMESTAMP) => {
                drop[significant[n]] = true;
                n += 4;
            }
            Some(_) => {
                let (value, last) = version_value(tokens, &significant, n + 4)?;
                let Some(table_end) = n.checked_sub(1).map(|p| tokens[significant[p]].span.end)
                else {
                    return Err(invalid("FOR VERSION AS OF must follow a table name"));
                };
                for &i in &significant[n..=last] {
                    drop[i] = true;
                }
                versions.unplaced.push((table_end, value));
                n = last + 1;
            }
            None => n += 1,
        }
    }
    if drop.iter().any(|d| *d) {
        let mut i = 0;
        tokens.retain(|_| {
            i += 1;
            !drop[i - 1]
        });
    }
    Ok(versions)
}

/// The value of `FOR VERSION AS OF`, starting at `significant[n]`: a snapshot id (possibly
/// negative) or a quoted branch or tag name. Returns it and the index (into `significant`) of its
/// last token.
fn version_value(
    tokens: &[TokenWithSpan],
    significant: &[usize],
    n: usize,
) -> Result<(ValueWithSpan, usize), EngineError> {
    let token = |k: usize| significant.get(k).map(|&i| &tokens[i]);
    let wanted = || invalid("FOR VERSION AS OF needs a snapshot id or a quoted branch or tag name");
    let first = token(n).ok_or_else(wanted)?;
    let span = first.span;
    match &first.token {
        Token::Number(digits, _) => Ok((number(digits.clone(), span), n)),
        Token::Minus => match token(n + 1) {
            Some(TokenWithSpan {
                token: Token::Number(digits, _),
                span: end,
            }) => Ok((number(format!("-{digits}"), span.union(end)), n + 1)),
            _ => Err(wanted()),
        },
        Token::SingleQuotedString(name) => {
            Ok((Value::SingleQuotedString(name.clone()).with_span(span), n))
        }
        _ => Err(wanted()),
    }
}

fn number(digits: String, span: Span) -> ValueWithSpan {
    Value::Number(digits, false).with_span(span)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sql(p: &Parsed) -> String {
        p.statement.to_string()
    }

    fn parsed(text: &str) -> Parsed {
        parse(text).unwrap()
    }

    fn refused(text: &str) -> String {
        let e = parse(text).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{text}: {e}");
        e.to_string()
    }

    #[test]
    fn quoted_literals_keep_what_they_say() {
        let p = parsed("SELECT 'it''s' AS a WHERE b = 'a'' OR ''1''=''1'");
        assert_eq!(sql(&p), "SELECT 'it''s' AS a WHERE b = 'a'' OR ''1''=''1'");
        let DFStatement::Statement(s) = &p.statement else {
            panic!("{p:?}")
        };
        // One literal, not a boolean expression: the quote stayed inside the string.
        assert!(format!("{s:?}").contains("SingleQuotedString(\"a' OR '1'='1\")"));
    }

    #[test]
    fn trino_versions_land_on_their_table_wherever_it_is_read() {
        let p = parsed(
            "WITH old AS (SELECT * FROM s.a FOR VERSION AS OF 'audit') \
             SELECT * FROM old JOIN s.b FOR VERSION AS OF 42 AS b2 ON true \
             WHERE x IN (SELECT x FROM \"we\"\"ird\" FOR VERSION AS OF -7) \
             AND y IN (SELECT y FROM c FOR TIMESTAMP AS OF TIMESTAMP '2026-11-24 10:00:00')",
        );
        let text = sql(&p);
        for part in [
            "FROM s.a VERSION AS OF 'audit')",
            // (sqlparser prints the alias before the version)
            "JOIN s.b AS b2 VERSION AS OF 42",
            "FROM \"we\"\"ird\" VERSION AS OF -7)",
            "FROM c TIMESTAMP AS OF TIMESTAMP '2026-11-24 10:00:00'",
        ] {
            assert!(text.contains(part), "{part} in {text}");
        }
    }

    #[test]
    fn a_version_clause_outside_from_is_refused_not_dropped() {
        let e = refused("INSERT INTO s.a FOR VERSION AS OF 'main' VALUES (2)");
        assert!(e.contains("read-only"), "{e}");
        let e = refused("SELECT * FROM s.a FOR VERSION AS OF x");
        assert!(e.contains("snapshot id or a quoted branch"), "{e}");
        refused("FOR VERSION AS OF 1");
    }

    #[test]
    fn words_that_only_look_like_a_clause_are_left_alone() {
        let p = parsed("SELECT 'FOR VERSION AS OF 1' AS \"for\" FROM t -- FOR VERSION AS OF 2");
        assert_eq!(sql(&p), "SELECT 'FOR VERSION AS OF 1' AS \"for\" FROM t");
    }

    #[test]
    fn at_and_before_are_still_aliases_and_at_time_zone_still_works() {
        let p = parsed("SELECT before.id FROM prices before JOIN prices at ON before.id = at.id");
        assert!(
            sql(&p).contains("FROM prices before JOIN prices at ON before.id = at.id"),
            "{}",
            sql(&p)
        );
        let p = parsed("SELECT ts AT TIME ZONE 'UTC' FROM t");
        assert!(sql(&p).contains("AT TIME ZONE 'UTC'"), "{}", sql(&p));
    }

    #[test]
    fn a_version_is_given_once_and_never_written() {
        assert!(
            refused("SELECT * FROM t FOR VERSION AS OF 1 VERSION AS OF 2").contains("two versions")
        );
        for write in [
            "UPDATE t FOR VERSION AS OF 1 SET a = 2",
            "DELETE FROM t FOR VERSION AS OF 'main' WHERE a = 1",
        ] {
            assert!(refused(write).contains("read-only"), "{write}");
        }
    }

    #[test]
    fn one_statement_per_request() {
        assert!(refused("SELECT 1; SELECT 2").contains("one statement"));
        assert!(refused("  ").contains("empty"));
        assert_eq!(sql(&parsed("SELECT 1;")), "SELECT 1");
    }

    #[test]
    fn the_form_is_the_leading_keywords_only() {
        assert_eq!(parsed("select * from t where pw = 'x'").form, "SELECT");
        assert_eq!(parsed("CREATE TABLE t (a INT)").form, "CREATE TABLE");
        assert_eq!(
            parsed("show functions like 'a%'").form,
            "SHOW FUNCTIONS LIKE"
        );
        assert_eq!(
            parsed("EXPLAIN ANALYZE SELECT 1").form,
            "EXPLAIN ANALYZE SELECT"
        );
    }

    #[test]
    fn limits_are_checked_before_anything_else_walks_the_statement() {
        let chain = format!("SELECT {}", vec!["1"; 1_100].join(" + "));
        assert!(refused(&chain).contains("nests deeper"));
        let nested = format!("SELECT {}1{}", "(".repeat(60), ")".repeat(60));
        assert!(
            refused(&nested).contains("nests deeper than 50"),
            "{}",
            refused(&nested)
        );
        let big = format!("SELECT '{}'", "x".repeat(crate::limits::MAX_SQL_BYTES));
        assert!(refused(&big).contains("bytes"));
        assert!(refused("SELECT 'open").contains("SQL error"));
    }
}
