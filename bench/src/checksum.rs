//! An order-independent checksum of a result, one value per column, the same that
//! e2e/bench/tpch.py computes from each other system's rows, so answers can be compared:
//!
//! - numbers (integers, floats, decimals) and booleans (true = 1): the sum as f64, `{"n": x}`;
//! - dates: the sum of days since 1970-01-01, `{"n": x}`;
//! - strings: the wrapping u64 sum of each value's FNV-1a 64 hash of its UTF-8 bytes, as 16
//!   hex digits, `{"s": "..."}`;
//! - anything else: `{"t": "<type>"}` (no value compared).
//!
//! Nulls are left out of every sum.

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Date32Type, Date64Type, Float64Type};
use serde_json::{Value, json};

pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

enum Acc {
    Num(f64),
    Str(u64),
    Other(String),
}

fn is_numeric(t: &DataType) -> bool {
    t.is_numeric() || matches!(t, DataType::Boolean)
}

fn add(acc: &mut Acc, col: &ArrayRef) -> anyhow::Result<()> {
    match acc {
        Acc::Num(sum) => match col.data_type() {
            DataType::Date32 => {
                for v in col.as_primitive::<Date32Type>().iter().flatten() {
                    *sum += f64::from(v);
                }
            }
            DataType::Date64 => {
                for v in col.as_primitive::<Date64Type>().iter().flatten() {
                    *sum += (v / 86_400_000) as f64;
                }
            }
            DataType::Boolean => {
                *sum += col.as_boolean().true_count() as f64;
            }
            _ => {
                let f = cast(col, &DataType::Float64)?;
                for v in f.as_primitive::<Float64Type>().iter().flatten() {
                    *sum += v;
                }
            }
        },
        Acc::Str(sum) => {
            let strings: Box<dyn Iterator<Item = Option<&str>>> = match col.data_type() {
                DataType::Utf8 => Box::new(col.as_string::<i32>().iter()),
                DataType::LargeUtf8 => Box::new(col.as_string::<i64>().iter()),
                _ => Box::new(col.as_string_view().iter()),
            };
            for s in strings.flatten() {
                *sum = sum.wrapping_add(fnv1a64(s.as_bytes()));
            }
        }
        Acc::Other(_) => {}
    }
    Ok(())
}

/// The checksum of a result, one JSON value per column.
pub fn checksum(batches: &[RecordBatch]) -> anyhow::Result<Vec<Value>> {
    let Some(first) = batches.first() else {
        return Ok(Vec::new());
    };
    let mut accs: Vec<Acc> = first
        .schema()
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            t if is_numeric(t) => Acc::Num(0.0),
            DataType::Date32 | DataType::Date64 => Acc::Num(0.0),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Acc::Str(0),
            t => Acc::Other(t.to_string()),
        })
        .collect();
    for batch in batches {
        for (acc, col) in accs.iter_mut().zip(batch.columns()) {
            add(acc, col)?;
        }
    }
    Ok(accs
        .into_iter()
        .map(|a| match a {
            Acc::Num(x) => json!({ "n": x }),
            Acc::Str(h) => json!({ "s": format!("{h:016x}") }),
            Acc::Other(t) => json!({ "t": t }),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Date32Array, Decimal128Array, Int64Array, StringArray};
    use std::sync::Arc;

    #[test]
    fn fnv_matches_the_reference_values() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn sums_numbers_dates_and_string_hashes_without_order() {
        let batch = |ids: Vec<i64>, names: Vec<&str>| {
            RecordBatch::try_from_iter(vec![
                ("id", Arc::new(Int64Array::from(ids)) as ArrayRef),
                ("name", Arc::new(StringArray::from(names)) as ArrayRef),
                ("d", Arc::new(Date32Array::from(vec![1, 2])) as ArrayRef),
                (
                    "x",
                    Arc::new(
                        Decimal128Array::from(vec![150, 250])
                            .with_precision_and_scale(15, 2)
                            .unwrap(),
                    ) as ArrayRef,
                ),
            ])
            .unwrap()
        };
        let a = checksum(&[batch(vec![1, 2], vec!["a", "b"])]).unwrap();
        let b = checksum(&[batch(vec![2, 1], vec!["b", "a"])]).unwrap();
        assert_eq!(a, b);
        assert_eq!(a[0], json!({"n": 3.0}));
        assert_eq!(a[2], json!({"n": 3.0}));
        assert_eq!(a[3], json!({"n": 4.0}));
        let want = fnv1a64(b"a").wrapping_add(fnv1a64(b"b"));
        assert_eq!(a[1], json!({"s": format!("{want:016x}")}));
    }
}
