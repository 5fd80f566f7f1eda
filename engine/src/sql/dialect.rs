//! `SqeDialect`: sqlparser's generic dialect, plus what SQE's users write that it lacks.
//!
//! - Table versions (`t VERSION AS OF 42`, `t TIMESTAMP AS OF …`) parse into the table factor's
//!   `version`, where the time-travel relation planner finds them. Trino's spelling puts `FOR` in
//!   front; `parse::trino_versions` adapts the token stream before the parser sees it.
//! - `SHOW CATALOGS [LIKE 'p']` (Trino) parses as `SHOW DATABASES`, its synonym in the dialects
//!   whose top level is a database (Snowflake): the generic dialect reads `CATALOGS` as the name
//!   of a variable and refuses a `LIKE` after it.
//!
//! Everything else is the generic dialect's, delegated method by method; the parser's
//! `dialect_of!(… GenericDialect)` checks hold too, as `dialect()` answers the generic type.

use std::any::TypeId;

use datafusion::sql::sqlparser::ast::{
    ShowStatementFilterPosition, ShowStatementOptions, Statement,
};
use datafusion::sql::sqlparser::dialect::{Dialect, GenericDialect};
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::Token;

#[derive(Debug, Default, Clone, Copy)]
pub struct SqeDialect;

const GENERIC: GenericDialect = GenericDialect {};

/// `fn name(&self) -> bool`, answered as the generic dialect answers it.
macro_rules! as_generic {
    ($($name:ident),* $(,)?) => {
        $(fn $name(&self) -> bool { GENERIC.$name() })*
    };
}

impl Dialect for SqeDialect {
    fn dialect(&self) -> TypeId {
        TypeId::of::<GenericDialect>()
    }

    fn is_delimited_identifier_start(&self, ch: char) -> bool {
        GENERIC.is_delimited_identifier_start(ch)
    }

    fn is_identifier_start(&self, ch: char) -> bool {
        GENERIC.is_identifier_start(ch)
    }

    fn is_identifier_part(&self, ch: char) -> bool {
        GENERIC.is_identifier_part(ch)
    }

    fn supports_table_versioning(&self) -> bool {
        true
    }

    fn parse_statement(&self, parser: &mut Parser) -> Option<Result<Statement, ParserError>> {
        let [show, what] = parser.peek_tokens::<2>();
        let is_show = matches!(&show, Token::Word(w) if w.keyword == Keyword::SHOW);
        let is_catalogs = matches!(&what, Token::Word(w)
            if w.quote_style.is_none() && w.value.eq_ignore_ascii_case("catalogs"));
        if !(is_show && is_catalogs) {
            return None;
        }
        parser.next_token();
        parser.next_token();
        Some(
            parser
                .parse_show_statement_filter()
                .map(|filter| Statement::ShowDatabases {
                    terse: false,
                    history: false,
                    show_options: ShowStatementOptions {
                        show_in: None,
                        starts_with: None,
                        limit: None,
                        limit_from: None,
                        filter_position: filter.map(ShowStatementFilterPosition::Suffix),
                    },
                }),
        )
    }

    as_generic!(
        supports_unicode_string_literal,
        supports_group_by_expr,
        supports_group_by_with_modifier,
        supports_left_associative_joins_without_parens,
        supports_connect_by,
        supports_match_recognize,
        supports_pipe_operator,
        supports_start_transaction_modifier,
        supports_window_function_null_treatment_arg,
        supports_dictionary_syntax,
        supports_window_clause_named_window_reference,
        supports_parenthesized_set_variables,
        supports_select_wildcard_except,
        support_map_literal_syntax,
        allow_extract_custom,
        allow_extract_single_quotes,
        supports_extract_comma_syntax,
        supports_create_view_comment_syntax,
        supports_parens_around_table_factor,
        supports_values_as_table_factor,
        supports_create_index_with_clause,
        supports_explain_with_utility_options,
        supports_limit_comma,
        supports_from_first_select,
        supports_projection_trailing_commas,
        supports_asc_desc_in_column_definition,
        supports_try_convert,
        supports_bitwise_shift_operators,
        supports_comment_on,
        supports_load_extension,
        supports_named_fn_args_with_assignment_operator,
        supports_struct_literal,
        supports_empty_projections,
        supports_nested_comments,
        supports_multiline_comment_hints,
        supports_user_host_grantee,
        supports_string_escape_constant,
        supports_array_typedef_with_brackets,
        supports_match_against,
        supports_set_names,
        supports_comma_separated_set_assignments,
        supports_filter_during_aggregation,
        supports_select_wildcard_exclude,
        supports_data_type_signed_suffix,
        supports_interval_options,
        supports_quote_delimited_string,
        supports_lambda_functions,
        supports_select_wildcard_replace,
        supports_select_wildcard_ilike,
        supports_select_wildcard_rename,
        supports_optimize_table,
        supports_install,
        supports_detach,
        supports_prewhere,
        supports_with_fill,
        supports_limit_by,
        supports_interpolate,
        supports_settings,
        supports_select_format,
        supports_comment_optimizer_hint,
        supports_constraint_keyword_without_name,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::parser::Parser;

    fn parse(dialect: &dyn Dialect, sql: &str) -> Vec<Statement> {
        Parser::parse_sql(dialect, sql).unwrap()
    }

    #[test]
    fn it_parses_what_the_generic_dialect_parses_the_same_way() {
        for sql in [
            "SELECT a, b FROM t WHERE x = 'it''s' AND y IN (1, 2) ORDER BY 1 LIMIT 3",
            "SELECT * EXCLUDE (a) FROM t",
            "SELECT {'a': 1}, MAP {'k': 1}, [1, 2]",
            "SELECT x FROM t GROUP BY ALL",
            "WITH c AS (SELECT 1 AS x) SELECT * FROM c JOIN d USING (x)",
            "INSERT INTO s.t (a, b) VALUES ($1, ?), (3, 'x')",
            "CREATE TABLE t (a BIGINT NOT NULL, b VARCHAR) AS SELECT 1, 'a'",
            "SHOW TABLES FROM s LIKE 'a%'",
            "SHOW COLUMNS FROM s.t",
            "SET datafusion.execution.batch_size = 10",
            "SELECT E'a\\'b', $$dollar ? quoted$$ FROM \"Mixed\".t",
            "SELECT 1 << 2, a ~ 'x', b ->> 'k' FROM t",
        ] {
            assert_eq!(
                parse(&SqeDialect, sql),
                parse(&GenericDialect {}, sql),
                "{sql}"
            );
        }
    }

    #[test]
    fn table_versions_parse_into_the_table_factor() {
        let s = parse(&SqeDialect, "SELECT * FROM t VERSION AS OF 42").remove(0);
        assert!(s.to_string().contains("t VERSION AS OF 42"), "{s}");
        assert!(Parser::parse_sql(&GenericDialect {}, "SELECT * FROM t VERSION AS OF 42").is_err());
    }

    #[test]
    fn show_catalogs_is_show_databases_with_its_filter() {
        let s = parse(&SqeDialect, "show Catalogs like 'l%'").remove(0);
        assert_eq!(s.to_string(), "SHOW DATABASES LIKE 'l%'");
        let s = parse(&SqeDialect, "SHOW CATALOGS").remove(0);
        assert_eq!(s.to_string(), "SHOW DATABASES");
        // A quoted name is a variable, as before.
        let s = parse(&SqeDialect, "SHOW \"catalogs\"").remove(0);
        assert!(matches!(s, Statement::ShowVariable { .. }), "{s}");
    }
}
