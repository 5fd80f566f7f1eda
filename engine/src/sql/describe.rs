//! `SHOW CREATE TABLE` for an Iceberg table: its schema, partitioning and properties, written as
//! Trino's Iceberg connector writes them, from the metadata the user's own load returned.

use iceberg::spec::{PrimitiveType, TableMetadata, Transform, Type};

use crate::redact::is_secret_key;

/// `'text'` with quotes doubled.
fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// `"name"` when it needs quoting (upper case, odd characters, a leading digit), else as is.
fn ident(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        name.to_owned()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// The SQL type of an Iceberg type (Trino's names).
fn sql_type(t: &Type) -> String {
    match t {
        Type::Primitive(p) => match p {
            PrimitiveType::Boolean => "boolean".into(),
            PrimitiveType::Int => "integer".into(),
            PrimitiveType::Long => "bigint".into(),
            PrimitiveType::Float => "real".into(),
            PrimitiveType::Double => "double".into(),
            PrimitiveType::Decimal { precision, scale } => format!("decimal({precision}, {scale})"),
            PrimitiveType::Date => "date".into(),
            PrimitiveType::Time => "time(6)".into(),
            PrimitiveType::Timestamp => "timestamp(6)".into(),
            PrimitiveType::Timestamptz => "timestamp(6) with time zone".into(),
            PrimitiveType::TimestampNs => "timestamp(9)".into(),
            PrimitiveType::TimestamptzNs => "timestamp(9) with time zone".into(),
            PrimitiveType::String => "varchar".into(),
            PrimitiveType::Uuid => "uuid".into(),
            PrimitiveType::Fixed(_) | PrimitiveType::Binary => "varbinary".into(),
        },
        Type::Struct(s) => format!(
            "row({})",
            s.fields()
                .iter()
                .map(|f| format!("{} {}", ident(&f.name), sql_type(&f.field_type)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Type::List(l) => format!("array({})", sql_type(&l.element_field.field_type)),
        Type::Map(m) => format!(
            "map({}, {})",
            sql_type(&m.key_field.field_type),
            sql_type(&m.value_field.field_type)
        ),
    }
}

/// One partition field as Trino writes it: `id`, `bucket(id, 16)`, `day(ts)`.
fn partition_field(transform: &Transform, column: &str) -> String {
    match transform {
        Transform::Identity => column.to_owned(),
        Transform::Bucket(n) => format!("bucket({column}, {n})"),
        Transform::Truncate(w) => format!("truncate({column}, {w})"),
        other => format!("{other}({column})"),
    }
}

/// The `CREATE TABLE` statement for `name` (as the user wrote it) and its metadata.
pub fn create_table_statement(name: &str, metadata: &TableMetadata) -> String {
    let schema = metadata.current_schema();
    let columns: Vec<String> = schema
        .as_struct()
        .fields()
        .iter()
        .map(|f| {
            let mut column = format!("   {} {}", ident(&f.name), sql_type(&f.field_type));
            if f.required {
                column.push_str(" NOT NULL");
            }
            if let Some(doc) = &f.doc {
                column.push_str(&format!(" COMMENT {}", quoted(doc)));
            }
            column
        })
        .collect();
    let mut with = vec![
        format!("   format_version = {}", metadata.format_version() as u8),
        format!("   location = {}", quoted(metadata.location())),
    ];
    let partitioning: Vec<String> = metadata
        .default_partition_spec()
        .fields()
        .iter()
        .map(|p| {
            let column = schema
                .name_by_field_id(p.source_id)
                .map(ident)
                .unwrap_or_else(|| format!("<field {}>", p.source_id));
            quoted(&partition_field(&p.transform, &column))
        })
        .collect();
    if !partitioning.is_empty() {
        with.push(format!(
            "   partitioning = ARRAY[{}]",
            partitioning.join(", ")
        ));
    }
    let mut properties: Vec<(&String, &String)> = metadata
        .properties()
        .iter()
        .filter(|(k, _)| !is_secret_key(k))
        .collect();
    properties.sort();
    with.extend(
        properties
            .into_iter()
            .map(|(k, v)| format!("   \"{}\" = {}", k.replace('"', "\"\""), quoted(v))),
    );
    format!(
        "CREATE TABLE {name} (\n{}\n)\nWITH (\n{}\n)",
        columns.join(",\n"),
        with.join(",\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata() -> TableMetadata {
        serde_json::from_value(serde_json::json!({
            "format-version": 2,
            "table-uuid": "9c12d441-03fe-4693-9a96-a0705ddf69c1",
            "location": "s3://warehouse/demo/a'b",
            "last-sequence-number": 0,
            "last-updated-ms": 1_700_000_000_000i64,
            "last-column-id": 4,
            "current-schema-id": 0,
            "schemas": [{"type": "struct", "schema-id": 0, "fields": [
                {"id": 1, "name": "id", "required": true, "type": "long", "doc": "the key's id"},
                {"id": 2, "name": "Name", "required": false, "type": "string"},
                {"id": 3, "name": "ts", "required": false, "type": "timestamptz"},
                {"id": 4, "name": "tags", "required": false, "type":
                    {"type": "list", "element-id": 5, "element": "decimal(10, 2)", "element-required": false}}
            ]}],
            "default-spec-id": 1,
            "partition-specs": [{"spec-id": 1, "fields": [
                {"source-id": 1, "field-id": 1000, "name": "id_bucket", "transform": "bucket[16]"},
                {"source-id": 3, "field-id": 1001, "name": "ts_day", "transform": "day"},
                {"source-id": 2, "field-id": 1002, "name": "Name", "transform": "identity"}
            ]}],
            "last-partition-id": 1002,
            "default-sort-order-id": 0,
            "sort-orders": [{"order-id": 0, "fields": []}],
            "properties": {"write.format.default": "parquet", "owner": "alice",
                           "s3.secret-access-key": "do-not-show", "x.token": "nor-this"},
            "snapshots": [],
            "snapshot-log": [],
            "metadata-log": []
        }))
        .unwrap()
    }

    #[test]
    fn the_statement_shows_schema_partitioning_and_properties() {
        let text = create_table_statement("lake.demo.a", &metadata());
        assert_eq!(
            text,
            "CREATE TABLE lake.demo.a (\n\
             \x20  id bigint NOT NULL COMMENT 'the key''s id',\n\
             \x20  \"Name\" varchar,\n\
             \x20  ts timestamp(6) with time zone,\n\
             \x20  tags array(decimal(10, 2))\n\
             )\n\
             WITH (\n\
             \x20  format_version = 2,\n\
             \x20  location = 's3://warehouse/demo/a''b',\n\
             \x20  partitioning = ARRAY['bucket(id, 16)', 'day(ts)', '\"Name\"'],\n\
             \x20  \"owner\" = 'alice',\n\
             \x20  \"write.format.default\" = 'parquet'\n\
             )"
        );
    }

    #[test]
    fn properties_that_may_hold_a_credential_are_left_out() {
        let text = create_table_statement("t", &metadata());
        assert!(
            !text.contains("do-not-show") && !text.contains("nor-this"),
            "{text}"
        );
        assert!(is_secret_key("client.Password") && !is_secret_key("write.format.default"));
    }
}
