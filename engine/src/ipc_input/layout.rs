//! How arrow-ipc will decode a schema's columns: which field nodes and buffers each takes,
//! refusing the types and parameters it would panic on.

use std::collections::HashMap;

use arrow::ipc::{self, Type};

use crate::error::EngineError;

/// Anything refused here: the message says what, for the client.
pub(super) fn malformed(what: impl std::fmt::Display) -> EngineError {
    EngineError::InvalidArgument(format!("malformed Arrow IPC: {what}"))
}

/// How the decoder walks a column: which field nodes and buffers it takes, in order.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Layout {
    /// One node, no buffer.
    Null,
    /// One node, a validity and a values buffer (fixed width types, booleans).
    Fixed,
    /// Like `Fixed`, for integers of this many bytes that arrow views as one typed slice (the
    /// indices of a dictionary-encoded column, run ends).
    Indices(usize),
    /// One node; validity, offsets (of this many bytes) and data buffers.
    Bytes(usize),
    /// One node; validity, views and as many data buffers as its variadic count says.
    View,
    /// One node; validity and offsets (of this many bytes) buffers; the child (lists, large
    /// lists, maps).
    List(usize, Box<Layout>),
    /// One node; validity, offsets and sizes (of this many bytes) buffers; the child.
    ListView(usize, Box<Layout>),
    /// One node; a validity buffer; the child.
    FixedSizeList(Box<Layout>),
    /// One node; a validity buffer; the children.
    Struct(Vec<Layout>),
    /// One node, no buffer; the run ends and the values.
    RunEnds(Box<Layout>, Box<Layout>),
}

/// What the stream's schema says about the batches that follow it.
#[derive(Debug)]
pub(super) struct Shape {
    pub(super) columns: Vec<Layout>,
    /// The values of each dictionary, by id. Like arrow-ipc, the first field with an id decides.
    pub(super) dictionaries: HashMap<i64, Layout>,
}

/// The shape of a schema, refusing what `arrow_ipc::convert::fb_to_schema` would panic on.
pub(super) fn shape(schema: ipc::Schema) -> Result<Shape, EngineError> {
    if schema.endianness() != ipc::Endianness::Little {
        return Err(malformed("big-endian data is not accepted"));
    }
    let fields = schema
        .fields()
        .ok_or_else(|| malformed("a schema without fields"))?;
    let mut dictionaries = HashMap::new();
    let columns = fields
        .iter()
        .map(|f| column_layout(f, &mut dictionaries))
        .collect::<Result<_, _>>()?;
    Ok(Shape {
        columns,
        dictionaries,
    })
}

/// A field as a column of a batch: a dictionary-encoded one is its indices (its values come in
/// dictionary batches, recorded under its id).
pub(super) fn column_layout(
    field: ipc::Field,
    dictionaries: &mut HashMap<i64, Layout>,
) -> Result<Layout, EngineError> {
    let Some(dictionary) = field.dictionary() else {
        return value_layout(field, dictionaries);
    };
    let index = dictionary
        .indexType()
        .ok_or_else(|| malformed("a dictionary without an index type"))?;
    let index_bytes = int_bytes(index.bitWidth())?;
    // This field comes before the fields nested in it (arrow-ipc's order): it decides its id.
    let id = dictionary.id();
    let first = !dictionaries.contains_key(&id);
    let values = value_layout(field, dictionaries)?;
    if first {
        dictionaries.insert(id, values);
    }
    Ok(Layout::Indices(index_bytes))
}

/// The bytes of an integer of `bits` bits, if arrow-ipc knows it.
pub(super) fn int_bytes(bits: i32) -> Result<usize, EngineError> {
    match bits {
        8 | 16 | 32 | 64 => Ok(bits as usize / 8),
        _ => Err(malformed(format!("an integer of {bits} bits"))),
    }
}

/// A field's values, checked as `arrow_ipc::convert::get_data_type` reads them.
pub(super) fn value_layout(
    field: ipc::Field,
    dictionaries: &mut HashMap<i64, Layout>,
) -> Result<Layout, EngineError> {
    let ty = field.type_type();
    let missing = || malformed(format!("a {ty:?} field without its type parameters"));
    let unsupported = |what: String| malformed(format!("a {ty:?} field with {what}"));
    let children = || field.children().map(|c| c.iter().collect::<Vec<_>>());
    let only_child = |dictionaries: &mut HashMap<i64, Layout>| match children().as_deref() {
        Some([child]) => column_layout(*child, dictionaries).map(Box::new),
        _ => Err(malformed(format!(
            "a {ty:?} field without exactly one child"
        ))),
    };
    Ok(match ty {
        Type::Null => Layout::Null,
        Type::Bool => Layout::Fixed,
        Type::Int => {
            int_bytes(field.type_as_int().ok_or_else(missing)?.bitWidth())?;
            Layout::Fixed
        }
        Type::FloatingPoint => match field
            .type_as_floating_point()
            .ok_or_else(missing)?
            .precision()
        {
            ipc::Precision::HALF | ipc::Precision::SINGLE | ipc::Precision::DOUBLE => Layout::Fixed,
            p => return Err(unsupported(format!("precision {p:?}"))),
        },
        Type::Decimal => {
            let d = field.type_as_decimal().ok_or_else(missing)?;
            let max_precision = match d.bitWidth() {
                32 => 9,
                64 => 18,
                128 => 38,
                256 => 76,
                bits => return Err(unsupported(format!("{bits} bits"))),
            };
            if !(1..=max_precision).contains(&d.precision())
                || !(-128..=d.precision()).contains(&d.scale())
            {
                return Err(unsupported(format!(
                    "precision {} and scale {}",
                    d.precision(),
                    d.scale()
                )));
            }
            Layout::Fixed
        }
        Type::Date => match field.type_as_date().ok_or_else(missing)?.unit() {
            ipc::DateUnit::DAY | ipc::DateUnit::MILLISECOND => Layout::Fixed,
            u => return Err(unsupported(format!("unit {u:?}"))),
        },
        Type::Time => {
            let t = field.type_as_time().ok_or_else(missing)?;
            match (t.bitWidth(), t.unit()) {
                (32, ipc::TimeUnit::SECOND | ipc::TimeUnit::MILLISECOND)
                | (64, ipc::TimeUnit::MICROSECOND | ipc::TimeUnit::NANOSECOND) => Layout::Fixed,
                (bits, unit) => return Err(unsupported(format!("{bits} bits in {unit:?}"))),
            }
        }
        Type::Timestamp => time_unit(field.type_as_timestamp().ok_or_else(missing)?.unit())
            .map_err(|u| unsupported(format!("unit {u:?}")))?,
        Type::Duration => time_unit(field.type_as_duration().ok_or_else(missing)?.unit())
            .map_err(|u| unsupported(format!("unit {u:?}")))?,
        Type::Interval => match field.type_as_interval().ok_or_else(missing)?.unit() {
            ipc::IntervalUnit::YEAR_MONTH
            | ipc::IntervalUnit::DAY_TIME
            | ipc::IntervalUnit::MONTH_DAY_NANO => Layout::Fixed,
            u => return Err(unsupported(format!("unit {u:?}"))),
        },
        Type::FixedSizeBinary => {
            let width = field
                .type_as_fixed_size_binary()
                .ok_or_else(missing)?
                .byteWidth();
            if width < 0 {
                return Err(unsupported(format!("width {width}")));
            }
            Layout::Fixed
        }
        Type::Binary | Type::Utf8 => Layout::Bytes(4),
        Type::LargeBinary | Type::LargeUtf8 => Layout::Bytes(8),
        Type::BinaryView | Type::Utf8View => Layout::View,
        Type::List => Layout::List(4, only_child(dictionaries)?),
        Type::LargeList => Layout::List(8, only_child(dictionaries)?),
        Type::Map => {
            field.type_as_map().ok_or_else(missing)?;
            Layout::List(4, only_child(dictionaries)?)
        }
        Type::ListView => Layout::ListView(4, only_child(dictionaries)?),
        Type::LargeListView => Layout::ListView(8, only_child(dictionaries)?),
        Type::FixedSizeList => {
            let size = field
                .type_as_fixed_size_list()
                .ok_or_else(missing)?
                .listSize();
            if size < 0 {
                return Err(unsupported(format!("size {size}")));
            }
            Layout::FixedSizeList(only_child(dictionaries)?)
        }
        Type::Struct_ => Layout::Struct(
            children()
                .unwrap_or_default()
                .into_iter()
                .map(|c| column_layout(c, dictionaries))
                .collect::<Result<_, _>>()?,
        ),
        Type::RunEndEncoded => match children().as_deref() {
            Some([run_ends, values]) if run_ends.dictionary().is_none() => {
                let run_ends = run_ends
                    .type_as_int()
                    .ok_or_else(|| malformed("a RunEndEncoded field without integer run ends"))?;
                Layout::RunEnds(
                    Box::new(Layout::Indices(int_bytes(run_ends.bitWidth())?)),
                    Box::new(column_layout(*values, dictionaries)?),
                )
            }
            _ => {
                return Err(malformed(
                    "a RunEndEncoded field without integer run ends and values",
                ));
            }
        },
        Type::Union => {
            return Err(EngineError::InvalidArgument(
                "union-typed columns are not accepted".into(),
            ));
        }
        other => return Err(malformed(format!("an unknown type {other:?}"))),
    })
}

pub(super) fn time_unit(unit: ipc::TimeUnit) -> Result<Layout, ipc::TimeUnit> {
    match unit {
        ipc::TimeUnit::SECOND
        | ipc::TimeUnit::MILLISECOND
        | ipc::TimeUnit::MICROSECOND
        | ipc::TimeUnit::NANOSECOND => Ok(Layout::Fixed),
        u => Err(u),
    }
}
