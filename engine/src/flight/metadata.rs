//! Flight SQL metadata: GetCatalogs, GetDbSchemas, GetTables, GetTableTypes and
//! GetXdbcTypeInfo.
//!
//! Every listing is read from the caller's own DataFusion context, i.e. through that user's
//! catalog, so a Flight SQL client sees exactly what `SHOW TABLES` and `information_schema`
//! show the same user — nothing is listed from an engine-wide view.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow_flight::sql::metadata::{XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder};
use arrow_flight::sql::{
    CommandGetCatalogs, CommandGetDbSchemas, CommandGetTableTypes, CommandGetTables, Nullable,
    Searchable, XdbcDataType, XdbcDatetimeSubcode,
};
use datafusion::datasource::TableType;
use datafusion::prelude::SessionContext;

use super::results::{DoGetStream, one_batch};
use crate::error::EngineError;
use crate::exec::Executor;
use crate::session::Session;

/// The table types this server can report, in the spelling JDBC tools expect.
pub const TABLE_TYPES: [&str; 3] = ["TABLE", "VIEW", "LOCAL TEMPORARY"];

pub fn table_type_name(t: TableType) -> &'static str {
    match t {
        TableType::Base => "TABLE",
        TableType::View => "VIEW",
        TableType::Temporary => "LOCAL TEMPORARY",
    }
}

/// SQL `LIKE` as Flight SQL defines its filter patterns: `%` any run, `_` one character,
/// everything else literal (case-sensitive, as identifiers are stored). A `None` pattern
/// matches everything.
pub fn like(pattern: Option<&str>, value: &str) -> bool {
    let Some(pattern) = pattern else {
        return true;
    };
    let p: Vec<char> = pattern.chars().collect();
    let v: Vec<char> = value.chars().collect();
    // Iterative wildcard match with backtracking to the last `%`: linear in practice and
    // never recursive, so a hostile pattern cannot blow the stack.
    let (mut pi, mut vi) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while vi < v.len() {
        if pi < p.len() && (p[pi] == '_' || p[pi] == v[vi]) && p[pi] != '%' {
            pi += 1;
            vi += 1;
        } else if pi < p.len() && p[pi] == '%' {
            star = Some((pi, vi));
            pi += 1;
        } else if let Some((sp, sv)) = star {
            pi = sp + 1;
            vi = sv + 1;
            star = Some((sp, sv + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '%')
}

/// What GetTables asked for.
#[derive(Debug, Default, Clone)]
pub struct TableFilter {
    pub catalog: Option<String>,
    pub schema_pattern: Option<String>,
    pub table_pattern: Option<String>,
    pub table_types: Vec<String>,
}

/// One row of GetTables.
#[derive(Debug, Clone)]
pub struct TableEntry {
    pub catalog: String,
    pub schema: String,
    pub table: String,
    pub table_type: &'static str,
    pub arrow_schema: SchemaRef,
}

/// Catalog names the user can see.
pub fn catalogs(ctx: &SessionContext) -> Vec<String> {
    let mut names = ctx.catalog_names();
    names.sort();
    names
}

/// (catalog, schema) pairs matching the filters.
pub fn schemas(
    ctx: &SessionContext,
    catalog: Option<&str>,
    schema_pattern: Option<&str>,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for c in catalogs(ctx) {
        if catalog.is_some_and(|want| want != c) {
            continue;
        }
        let Some(provider) = ctx.catalog(&c) else {
            continue;
        };
        for s in provider.schema_names() {
            if like(schema_pattern, &s) {
                out.push((c.clone(), s));
            }
        }
    }
    out.sort();
    out
}

/// Tables matching the filters. Names are filtered before any table is opened, so a narrow
/// pattern costs one catalog round trip per matching table, not one per table in the catalog.
/// A table that vanished or became forbidden between listing and opening is left out rather
/// than failing the whole listing.
pub async fn tables(
    ctx: &SessionContext,
    filter: &TableFilter,
) -> Result<Vec<TableEntry>, EngineError> {
    let mut out = Vec::new();
    for (c, s) in schemas(
        ctx,
        filter.catalog.as_deref(),
        filter.schema_pattern.as_deref(),
    ) {
        let Some(schema) = ctx.catalog(&c).and_then(|cat| cat.schema(&s)) else {
            continue;
        };
        let mut names = schema.table_names();
        names.sort();
        for t in names {
            if !like(filter.table_pattern.as_deref(), &t) {
                continue;
            }
            let provider = match schema.table(&t).await {
                Ok(Some(p)) => p,
                Ok(None) => continue,
                Err(e) => match EngineError::from(e) {
                    EngineError::NotFound(_) | EngineError::PermissionDenied(_) => continue,
                    other => return Err(other),
                },
            };
            let table_type = table_type_name(provider.table_type());
            if !filter.table_types.is_empty() && !filter.table_types.iter().any(|w| w == table_type)
            {
                continue;
            }
            out.push(TableEntry {
                catalog: c.clone(),
                schema: s.clone(),
                table: t,
                table_type,
                arrow_schema: provider.schema(),
            });
        }
    }
    Ok(out)
}

fn type_info(
    name: &str,
    data_type: XdbcDataType,
    column_size: Option<i32>,
    searchable: Searchable,
    literal_quote: bool,
) -> XdbcTypeInfo {
    let numeric = matches!(
        data_type,
        XdbcDataType::XdbcTinyint
            | XdbcDataType::XdbcSmallint
            | XdbcDataType::XdbcInteger
            | XdbcDataType::XdbcBigint
            | XdbcDataType::XdbcReal
            | XdbcDataType::XdbcDouble
            | XdbcDataType::XdbcDecimal
    );
    XdbcTypeInfo {
        type_name: name.to_string(),
        data_type,
        column_size,
        literal_prefix: literal_quote.then(|| "'".to_string()),
        literal_suffix: literal_quote.then(|| "'".to_string()),
        create_params: (data_type == XdbcDataType::XdbcDecimal)
            .then(|| vec!["precision".to_string(), "scale".to_string()]),
        nullable: Nullable::NullabilityNullable,
        case_sensitive: data_type == XdbcDataType::XdbcVarchar,
        searchable,
        unsigned_attribute: numeric.then_some(false),
        fixed_prec_scale: data_type == XdbcDataType::XdbcDecimal,
        auto_increment: numeric.then_some(false),
        local_type_name: Some(name.to_string()),
        minimum_scale: (data_type == XdbcDataType::XdbcDecimal).then_some(0),
        maximum_scale: (data_type == XdbcDataType::XdbcDecimal).then_some(38),
        sql_data_type: match data_type {
            XdbcDataType::XdbcDate | XdbcDataType::XdbcTimestamp => XdbcDataType::XdbcDatetime,
            other => other,
        },
        datetime_subcode: match data_type {
            // ODBC's SQL_CODE_DATE is 1, which the proto happens to name `YEAR`.
            XdbcDataType::XdbcDate => Some(XdbcDatetimeSubcode::XdbcSubcodeYear),
            XdbcDataType::XdbcTimestamp => Some(XdbcDatetimeSubcode::XdbcSubcodeTimestamp),
            _ => None,
        },
        num_prec_radix: numeric.then_some(10),
        interval_precision: None,
    }
}

/// The SQL types the engine reads and writes (the Iceberg primitive types DataFusion maps).
pub fn xdbc_type_info() -> Result<XdbcTypeInfoData, EngineError> {
    use Searchable::{Basic, Full};
    use XdbcDataType::*;
    let mut b = XdbcTypeInfoDataBuilder::new();
    for info in [
        type_info("BOOLEAN", XdbcBit, Some(1), Basic, false),
        type_info("TINYINT", XdbcTinyint, Some(3), Basic, false),
        type_info("SMALLINT", XdbcSmallint, Some(5), Basic, false),
        type_info("INTEGER", XdbcInteger, Some(10), Basic, false),
        type_info("BIGINT", XdbcBigint, Some(19), Basic, false),
        type_info("REAL", XdbcReal, Some(7), Basic, false),
        type_info("DOUBLE", XdbcDouble, Some(15), Basic, false),
        type_info("DECIMAL", XdbcDecimal, Some(38), Basic, false),
        type_info("VARCHAR", XdbcVarchar, Some(i32::MAX), Full, true),
        type_info("VARBINARY", XdbcVarbinary, Some(i32::MAX), Basic, false),
        type_info("DATE", XdbcDate, Some(10), Basic, true),
        type_info("TIMESTAMP", XdbcTimestamp, Some(29), Basic, true),
    ] {
        b.append(info);
    }
    b.build().map_err(|e| EngineError::Internal(e.to_string()))
}

/// GetCatalogs: the catalogs of the caller's context.
pub fn catalogs_answer(ctx: &SessionContext, query: CommandGetCatalogs) -> DoGetStream {
    let mut builder = query.into_builder();
    for c in catalogs(ctx) {
        builder.append(c);
    }
    let schema = builder.schema();
    one_batch(schema, builder.build())
}

/// GetDbSchemas: the caller's schemas matching the command's filters.
pub fn schemas_answer(ctx: &SessionContext, query: CommandGetDbSchemas) -> DoGetStream {
    let found = schemas(
        ctx,
        query.catalog.as_deref(),
        query.db_schema_filter_pattern.as_deref(),
    );
    let mut builder = query.into_builder();
    for (c, s) in found {
        builder.append(c, s);
    }
    let schema = builder.schema();
    one_batch(schema, builder.build())
}

/// GetTables: the tables the caller may load, matching the command's filters.
pub async fn tables_answer(
    executor: &Executor,
    session: &Arc<Session>,
    query: CommandGetTables,
) -> Result<DoGetStream, EngineError> {
    let filter = TableFilter {
        catalog: query.catalog.clone(),
        schema_pattern: query.db_schema_filter_pattern.clone(),
        table_pattern: query.table_name_filter_pattern.clone(),
        table_types: query.table_types.clone(),
    };
    let found = executor
        .planned(
            session,
            move |ctx| async move { tables(&ctx, &filter).await },
        )
        .await?;
    let mut builder = query.into_builder();
    for t in found {
        builder
            .append(t.catalog, t.schema, t.table, t.table_type, &t.arrow_schema)
            .map_err(|e| EngineError::Internal(e.to_string()))?;
    }
    let schema = builder.schema();
    Ok(one_batch(schema, builder.build()))
}

/// GetTableTypes: the types [`TABLE_TYPES`] names.
pub fn table_types_answer(query: CommandGetTableTypes) -> DoGetStream {
    let mut builder = query.into_builder();
    for t in TABLE_TYPES {
        builder.append(t);
    }
    let schema = builder.schema();
    one_batch(schema, builder.build())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::Schema;
    use datafusion::arrow::array::{Int32Array, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Field};
    use datafusion::datasource::MemTable;
    use datafusion::prelude::SessionConfig;

    #[test]
    fn like_follows_flight_sql_patterns() {
        assert!(like(None, "anything"));
        assert!(like(Some("%"), ""));
        assert!(like(Some("a%"), "abc"));
        assert!(like(Some("%c"), "abc"));
        assert!(like(Some("a_c"), "abc"));
        assert!(!like(Some("a_c"), "abbc"));
        assert!(like(Some("%b%"), "abc"));
        assert!(!like(Some("demo"), "demo2"));
        assert!(like(Some("de%o%"), "demo_x"));
        assert!(
            !like(Some("A%"), "abc"),
            "identifiers compare case-sensitively"
        );
        // A pathological pattern ends quickly instead of exploding.
        let long = "a".repeat(2000);
        assert!(!like(Some(&"%a".repeat(50)), &format!("{long}b")));
    }

    fn ctx_with_tables() -> SessionContext {
        let ctx = SessionContext::new_with_config(
            SessionConfig::new()
                .with_information_schema(true)
                .with_default_catalog_and_schema("lake", "demo"),
        );
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int32, false)]));
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(Int32Array::from(vec![1]))])
            .unwrap();
        for t in ["a", "b", "c"] {
            let table = MemTable::try_new(schema.clone(), vec![vec![batch.clone()]]).unwrap();
            ctx.register_table(t, Arc::new(table)).unwrap();
        }
        ctx
    }

    #[tokio::test]
    async fn listings_come_from_the_callers_context_with_filters_applied() {
        let ctx = ctx_with_tables();
        assert_eq!(catalogs(&ctx), vec!["lake".to_string()]);
        let s = schemas(&ctx, Some("lake"), Some("d%"));
        assert_eq!(s, vec![("lake".to_string(), "demo".to_string())]);
        assert!(schemas(&ctx, Some("other"), None).is_empty());

        let all = tables(
            &ctx,
            &TableFilter {
                schema_pattern: Some("demo".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let names: Vec<_> = all.iter().map(|t| t.table.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert!(all.iter().all(|t| t.table_type == "TABLE"));
        assert_eq!(all[0].arrow_schema.field(0).name(), "x");

        let one_letter_views = tables(
            &ctx,
            &TableFilter {
                table_pattern: Some("_".into()),
                table_types: vec!["VIEW".into()],
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert!(one_letter_views.is_empty(), "{one_letter_views:?}");
    }

    #[test]
    fn type_info_lists_the_engine_types() {
        let data = xdbc_type_info().unwrap();
        let batch = data.record_batch(None).unwrap();
        assert_eq!(batch.num_rows(), 12);
        let varchar = data
            .record_batch(Some(XdbcDataType::XdbcVarchar as i32))
            .unwrap();
        assert_eq!(varchar.num_rows(), 1);
    }
}
