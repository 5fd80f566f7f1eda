//! `SHOW CATALOGS` and `SHOW SCHEMAS`, which DataFusion does not plan, as Trino writes them:
//!
//! - `SHOW CATALOGS [LIKE 'pattern']` → one column `Catalog`;
//! - `SHOW SCHEMAS [FROM|IN catalog] [LIKE 'pattern']` → one column `Schema`, of the current
//!   catalog unless one is named.
//!
//! Both become queries over `information_schema.schemata`, so they list exactly what the
//! session's own catalogs show it (the user's namespaces, never anyone else's).

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

use crate::error::EngineError;

#[derive(PartialEq)]
enum What {
    Catalogs,
    Schemas,
}

fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn invalid(msg: &str) -> EngineError {
    EngineError::InvalidArgument(msg.to_owned())
}

/// The query a SHOW CATALOGS/SCHEMAS statement stands for; `None` for any other statement.
pub fn rewrite(sql: &str, current_catalog: &str) -> Result<Option<String>, EngineError> {
    let dialect = GenericDialect {};
    let Ok(tokens) = Tokenizer::new(&dialect, sql).tokenize() else {
        return Ok(None);
    };
    let mut words = tokens
        .into_iter()
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .peekable();
    let keyword = |t: Option<&Token>, kw: Keyword| matches!(t, Some(Token::Word(w)) if w.keyword == kw && w.quote_style.is_none());
    if !keyword(words.next().as_ref(), Keyword::SHOW) {
        return Ok(None);
    }
    let what = match words.next() {
        Some(Token::Word(w)) if w.quote_style.is_none() => {
            match w.value.to_ascii_uppercase().as_str() {
                "CATALOGS" => What::Catalogs,
                "SCHEMAS" => What::Schemas,
                _ => return Ok(None),
            }
        }
        _ => return Ok(None),
    };
    let mut catalog = current_catalog.to_owned();
    if what == What::Schemas
        && (keyword(words.peek(), Keyword::FROM) || keyword(words.peek(), Keyword::IN))
    {
        words.next();
        catalog = match words.next() {
            // Unquoted names fold to lower case, as everywhere else in DataFusion.
            Some(Token::Word(w)) if w.quote_style.is_none() => w.value.to_lowercase(),
            Some(Token::Word(w)) => w.value,
            _ => return Err(invalid("SHOW SCHEMAS FROM needs a catalog name")),
        };
    }
    let mut pattern = None;
    if keyword(words.peek(), Keyword::LIKE) {
        words.next();
        pattern = match words.next() {
            Some(Token::SingleQuotedString(p)) => Some(p),
            _ => return Err(invalid("LIKE needs a quoted pattern")),
        };
    }
    if matches!(words.peek(), Some(Token::SemiColon)) {
        words.next();
    }
    if let Some(extra) = words.next() {
        return Err(EngineError::InvalidArgument(format!(
            "unexpected `{extra}` in SHOW statement"
        )));
    }
    let like = |column: &str| {
        pattern
            .as_deref()
            .map(|p| format!(" AND {column} LIKE {}", literal(p)))
            .unwrap_or_default()
    };
    Ok(Some(match what {
        What::Catalogs => format!(
            "SELECT DISTINCT catalog_name AS \"Catalog\" FROM information_schema.schemata \
             WHERE true{} ORDER BY 1",
            like("catalog_name")
        ),
        What::Schemas => format!(
            "SELECT schema_name AS \"Schema\" FROM information_schema.schemata \
             WHERE catalog_name = {}{} ORDER BY 1",
            literal(&catalog),
            like("schema_name")
        ),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_catalogs_and_schemas_become_information_schema_queries() {
        let c = rewrite("show catalogs", "lake").unwrap().unwrap();
        assert!(c.contains("DISTINCT catalog_name AS \"Catalog\""), "{c}");
        let s = rewrite("SHOW SCHEMAS", "lake").unwrap().unwrap();
        assert!(s.contains("catalog_name = 'lake'"), "{s}");
        let s = rewrite("SHOW SCHEMAS FROM Other LIKE 'de%';", "lake")
            .unwrap()
            .unwrap();
        assert!(
            s.contains("catalog_name = 'other'") && s.contains("schema_name LIKE 'de%'"),
            "{s}"
        );
        let s = rewrite("SHOW SCHEMAS IN \"Mixed\"", "lake")
            .unwrap()
            .unwrap();
        assert!(s.contains("catalog_name = 'Mixed'"), "{s}");
    }

    #[test]
    fn quotes_in_names_and_patterns_cannot_break_out_of_the_literal() {
        let s = rewrite("SHOW SCHEMAS LIKE 'x'' OR ''1''=''1'", "lake")
            .unwrap()
            .unwrap();
        assert!(s.contains("LIKE 'x'' OR ''1''=''1'"), "{s}");
        let s = rewrite("SHOW SCHEMAS FROM \"a'b\"", "lake")
            .unwrap()
            .unwrap();
        assert!(s.contains("catalog_name = 'a''b'"), "{s}");
    }

    #[test]
    fn other_statements_pass_through_and_bad_show_is_invalid() {
        assert_eq!(rewrite("SHOW TABLES", "lake").unwrap(), None);
        assert_eq!(rewrite("SELECT 1", "lake").unwrap(), None);
        assert_eq!(rewrite("SHOW ALL", "lake").unwrap(), None);
        for bad in [
            "SHOW SCHEMAS FROM",
            "SHOW SCHEMAS LIKE x",
            "SHOW CATALOGS x",
        ] {
            let e = rewrite(bad, "lake").unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{bad}");
        }
    }
}
