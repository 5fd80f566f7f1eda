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

    fn supports_string_literal_backslash_escape(&self) -> bool {
        self.base.supports_string_literal_backslash_escape()
    }

    fn ignores_wildcard_escapes(&self) -> bool {
        self.base.ignores_wildcard_escapes()
    }

    fn supports_unicode_string_literal(&self) -> bool {
        self.base.supports_unicode_string_literal()
    }

    fn supports_filter_during_aggregation(&self) -> bool {
        self.base.supports_filter_during_aggregation()
    }

    fn supports_window_clause_named_window_reference(&self) -> bool {
        self.base.supports_window_clause_named_window_reference()
    }

    fn supports_within_after_array_aggregation(&self) -> bool {
        self.base.supports_within_after_array_aggregation()
    }

    fn supports_group_by_expr(&self) -> bool {
        self.base.supports_group_by_expr()
    }

    fn supports_group_by_with_modifier(&self) -> bool {
        self.base.supports_group_by_with_modifier()
    }

    fn supports_left_associative_joins_without_parens(&self) -> bool {
        self.base.supports_left_associative_joins_without_parens()
    }

    fn supports_outer_join_operator(&self) -> bool {
        self.base.supports_outer_join_operator()
    }

    fn supports_cross_join_constraint(&self) -> bool {
        self.base.supports_cross_join_constraint()
    }

    fn supports_connect_by(&self) -> bool {
        self.base.supports_connect_by()
    }

    fn supports_execute_immediate(&self) -> bool {
        self.base.supports_execute_immediate()
    }

    fn supports_match_recognize(&self) -> bool {
        self.base.supports_match_recognize()
    }

    fn supports_in_empty_list(&self) -> bool {
        self.base.supports_in_empty_list()
    }

    fn supports_start_transaction_modifier(&self) -> bool {
        self.base.supports_start_transaction_modifier()
    }

    fn supports_end_transaction_modifier(&self) -> bool {
        self.base.supports_end_transaction_modifier()
    }

    fn supports_named_fn_args_with_eq_operator(&self) -> bool {
        self.base.supports_named_fn_args_with_eq_operator()
    }

    fn supports_named_fn_args_with_colon_operator(&self) -> bool {
        self.base.supports_named_fn_args_with_colon_operator()
    }

    fn supports_named_fn_args_with_assignment_operator(&self) -> bool {
        self.base.supports_named_fn_args_with_assignment_operator()
    }

    fn supports_named_fn_args_with_rarrow_operator(&self) -> bool {
        self.base.supports_named_fn_args_with_rarrow_operator()
    }

    fn supports_named_fn_args_with_expr_name(&self) -> bool {
        self.base.supports_named_fn_args_with_expr_name()
    }

    fn supports_numeric_prefix(&self) -> bool {
        self.base.supports_numeric_prefix()
    }

    fn supports_numeric_literal_underscores(&self) -> bool {
        self.base.supports_numeric_literal_underscores()
    }

    fn supports_window_function_null_treatment_arg(&self) -> bool {
        self.base.supports_window_function_null_treatment_arg()
    }

    fn supports_dictionary_syntax(&self) -> bool {
        self.base.supports_dictionary_syntax()
    }

    fn support_map_literal_syntax(&self) -> bool {
        self.base.support_map_literal_syntax()
    }

    fn supports_lambda_functions(&self) -> bool {
        self.base.supports_lambda_functions()
    }

    fn supports_parenthesized_set_variables(&self) -> bool {
        self.base.supports_parenthesized_set_variables()
    }

    fn supports_comma_separated_set_assignments(&self) -> bool {
        self.base.supports_comma_separated_set_assignments()
    }

    fn supports_select_wildcard_except(&self) -> bool {
        self.base.supports_select_wildcard_except()
    }

    fn convert_type_before_value(&self) -> bool {
        self.base.convert_type_before_value()
    }

    fn supports_triple_quoted_string(&self) -> bool {
        self.base.supports_triple_quoted_string()
    }

    fn parse_prefix(&self, parser: &mut Parser) -> Option<Result<Expr, ParserError>> {
        self.base.parse_prefix(parser)
    }

    fn supports_trailing_commas(&self) -> bool {
        self.base.supports_trailing_commas()
    }

    fn supports_limit_comma(&self) -> bool {
        self.base.supports_limit_comma()
    }

    fn supports_string_literal_concatenation(&self) -> bool {
        self.base.supports_string_literal_concatenation()
    }

    fn supports_string_literal_concatenation_with_newline(&self) -> bool {
        self.base
            .supports_string_literal_concatenation_with_newline()
    }

    fn supports_projection_trailing_commas(&self) -> bool {
        self.base.supports_projection_trailing_commas()
    }

    fn supports_from_trailing_commas(&self) -> bool {
        self.base.supports_from_trailing_commas()
    }

    fn supports_column_definition_trailing_commas(&self) -> bool {
        self.base.supports_column_definition_trailing_commas()
    }

    fn supports_object_name_double_dot_notation(&self) -> bool {
        self.base.supports_object_name_double_dot_notation()
    }

    fn supports_struct_literal(&self) -> bool {
        self.base.supports_struct_literal()
    }

    fn supports_empty_projections(&self) -> bool {
        self.base.supports_empty_projections()
    }

    fn supports_select_expr_star(&self) -> bool {
        self.base.supports_select_expr_star()
    }

    fn supports_from_first_select(&self) -> bool {
        self.base.supports_from_first_select()
    }

    fn supports_pipe_operator(&self) -> bool {
        self.base.supports_pipe_operator()
    }

    fn supports_user_host_grantee(&self) -> bool {
        self.base.supports_user_host_grantee()
    }

    fn supports_match_against(&self) -> bool {
        self.base.supports_match_against()
    }

    fn supports_select_wildcard_exclude(&self) -> bool {
        self.base.supports_select_wildcard_exclude()
    }

    fn supports_select_exclude(&self) -> bool {
        self.base.supports_select_exclude()
    }

    fn supports_create_table_multi_schema_info_sources(&self) -> bool {
        self.base.supports_create_table_multi_schema_info_sources()
    }

    fn supports_select_modifiers(&self) -> bool {
        self.base.supports_select_modifiers()
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

    fn describe_requires_table_keyword(&self) -> bool {
        self.base.describe_requires_table_keyword()
    }

    fn allow_extract_custom(&self) -> bool {
        self.base.allow_extract_custom()
    }

    fn allow_extract_single_quotes(&self) -> bool {
        self.base.allow_extract_single_quotes()
    }

    fn supports_extract_comma_syntax(&self) -> bool {
        self.base.supports_extract_comma_syntax()
    }

    fn supports_subquery_as_function_arg(&self) -> bool {
        self.base.supports_subquery_as_function_arg()
    }

    fn supports_create_view_comment_syntax(&self) -> bool {
        self.base.supports_create_view_comment_syntax()
    }

    fn supports_array_typedef_without_element_type(&self) -> bool {
        self.base.supports_array_typedef_without_element_type()
    }

    fn supports_parens_around_table_factor(&self) -> bool {
        self.base.supports_parens_around_table_factor()
    }

    fn supports_values_as_table_factor(&self) -> bool {
        self.base.supports_values_as_table_factor()
    }

    fn supports_dollar_placeholder(&self) -> bool {
        self.base.supports_dollar_placeholder()
    }

    fn supports_create_index_with_clause(&self) -> bool {
        self.base.supports_create_index_with_clause()
    }

    fn require_interval_qualifier(&self) -> bool {
        self.base.require_interval_qualifier()
    }

    fn supports_explain_with_utility_options(&self) -> bool {
        self.base.supports_explain_with_utility_options()
    }

    fn supports_asc_desc_in_column_definition(&self) -> bool {
        self.base.supports_asc_desc_in_column_definition()
    }

    fn supports_factorial_operator(&self) -> bool {
        self.base.supports_factorial_operator()
    }

    fn supports_bitwise_shift_operators(&self) -> bool {
        self.base.supports_bitwise_shift_operators()
    }

    fn supports_nested_comments(&self) -> bool {
        self.base.supports_nested_comments()
    }

    fn supports_multiline_comment_hints(&self) -> bool {
        self.base.supports_multiline_comment_hints()
    }

    fn supports_eq_alias_assignment(&self) -> bool {
        self.base.supports_eq_alias_assignment()
    }

    fn supports_try_convert(&self) -> bool {
        self.base.supports_try_convert()
    }

    fn supports_bang_not_operator(&self) -> bool {
        self.base.supports_bang_not_operator()
    }

    fn supports_listen_notify(&self) -> bool {
        self.base.supports_listen_notify()
    }

    fn supports_load_data(&self) -> bool {
        self.base.supports_load_data()
    }

    fn supports_load_extension(&self) -> bool {
        self.base.supports_load_extension()
    }

    fn supports_top_before_distinct(&self) -> bool {
        self.base.supports_top_before_distinct()
    }

    fn supports_boolean_literals(&self) -> bool {
        self.base.supports_boolean_literals()
    }

    fn supports_show_like_before_in(&self) -> bool {
        self.base.supports_show_like_before_in()
    }

    fn supports_comment_on(&self) -> bool {
        self.base.supports_comment_on()
    }

    fn supports_create_table_select(&self) -> bool {
        self.base.supports_create_table_select()
    }

    fn supports_partiql(&self) -> bool {
        self.base.supports_partiql()
    }

    fn supports_constraint_keyword_without_name(&self) -> bool {
        self.base.supports_constraint_keyword_without_name()
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

    fn supports_table_sample_before_alias(&self) -> bool {
        self.base.supports_table_sample_before_alias()
    }

    fn supports_insert_set(&self) -> bool {
        self.base.supports_insert_set()
    }

    fn supports_insert_table_function(&self) -> bool {
        self.base.supports_insert_table_function()
    }

    fn supports_insert_format(&self) -> bool {
        self.base.supports_insert_format()
    }

    fn supports_set_stmt_without_operator(&self) -> bool {
        self.base.supports_set_stmt_without_operator()
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

    fn supports_string_escape_constant(&self) -> bool {
        self.base.supports_string_escape_constant()
    }

    fn supports_table_hints(&self) -> bool {
        self.base.supports_table_hints()
    }

    fn requires_single_line_comment_whitespace(&self) -> bool {
        self.base.requires_single_line_comment_whitespace()
    }

    fn supports_array_typedef_with_brackets(&self) -> bool {
        self.base.supports_array_typedef_with_brackets()
    }

    fn supports_geometric_types(&self) -> bool {
        self.base.supports_geometric_types()
    }

    fn supports_order_by_all(&self) -> bool {
        self.base.supports_order_by_all()
    }

    fn supports_set_names(&self) -> bool {
        self.base.supports_set_names()
    }

    fn supports_space_separated_column_options(&self) -> bool {
        self.base.supports_space_separated_column_options()
    }

    fn supports_alter_column_type_using(&self) -> bool {
        self.base.supports_alter_column_type_using()
    }

    fn supports_comma_separated_drop_column_list(&self) -> bool {
        self.base.supports_comma_separated_drop_column_list()
    }

    fn is_identifier_generating_function_name(
        &self,
        ident: &Ident,
        name_parts: &[ObjectNamePart],
    ) -> bool {
        self.base
            .is_identifier_generating_function_name(ident, name_parts)
    }

    fn supports_notnull_operator(&self) -> bool {
        self.base.supports_notnull_operator()
    }

    fn supports_data_type_signed_suffix(&self) -> bool {
        self.base.supports_data_type_signed_suffix()
    }

    fn supports_interval_options(&self) -> bool {
        self.base.supports_interval_options()
    }

    fn supports_create_table_like_parenthesized(&self) -> bool {
        self.base.supports_create_table_like_parenthesized()
    }

    fn supports_semantic_view_table_factor(&self) -> bool {
        self.base.supports_semantic_view_table_factor()
    }

    fn supports_quote_delimited_string(&self) -> bool {
        self.base.supports_quote_delimited_string()
    }

    fn supports_comment_optimizer_hint(&self) -> bool {
        self.base.supports_comment_optimizer_hint()
    }

    fn supports_double_ampersand_operator(&self) -> bool {
        self.base.supports_double_ampersand_operator()
    }

    fn supports_binary_kw_as_cast(&self) -> bool {
        self.base.supports_binary_kw_as_cast()
    }

    fn supports_select_wildcard_replace(&self) -> bool {
        self.base.supports_select_wildcard_replace()
    }

    fn supports_select_wildcard_ilike(&self) -> bool {
        self.base.supports_select_wildcard_ilike()
    }

    fn supports_select_wildcard_rename(&self) -> bool {
        self.base.supports_select_wildcard_rename()
    }

    fn supports_optimize_table(&self) -> bool {
        self.base.supports_optimize_table()
    }

    fn supports_install(&self) -> bool {
        self.base.supports_install()
    }

    fn supports_detach(&self) -> bool {
        self.base.supports_detach()
    }

    fn supports_prewhere(&self) -> bool {
        self.base.supports_prewhere()
    }

    fn supports_with_fill(&self) -> bool {
        self.base.supports_with_fill()
    }

    fn supports_limit_by(&self) -> bool {
        self.base.supports_limit_by()
    }

    fn supports_interpolate(&self) -> bool {
        self.base.supports_interpolate()
    }

    fn supports_settings(&self) -> bool {
        self.base.supports_settings()
    }

    fn supports_select_format(&self) -> bool {
        self.base.supports_select_format()
    }
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
