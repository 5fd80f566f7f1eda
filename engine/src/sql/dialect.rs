//! `SqeDialect`: the session's SQL dialect (`datafusion.sql_parser.dialect`, generic unless the
//! session chose another), plus what SQE's users write that it lacks.
//!
//! - Table versions (`t VERSION AS OF 42`, `t TIMESTAMP AS OF …`) parse into the table factor's
//!   `version`, where the time-travel relation planner finds them. Trino's spelling puts `FOR` in
//!   front; `parse::trino_versions` adapts the token stream before the parser sees it.
//! - `SHOW CATALOGS [LIKE 'p']` (Trino) parses as `SHOW DATABASES`, its synonym in the dialects
//!   whose top level is a database (Snowflake): the generic dialect reads `CATALOGS` as the name
//!   of a variable and refuses a `LIKE` after it.
//!
//! Everything else is the chosen dialect's, delegated method by method (every method of
//! sqlparser's `Dialect`, so a statement parses exactly as DataFusion parses it); the parser's
//! `dialect_of!(…)` checks hold too, as `dialect()` answers the chosen dialect's type.

use std::any::TypeId;
use std::iter::Peekable;
use std::str::Chars;

use datafusion::sql::sqlparser::ast::{
    ColumnOption, Expr, GranteesType, Ident, ObjectNamePart, ShowStatementFilterPosition,
    ShowStatementOptions, Statement,
};
use datafusion::sql::sqlparser::dialect::{Dialect, GenericDialect, Precedence, dialect_from_str};
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::Token;

/// `fn name(&self) -> bool`, answered as the chosen dialect answers it.
macro_rules! as_base {
    ($($name:ident),* $(,)?) => {
        $(fn $name(&self) -> bool { self.base.$name() })*
    };
}

#[derive(Debug)]
pub struct SqeDialect {
    base: Box<dyn Dialect>,
}

impl Default for SqeDialect {
    fn default() -> Self {
        Self {
            base: Box::new(GenericDialect {}),
        }
    }
}

impl SqeDialect {
    /// SQE's additions over the dialect DataFusion calls `name` (its `sql_parser.dialect`
    /// values, case-insensitively); `None` for a name it does not know.
    pub fn named(name: &str) -> Option<Self> {
        let base = dialect_from_str(name.to_ascii_lowercase())?;
        Some(Self { base })
    }
}

impl Dialect for SqeDialect {
    fn dialect(&self) -> TypeId {
        self.base.dialect()
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
            return self.base.parse_statement(parser);
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

    fn is_delimited_identifier_start(&self, ch: char) -> bool {
        self.base.is_delimited_identifier_start(ch)
    }

    fn is_nested_delimited_identifier_start(&self, ch: char) -> bool {
        self.base.is_nested_delimited_identifier_start(ch)
    }

    fn peek_nested_delimited_identifier_quotes(
        &self,
        chars: Peekable<Chars<'_>>,
    ) -> Option<(char, Option<char>)> {
        self.base.peek_nested_delimited_identifier_quotes(chars)
    }

    fn identifier_quote_style(&self, identifier: &str) -> Option<char> {
        self.base.identifier_quote_style(identifier)
    }

    fn is_identifier_start(&self, ch: char) -> bool {
        self.base.is_identifier_start(ch)
    }

    fn is_identifier_part(&self, ch: char) -> bool {
        self.base.is_identifier_part(ch)
    }

    fn is_custom_operator_part(&self, ch: char) -> bool {
        self.base.is_custom_operator_part(ch)
    }

    fn parse_prefix(&self, parser: &mut Parser) -> Option<Result<Expr, ParserError>> {
        self.base.parse_prefix(parser)
    }

    fn supports_string_literal_concatenation_with_newline(&self) -> bool {
        self.base
            .supports_string_literal_concatenation_with_newline()
    }

    fn parse_infix(
        &self,
        parser: &mut Parser,
        expr: &Expr,
        precedence: u8,
    ) -> Option<Result<Expr, ParserError>> {
        self.base.parse_infix(parser, expr, precedence)
    }

    fn get_next_precedence(&self, parser: &Parser) -> Option<Result<u8, ParserError>> {
        self.base.get_next_precedence(parser)
    }

    fn get_next_precedence_default(&self, parser: &Parser) -> Result<u8, ParserError> {
        self.base.get_next_precedence_default(parser)
    }

    fn parse_column_option(
        &self,
        parser: &mut Parser,
    ) -> Result<Option<Result<Option<ColumnOption>, ParserError>>, ParserError> {
        self.base.parse_column_option(parser)
    }

    fn prec_value(&self, prec: Precedence) -> u8 {
        self.base.prec_value(prec)
    }

    fn prec_unknown(&self) -> u8 {
        self.base.prec_unknown()
    }

    fn is_reserved_for_identifier(&self, kw: Keyword) -> bool {
        self.base.is_reserved_for_identifier(kw)
    }

    fn get_reserved_keywords_for_select_item_operator(&self) -> &[Keyword] {
        self.base.get_reserved_keywords_for_select_item_operator()
    }

    fn get_reserved_grantees_types(&self) -> &[GranteesType] {
        self.base.get_reserved_grantees_types()
    }

    fn is_column_alias(&self, kw: &Keyword, parser: &mut Parser) -> bool {
        self.base.is_column_alias(kw, parser)
    }

    fn is_select_item_alias(&self, explicit: bool, kw: &Keyword, parser: &mut Parser) -> bool {
        self.base.is_select_item_alias(explicit, kw, parser)
    }

    fn is_table_factor(&self, kw: &Keyword, parser: &mut Parser) -> bool {
        self.base.is_table_factor(kw, parser)
    }

    fn is_table_alias(&self, kw: &Keyword, parser: &mut Parser) -> bool {
        self.base.is_table_alias(kw, parser)
    }

    fn is_table_factor_alias(&self, explicit: bool, kw: &Keyword, parser: &mut Parser) -> bool {
        self.base.is_table_factor_alias(explicit, kw, parser)
    }

    fn is_identifier_generating_function_name(
        &self,
        ident: &Ident,
        name_parts: &[ObjectNamePart],
    ) -> bool {
        self.base
            .is_identifier_generating_function_name(ident, name_parts)
    }

    as_base!(
        supports_string_literal_backslash_escape,
        ignores_wildcard_escapes,
        supports_unicode_string_literal,
        supports_filter_during_aggregation,
        supports_window_clause_named_window_reference,
        supports_within_after_array_aggregation,
        supports_group_by_expr,
        supports_group_by_with_modifier,
        supports_left_associative_joins_without_parens,
        supports_outer_join_operator,
        supports_cross_join_constraint,
        supports_connect_by,
        supports_execute_immediate,
        supports_match_recognize,
        supports_in_empty_list,
        supports_start_transaction_modifier,
        supports_end_transaction_modifier,
        supports_named_fn_args_with_eq_operator,
        supports_named_fn_args_with_colon_operator,
        supports_named_fn_args_with_assignment_operator,
        supports_named_fn_args_with_rarrow_operator,
        supports_named_fn_args_with_expr_name,
        supports_numeric_prefix,
        supports_numeric_literal_underscores,
        supports_window_function_null_treatment_arg,
        supports_dictionary_syntax,
        support_map_literal_syntax,
        supports_lambda_functions,
        supports_parenthesized_set_variables,
        supports_comma_separated_set_assignments,
        supports_select_wildcard_except,
        convert_type_before_value,
        supports_triple_quoted_string,
        supports_trailing_commas,
        supports_limit_comma,
        supports_string_literal_concatenation,
        supports_projection_trailing_commas,
        supports_from_trailing_commas,
        supports_column_definition_trailing_commas,
        supports_object_name_double_dot_notation,
        supports_struct_literal,
        supports_empty_projections,
        supports_select_expr_star,
        supports_from_first_select,
        supports_pipe_operator,
        supports_user_host_grantee,
        supports_match_against,
        supports_select_wildcard_exclude,
        supports_select_exclude,
        supports_create_table_multi_schema_info_sources,
        supports_select_modifiers,
        describe_requires_table_keyword,
        allow_extract_custom,
        allow_extract_single_quotes,
        supports_extract_comma_syntax,
        supports_subquery_as_function_arg,
        supports_create_view_comment_syntax,
        supports_array_typedef_without_element_type,
        supports_parens_around_table_factor,
        supports_values_as_table_factor,
        supports_dollar_placeholder,
        supports_create_index_with_clause,
        require_interval_qualifier,
        supports_explain_with_utility_options,
        supports_asc_desc_in_column_definition,
        supports_factorial_operator,
        supports_bitwise_shift_operators,
        supports_nested_comments,
        supports_multiline_comment_hints,
        supports_eq_alias_assignment,
        supports_try_convert,
        supports_bang_not_operator,
        supports_listen_notify,
        supports_load_data,
        supports_load_extension,
        supports_top_before_distinct,
        supports_boolean_literals,
        supports_show_like_before_in,
        supports_comment_on,
        supports_create_table_select,
        supports_partiql,
        supports_constraint_keyword_without_name,
        supports_table_sample_before_alias,
        supports_insert_set,
        supports_insert_table_function,
        supports_insert_format,
        supports_set_stmt_without_operator,
        supports_string_escape_constant,
        supports_table_hints,
        requires_single_line_comment_whitespace,
        supports_array_typedef_with_brackets,
        supports_geometric_types,
        supports_order_by_all,
        supports_set_names,
        supports_space_separated_column_options,
        supports_alter_column_type_using,
        supports_comma_separated_drop_column_list,
        supports_notnull_operator,
        supports_data_type_signed_suffix,
        supports_interval_options,
        supports_create_table_like_parenthesized,
        supports_semantic_view_table_factor,
        supports_quote_delimited_string,
        supports_comment_optimizer_hint,
        supports_double_ampersand_operator,
        supports_binary_kw_as_cast,
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
                parse(&SqeDialect::default(), sql),
                parse(&GenericDialect {}, sql),
                "{sql}"
            );
        }
    }

    #[test]
    fn table_versions_parse_into_the_table_factor() {
        let s = parse(&SqeDialect::default(), "SELECT * FROM t VERSION AS OF 42").remove(0);
        assert!(s.to_string().contains("t VERSION AS OF 42"), "{s}");
        assert!(Parser::parse_sql(&GenericDialect {}, "SELECT * FROM t VERSION AS OF 42").is_err());
    }

    #[test]
    fn show_catalogs_is_show_databases_with_its_filter() {
        let s = parse(&SqeDialect::default(), "show Catalogs like 'l%'").remove(0);
        assert_eq!(s.to_string(), "SHOW DATABASES LIKE 'l%'");
        let s = parse(&SqeDialect::default(), "SHOW CATALOGS").remove(0);
        assert_eq!(s.to_string(), "SHOW DATABASES");
        // A quoted name is a variable, as before.
        let s = parse(&SqeDialect::default(), "SHOW \"catalogs\"").remove(0);
        assert!(matches!(s, Statement::ShowVariable { .. }), "{s}");
    }
}
