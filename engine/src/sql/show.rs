//! The `SHOW` forms Trino users type, matched on the AST and planned with the DataFrame API over
//! the session's own catalogs, so each lists exactly what the user may load:
//!
//! - `SHOW CATALOGS [LIKE p]` → `Catalog`, every catalog of the session;
//! - `SHOW SCHEMAS [FROM|IN c] [LIKE p]` → `Schema`, of the current catalog unless one is named;
//! - `SHOW TABLES [FROM|IN [c.]s] [LIKE p]` → `table_catalog, table_schema, table_name,
//!   table_type` (DataFusion's columns, which clients of SQE already read), of every catalog
//!   unless a schema is named;
//! - `SHOW COLUMNS FROM|IN t [LIKE p]` and `DESCRIBE t` → `column_name, data_type, is_nullable`;
//! - `SHOW CREATE TABLE t` → `Create Table`: for an Iceberg table its schema, partitioning and
//!   properties.
//!
//! Other `SHOW` statements go to DataFusion, which plans some (`SHOW FUNCTIONS`, `SHOW
//! datafusion.execution.batch_size`).

use std::sync::Arc;

use arrow::array::{RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::TableReference;
use datafusion::logical_expr::{Expr, LogicalPlan, ident, lit};
use datafusion::prelude::{DataFrame, SessionContext};
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::planner::object_name_to_table_reference;
use datafusion::sql::sqlparser::ast::{
    DescribeAlias, ObjectName, ShowCreateObject, ShowStatementFilter, ShowStatementFilterPosition,
    ShowStatementOptions, Statement,
};

use super::describe::create_table_statement;
use crate::catalog::UserTable;
use crate::error::EngineError;

fn invalid(msg: impl Into<String>) -> EngineError {
    EngineError::InvalidArgument(msg.into())
}

/// The plan for a SHOW form this module answers; `None` for every other statement.
pub async fn plan(
    ctx: &SessionContext,
    statement: &DFStatement,
) -> Result<Option<LogicalPlan>, EngineError> {
    let DFStatement::Statement(statement) = statement else {
        return Ok(None);
    };
    let df = match statement.as_ref() {
        Statement::ShowDatabases {
            terse,
            history,
            show_options,
        } => {
            refuse_flags("SHOW CATALOGS", &[(*terse, "TERSE"), (*history, "HISTORY")])?;
            let options = Options::read("SHOW CATALOGS", show_options)?;
            if options.within.is_some() {
                return Err(invalid("SHOW CATALOGS takes no FROM or IN"));
            }
            catalogs(ctx, options.like).await?
        }
        Statement::ShowSchemas {
            terse,
            history,
            show_options,
        } => {
            refuse_flags("SHOW SCHEMAS", &[(*terse, "TERSE"), (*history, "HISTORY")])?;
            let options = Options::read("SHOW SCHEMAS", show_options)?;
            let catalog = match options.within.as_ref() {
                None => current_catalog(ctx),
                Some(name) => match reference(ctx, name)? {
                    TableReference::Bare { table } => table.to_string(),
                    _ => return Err(invalid("SHOW SCHEMAS FROM takes a catalog name")),
                },
            };
            schemas(ctx, catalog, options.like).await?
        }
        Statement::ShowTables {
            terse,
            history,
            extended,
            full,
            external,
            show_options,
        } => {
            refuse_flags(
                "SHOW TABLES",
                &[
                    (*terse, "TERSE"),
                    (*history, "HISTORY"),
                    (*extended, "EXTENDED"),
                    (*full, "FULL"),
                    (*external, "EXTERNAL"),
                ],
            )?;
            let options = Options::read("SHOW TABLES", show_options)?;
            let within = match options.within.as_ref() {
                None => None,
                Some(name) => Some(match reference(ctx, name)? {
                    TableReference::Bare { table } => (current_catalog(ctx), table.to_string()),
                    TableReference::Partial { schema, table } => {
                        (schema.to_string(), table.to_string())
                    }
                    TableReference::Full { .. } => {
                        return Err(invalid(
                            "SHOW TABLES FROM takes a schema: `s` or `catalog.s`",
                        ));
                    }
                }),
            };
            tables(ctx, within, options.like).await?
        }
        Statement::ShowColumns {
            extended,
            full,
            show_options,
        } => {
            refuse_flags("SHOW COLUMNS", &[(*extended, "EXTENDED"), (*full, "FULL")])?;
            let options = Options::read("SHOW COLUMNS", show_options)?;
            let Some(table) = options.within.as_ref() else {
                return Err(invalid("SHOW COLUMNS needs FROM <table>"));
            };
            columns(ctx, reference(ctx, table)?, options.like).await?
        }
        Statement::ExplainTable {
            describe_alias: DescribeAlias::Describe | DescribeAlias::Desc,
            table_name,
            hive_format,
            ..
        } => {
            if let Some(format) = hive_format {
                return Err(invalid(format!("DESCRIBE {format} is not supported")));
            }
            columns(ctx, reference(ctx, table_name)?, None).await?
        }
        Statement::ShowCreate { obj_type, obj_name } => match obj_type {
            ShowCreateObject::Table => create_table(ctx, obj_name).await?,
            other => {
                return Err(invalid(format!(
                    "SHOW CREATE {other} is not supported; SHOW CREATE TABLE is"
                )));
            }
        },
        _ => return Ok(None),
    };
    Ok(Some(df.into_unoptimized_plan()))
}

fn refuse_flags(form: &str, flags: &[(bool, &str)]) -> Result<(), EngineError> {
    match flags.iter().find(|(set, _)| *set) {
        Some((_, flag)) => Err(invalid(format!("{form} {flag} is not supported"))),
        None => Ok(()),
    }
}

/// What a SHOW statement's options say: the object after FROM/IN and a LIKE pattern.
struct Options<'a> {
    within: Option<&'a ObjectName>,
    like: Option<Pattern>,
}

enum Pattern {
    Like(String),
    ILike(String),
}

impl Pattern {
    fn matches(&self, column: &str) -> Expr {
        match self {
            Pattern::Like(p) => ident(column).like(lit(p.as_str())),
            Pattern::ILike(p) => ident(column).ilike(lit(p.as_str())),
        }
    }
}

impl<'a> Options<'a> {
    fn read(form: &str, options: &'a ShowStatementOptions) -> Result<Self, EngineError> {
        if options.starts_with.is_some() {
            return Err(invalid(format!(
                "{form} … STARTS WITH is not supported; use LIKE"
            )));
        }
        if options.limit.is_some() || options.limit_from.is_some() {
            return Err(invalid(format!("{form} … LIMIT is not supported")));
        }
        let within = match &options.show_in {
            None => None,
            Some(show_in) => {
                if let Some(kind) = &show_in.parent_type {
                    return Err(invalid(format!(
                        "{form} IN {kind} is not supported; name the object alone"
                    )));
                }
                Some(
                    show_in
                        .parent_name
                        .as_ref()
                        .ok_or_else(|| invalid(format!("{form} FROM needs a name")))?,
                )
            }
        };
        let like = match &options.filter_position {
            None => None,
            Some(
                ShowStatementFilterPosition::Suffix(filter)
                | ShowStatementFilterPosition::Infix(filter),
            ) => Some(match filter {
                ShowStatementFilter::Like(p) => Pattern::Like(p.clone()),
                ShowStatementFilter::ILike(p) => Pattern::ILike(p.clone()),
                ShowStatementFilter::NoKeyword(p) => Pattern::Like(p.clone()),
                ShowStatementFilter::Where(_) => {
                    return Err(invalid(format!(
                        "{form} … WHERE is not supported; use LIKE, or query information_schema"
                    )));
                }
            }),
        };
        Ok(Self { within, like })
    }
}

fn current_catalog(ctx: &SessionContext) -> String {
    ctx.state().config_options().catalog.default_catalog.clone()
}

/// A name as the session resolves it (unquoted parts fold to lower case).
fn reference(ctx: &SessionContext, name: &ObjectName) -> Result<TableReference, EngineError> {
    let normalize = ctx
        .state()
        .config_options()
        .sql_parser
        .enable_ident_normalization;
    Ok(object_name_to_table_reference(name.clone(), normalize)?)
}

/// A table of the current catalog's `information_schema`, which lists every catalog.
async fn information_schema(ctx: &SessionContext, table: &str) -> Result<DataFrame, EngineError> {
    Ok(ctx
        .table(TableReference::partial("information_schema", table))
        .await?)
}

fn filtered(df: DataFrame, like: Option<Pattern>, column: &str) -> Result<DataFrame, EngineError> {
    Ok(match like {
        Some(p) => df.filter(p.matches(column))?,
        None => df,
    })
}

/// The session's catalogs, as GetCatalogs lists them: a catalog is there even when the user may
/// see none of its schemas.
async fn catalogs(ctx: &SessionContext, like: Option<Pattern>) -> Result<DataFrame, EngineError> {
    let batch = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new(
            "Catalog",
            DataType::Utf8,
            false,
        )])),
        vec![Arc::new(StringArray::from(ctx.catalog_names()))],
    )?;
    let df = filtered(ctx.read_batch(batch)?, like, "Catalog")?;
    Ok(df.sort(vec![ident("Catalog").sort(true, false)])?)
}

async fn schemas(
    ctx: &SessionContext,
    catalog: String,
    like: Option<Pattern>,
) -> Result<DataFrame, EngineError> {
    let df = information_schema(ctx, "schemata")
        .await?
        .filter(ident("catalog_name").eq(lit(catalog)))?;
    let df = filtered(df, like, "schema_name")?;
    Ok(df
        .select(vec![ident("schema_name").alias("Schema")])?
        .sort(vec![ident("Schema").sort(true, false)])?)
}

async fn tables(
    ctx: &SessionContext,
    within: Option<(String, String)>,
    like: Option<Pattern>,
) -> Result<DataFrame, EngineError> {
    let mut df = information_schema(ctx, "tables").await?;
    if let Some((catalog, schema)) = within {
        df = df.filter(
            ident("table_catalog")
                .eq(lit(catalog))
                .and(ident("table_schema").eq(lit(schema))),
        )?;
    }
    let df = filtered(df, like, "table_name")?;
    Ok(df
        .select_columns(&["table_catalog", "table_schema", "table_name", "table_type"])?
        .sort(vec![
            ident("table_catalog").sort(true, false),
            ident("table_schema").sort(true, false),
            ident("table_name").sort(true, false),
        ])?)
}

/// The table's columns, from the provider loaded as the user (a table the user may not load is
/// refused with the catalog's answer).
async fn columns(
    ctx: &SessionContext,
    table: TableReference,
    like: Option<Pattern>,
) -> Result<DataFrame, EngineError> {
    let schema = ctx.table_provider(table).await?.schema();
    let text = |f: fn(&Field) -> String| {
        Arc::new(StringArray::from_iter_values(
            schema.fields().iter().map(|field| f(field)),
        ))
    };
    let batch = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("column_name", DataType::Utf8, false),
            Field::new("data_type", DataType::Utf8, false),
            Field::new("is_nullable", DataType::Utf8, false),
        ])),
        vec![
            text(|f| f.name().clone()),
            text(|f| f.data_type().to_string()),
            text(|f| if f.is_nullable() { "YES" } else { "NO" }.to_owned()),
        ],
    )?;
    filtered(ctx.read_batch(batch)?, like, "column_name")
}

async fn create_table(ctx: &SessionContext, name: &ObjectName) -> Result<DataFrame, EngineError> {
    let provider = ctx.table_provider(reference(ctx, name)?).await?;
    let text = match provider.as_any().downcast_ref::<UserTable>() {
        Some(table) => create_table_statement(&name.to_string(), table.metadata()),
        None => {
            let columns: Vec<String> = provider
                .schema()
                .fields()
                .iter()
                .map(|f| {
                    let null = if f.is_nullable() { "" } else { " NOT NULL" };
                    format!(
                        "   \"{}\" {}{null}",
                        f.name().replace('"', "\"\""),
                        f.data_type()
                    )
                })
                .collect();
            format!("CREATE TABLE {name} (\n{}\n)", columns.join(",\n"))
        }
    };
    let batch = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new(
            "Create Table",
            DataType::Utf8,
            false,
        )])),
        vec![Arc::new(StringArray::from(vec![text]))],
    )?;
    Ok(ctx.read_batch(batch)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::parse::parse;

    async fn show(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>, EngineError> {
        let parsed = parse(sql)?;
        let plan = plan(ctx, &parsed.statement).await?.expect("a SHOW form");
        Ok(ctx.execute_logical_plan(plan).await?.collect().await?)
    }

    fn strings(batches: &[RecordBatch], column: &str) -> Vec<String> {
        let mut out = Vec::new();
        for b in batches {
            let c = datafusion::arrow::compute::cast(
                b.column_by_name(column).unwrap(),
                &DataType::Utf8,
            )
            .unwrap();
            let c = c.as_any().downcast_ref::<StringArray>().unwrap();
            out.extend(c.iter().map(|v| v.unwrap_or_default().to_owned()));
        }
        out
    }

    async fn context() -> SessionContext {
        let ctx = SessionContext::new_with_config(
            datafusion::prelude::SessionConfig::new().with_information_schema(true),
        );
        for sql in [
            "CREATE SCHEMA datafusion.\"Odd 'name\"",
            "CREATE TABLE datafusion.\"Odd 'name\".\"T x\" (a BIGINT NOT NULL, \"B\" VARCHAR)",
            "CREATE TABLE datafusion.public.t2 (c INT)",
        ] {
            ctx.sql(sql).await.unwrap().collect().await.unwrap();
        }
        ctx
    }

    #[tokio::test]
    async fn catalogs_and_schemas_are_listed_with_their_filters() {
        let ctx = context().await;
        assert_eq!(
            strings(&show(&ctx, "SHOW CATALOGS").await.unwrap(), "Catalog"),
            ["datafusion"]
        );
        assert!(
            strings(
                &show(&ctx, "SHOW CATALOGS LIKE 'x%'").await.unwrap(),
                "Catalog"
            )
            .is_empty()
        );
        assert_eq!(
            strings(&show(&ctx, "SHOW SCHEMAS").await.unwrap(), "Schema"),
            ["Odd 'name", "public"]
        );
        assert_eq!(
            strings(
                &show(&ctx, "SHOW SCHEMAS FROM DataFusion LIKE 'Odd%'")
                    .await
                    .unwrap(),
                "Schema"
            ),
            ["Odd 'name"]
        );
        assert!(
            strings(
                &show(&ctx, "SHOW SCHEMAS IN \"DataFusion\"").await.unwrap(),
                "Schema"
            )
            .is_empty()
        );
    }

    #[tokio::test]
    async fn tables_of_a_schema_with_an_odd_name() {
        let ctx = context().await;
        let b = show(&ctx, "SHOW TABLES FROM \"Odd 'name\"").await.unwrap();
        assert_eq!(strings(&b, "table_name"), ["T x"]);
        let b = show(&ctx, "SHOW TABLES IN datafusion.public LIKE 't_'")
            .await
            .unwrap();
        assert_eq!(strings(&b, "table_name"), ["t2"]);
        // A quote in a pattern is part of the pattern, never the end of a string.
        let b = show(&ctx, "SHOW TABLES LIKE 'x'' OR ''1''=''1'")
            .await
            .unwrap();
        assert!(strings(&b, "table_name").is_empty());
        let all = strings(&show(&ctx, "SHOW TABLES").await.unwrap(), "table_name");
        assert!(
            all.contains(&"T x".to_owned()) && all.contains(&"t2".to_owned()),
            "{all:?}"
        );
    }

    #[tokio::test]
    async fn columns_describe_and_create_table() {
        let ctx = context().await;
        for sql in [
            "SHOW COLUMNS FROM datafusion.\"Odd 'name\".\"T x\"",
            "DESCRIBE datafusion.\"Odd 'name\".\"T x\"",
        ] {
            let b = show(&ctx, sql).await.unwrap();
            assert_eq!(strings(&b, "column_name"), ["a", "B"], "{sql}");
            assert_eq!(strings(&b, "is_nullable"), ["NO", "YES"], "{sql}");
        }
        let b = show(&ctx, "SHOW COLUMNS IN \"Odd 'name\".\"T x\" LIKE 'a%'").await;
        assert_eq!(strings(&b.unwrap(), "column_name"), ["a"]);
        let b = show(&ctx, "SHOW CREATE TABLE public.t2").await.unwrap();
        assert_eq!(
            strings(&b, "Create Table"),
            ["CREATE TABLE public.t2 (\n   \"c\" Int32\n)"]
        );
        let e = show(&ctx, "SHOW COLUMNS FROM public.nope")
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound, "{e}");
    }

    #[tokio::test]
    async fn unsupported_variants_are_refused_by_name() {
        let ctx = context().await;
        for (sql, says) in [
            ("SHOW FULL TABLES", "SHOW TABLES FULL"),
            ("SHOW TABLES FROM a.b.c", "takes a schema"),
            ("SHOW TABLES WHERE x = 1", "WHERE is not supported"),
            ("SHOW SCHEMAS FROM a.b", "takes a catalog"),
            ("SHOW CREATE VIEW v", "SHOW CREATE VIEW"),
            ("SHOW TABLES IN SCHEMA public", "IN SCHEMA"),
        ] {
            let e = show(&ctx, sql).await.unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{sql}: {e}");
            assert!(e.to_string().contains(says), "{sql}: {e}");
        }
        let other = parse("SELECT 1").unwrap();
        assert!(plan(&ctx, &other.statement).await.unwrap().is_none());
    }
}
