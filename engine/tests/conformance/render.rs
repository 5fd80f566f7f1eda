//! Result rows as DataFusion's sqllogictest files spell them: `NULL`, `(empty)`, floats and
//! decimals rounded to 12 places without trailing zeros, everything else as Arrow displays it,
//! and a multi-line last cell (EXPLAIN's plans) as numbered rows.

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float16Type, Float32Type, Float64Type, Schema};
use arrow::error::ArrowError;
use arrow::util::display::{ArrayFormatter, FormatOptions};

/// The sqllogictest column letter of an Arrow type.
pub fn type_letter(data_type: &DataType) -> char {
    use DataType::*;
    match data_type {
        Boolean => 'B',
        Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | UInt64 => 'I',
        Float16 | Float32 | Float64 | Decimal128(..) | Decimal256(..) => 'R',
        Utf8 | LargeUtf8 | Utf8View => 'T',
        Date32 | Date64 | Time32(_) | Time64(_) => 'D',
        Timestamp(..) => 'P',
        Dictionary(key, value)
            if key.is_integer() && matches!(**value, Utf8 | LargeUtf8 | Utf8View) =>
        {
            'T'
        }
        _ => '?',
    }
}

pub fn type_letters(schema: &Schema) -> Vec<char> {
    schema
        .fields()
        .iter()
        .map(|f| type_letter(f.data_type()))
        .collect()
}

/// Every row of `batches` as cells, multi-line last cells expanded.
pub fn rows(batches: &[RecordBatch]) -> Result<Vec<Vec<String>>, ArrowError> {
    let mut rows = Vec::new();
    for batch in batches {
        for row in 0..batch.num_rows() {
            let cells = batch
                .columns()
                .iter()
                .map(|c| cell(c, row))
                .collect::<Result<Vec<_>, _>>()?;
            expand(cells, &mut rows);
        }
    }
    Ok(rows)
}

fn cell(column: &ArrayRef, row: usize) -> Result<String, ArrowError> {
    if column.is_null(row) || column.data_type() == &DataType::Null {
        return Ok("NULL".into());
    }
    Ok(match column.data_type() {
        DataType::Boolean => column.as_boolean().value(row).to_string(),
        DataType::Float16 => {
            let v = f32::from(column.as_primitive::<Float16Type>().value(row));
            float(v as f64, || v.to_string())
        }
        DataType::Float32 => {
            let v = column.as_primitive::<Float32Type>().value(row);
            float(v as f64, || v.to_string())
        }
        DataType::Float64 => {
            let v = column.as_primitive::<Float64Type>().value(row);
            float(v, || v.to_string())
        }
        DataType::Decimal128(..) | DataType::Decimal256(..) => {
            round_plain(&displayed(column, row)?, 12)
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            let text = displayed(column, row)?;
            if text.is_empty() {
                "(empty)".into()
            } else {
                text.trim_end_matches('\n').replace('\0', "\\0")
            }
        }
        DataType::Dictionary(..) => {
            let dictionary = column.as_any_dictionary();
            let key = dictionary.normalized_keys()[row];
            return cell(dictionary.values(), key);
        }
        _ => displayed(column, row)?,
    })
}

fn displayed(column: &ArrayRef, row: usize) -> Result<String, ArrowError> {
    let defaults = datafusion::config::FormatOptions::default();
    let arrow_options: FormatOptions = (&defaults)
        .try_into()
        .map_err(|e: datafusion::error::DataFusionError| ArrowError::ExternalError(Box::new(e)))?;
    let formatter = ArrayFormatter::try_new(column.as_ref(), &arrow_options.with_null("NULL"))?;
    Ok(formatter.value(row).to_string())
}

fn float(value: f64, display: impl Fn() -> String) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value == f64::INFINITY {
        "Infinity".into()
    } else if value == f64::NEG_INFINITY {
        "-Infinity".into()
    } else {
        round_plain(&display(), 12)
    }
}

/// A plain decimal string rounded half-to-even to `digits` fractional digits, without trailing
/// zeros (and without the sign of a zero).
pub fn round_plain(text: &str, digits: usize) -> String {
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (int, frac) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let mut kept: Vec<u8> = int.bytes().chain(frac.bytes().take(digits)).collect();
    let point = int.len();
    if frac.len() > digits {
        let rest = &frac.as_bytes()[digits..];
        let last_odd = kept.last().is_some_and(|d| (d - b'0') % 2 == 1);
        let up = match rest[0] {
            b'6'..=b'9' => true,
            b'5' => rest[1..].iter().any(|d| *d != b'0') || last_odd,
            _ => false,
        };
        if up {
            let mut i = kept.len();
            loop {
                if i == 0 {
                    kept.insert(0, b'1');
                    break;
                }
                i -= 1;
                if kept[i] == b'9' {
                    kept[i] = b'0';
                } else {
                    kept[i] += 1;
                    break;
                }
            }
        }
    }
    let carried = kept.len() - (point + frac.len().min(digits));
    let split = point + carried;
    let int_part = String::from_utf8_lossy(&kept[..split])
        .trim_start_matches('0')
        .to_string();
    let frac_part = String::from_utf8_lossy(&kept[split..])
        .trim_end_matches('0')
        .to_string();
    let int_part = if int_part.is_empty() {
        "0".to_string()
    } else {
        int_part
    };
    let body = if frac_part.is_empty() {
        int_part
    } else {
        format!("{int_part}.{frac_part}")
    };
    if negative && body != "0" {
        format!("-{body}")
    } else {
        body
    }
}

/// A row whose last cell has several lines becomes the row without it, then one numbered row per
/// line, its indentation shown as dashes (how the files spell EXPLAIN's plans).
fn expand(mut cells: Vec<String>, rows: &mut Vec<Vec<String>>) {
    let Some(last) = cells.last() else {
        rows.push(cells);
        return;
    };
    if !last.contains('\n') {
        rows.push(cells);
        return;
    }
    let last = cells.pop().unwrap_or_default();
    rows.push(cells);
    for (i, line) in last.split('\n').enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        rows.push(vec![format!(
            "{:02}){}{}",
            i + 1,
            "-".repeat(indent),
            trimmed
        )]);
    }
}

/// The rounding rule, checked before every run (this test binary has no test harness).
pub fn check_rounding() {
    {
        assert_eq!(round_plain("4.0", 12), "4");
        assert_eq!(round_plain("1.50", 12), "1.5");
        assert_eq!(round_plain("-0", 12), "0");
        assert_eq!(round_plain("0.0000000000001", 12), "0");
        assert_eq!(round_plain("0.30102999566398114", 12), "0.301029995664");
        assert_eq!(round_plain("0.9999999999999", 12), "1");
        assert_eq!(round_plain("-9.9999999999995", 12), "-10");
        assert_eq!(round_plain("0.0000000000005", 12), "0");
        assert_eq!(round_plain("0.0000000000015", 12), "0.000000000002");
        assert_eq!(round_plain("100.00", 12), "100");
        assert_eq!(
            round_plain("100000000000000000000", 12),
            "100000000000000000000"
        );
    }
}
