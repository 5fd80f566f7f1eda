//! How big a growing function's result will be, worked out from its arguments before it runs
//! (`functions` reserves it, or refuses it, first).

use arrow::array::{Array, ArrayRef, AsArray, Int64Array};
use arrow::datatypes::{DataType, Int64Type, IntervalMonthDayNanoType};
use datafusion::common::ScalarValue;
use datafusion::error::Result as DFResult;
use datafusion::logical_expr::ColumnarValue;

/// How a growing function's result size follows from its arguments, row by row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Growth {
    /// `repeat(s, n)`: `n` copies of `s`.
    Repeat,
    /// `lpad(s, n [, fill])`, `rpad`: `n` characters of up to 4 bytes.
    Pad,
    /// `array_repeat(x, n)`: `n` copies of `x`.
    Copies,
    /// `array_resize(a, n [, x])`: `n` elements, each the size of `x` or of `a`'s elements.
    Resize,
    /// `range(…)`, `generate_series(…)`: one 8-byte element per step.
    Series,
    /// `replace(s, from, to)`: every occurrence of `from` (at every position, when empty)
    /// becomes `to`.
    Replace,
    /// `regexp_replace(s, pattern, replacement [, flags])`: at most one replacement per
    /// position, plus the matched text once per group reference in the replacement.
    RegexpReplace,
    /// `arrow_cast(x, 'type')`: a fixed-size type (`FixedSizeBinary(n)`,
    /// `FixedSizeList(n, …)`) takes its full width per row, even for nulls.
    Cast,
    /// `array_replace(a, from, to)` (and `_n`, `_all`): every element may become `to`.
    ReplaceElements,
    /// `array_to_string(a, sep [, null])`: a separator (or the null text) per element.
    Join,
    /// `levenshtein(a, b)`: no memory, but work of the product of the lengths, on one thread.
    PairWork,
}

/// One argument, row by row, without widening a scalar to a whole column (nor copying it:
/// a scalar may be a 64 MiB string, and this runs for every batch).
pub(super) enum Arg<'a> {
    Scalar(&'a ScalarValue),
    Array(&'a ArrayRef),
}

/// An array as 64-bit integers.
pub(super) fn int64(a: &dyn Array) -> DFResult<Int64Array> {
    let cast = arrow::compute::cast(a, &DataType::Int64)?;
    Ok(cast.as_primitive::<Int64Type>().clone())
}

/// Per row, the length of a string or binary array (bytes) or of a list array (elements).
pub(super) fn lengths(a: &dyn Array) -> DFResult<Ints> {
    Ok(Ints::Many(int64(
        &arrow::compute::kernels::length::length(a)?,
    )?))
}

impl<'a> Arg<'a> {
    fn of(value: &'a ColumnarValue) -> Self {
        match value {
            ColumnarValue::Scalar(s) => Arg::Scalar(s),
            ColumnarValue::Array(a) => Arg::Array(a),
        }
    }

    /// The argument as 64-bit integers (a count, a bound), nulls as `None`.
    fn ints(&self) -> DFResult<Ints> {
        Ok(match self {
            Arg::Scalar(s) => Ints::One(s.cast_to(&DataType::Int64)?.try_into().ok()),
            Arg::Array(a) => Ints::Many(int64(a.as_ref())?),
        })
    }

    /// Elements of the list in each row.
    fn elements(&self) -> DFResult<Ints> {
        Ok(match self {
            Arg::Scalar(s) => Ints::One(Some(match s {
                ScalarValue::List(l) => l.values().len(),
                ScalarValue::LargeList(l) => l.values().len(),
                ScalarValue::FixedSizeList(l) => l.values().len(),
                _ => 1,
            } as i64)),
            Arg::Array(a) => match a.data_type() {
                DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(_, _) => {
                    lengths(a.as_ref())?
                }
                _ => Ints::One(Some(1)),
            },
        })
    }

    /// Bytes of the value in each row (a string's or binary's length; a list's elements times
    /// their average size; anything else its fixed size).
    fn bytes(&self) -> DFResult<Ints> {
        Ok(match self {
            Arg::Scalar(s) => Ints::One(Some(scalar_bytes(s) as i64)),
            Arg::Array(a) => match a.data_type() {
                DataType::Utf8
                | DataType::LargeUtf8
                | DataType::Utf8View
                | DataType::Binary
                | DataType::LargeBinary
                | DataType::BinaryView => lengths(a.as_ref())?,
                _ => {
                    let per_row = a.get_array_memory_size() / a.len().max(1) + 8;
                    Ints::One(Some(per_row as i64))
                }
            },
        })
    }
}

pub(super) fn scalar_bytes(s: &ScalarValue) -> usize {
    match s {
        ScalarValue::Utf8(v) | ScalarValue::LargeUtf8(v) | ScalarValue::Utf8View(v) => {
            v.as_ref().map_or(0, String::len)
        }
        ScalarValue::Binary(v) | ScalarValue::LargeBinary(v) | ScalarValue::BinaryView(v) => {
            v.as_ref().map_or(0, Vec::len)
        }
        other => other.size(),
    }
}

pub(super) enum Ints {
    One(Option<i64>),
    Many(Int64Array),
}

impl Ints {
    fn get(&self, row: usize) -> Option<i64> {
        match self {
            Ints::One(v) => *v,
            Ints::Many(a) => (row < a.len() && a.is_valid(row)).then(|| a.value(row)),
        }
    }
}

/// The largest value and the sum over `rows` rows that `growth` makes from `args`, in bytes.
pub(super) fn result_size(
    growth: Growth,
    args: &[ColumnarValue],
    rows: usize,
) -> DFResult<(u64, u64)> {
    let arg = |i: usize| args.get(i).map(Arg::of);
    let n = |v: Option<i64>| v.map_or(0, |v| v.max(0) as u64);
    let per_row: Box<dyn Fn(usize) -> u64> = match growth {
        Growth::Repeat | Growth::Pad | Growth::Copies | Growth::Resize => {
            let Some(count) = arg(1) else {
                return Ok((0, 0));
            };
            let count = count.ints()?;
            let size = match (growth, arg(0), arg(2)) {
                (Growth::Pad, _, _) => Ints::One(Some(4)),
                (Growth::Resize, _, Some(fill)) => fill.bytes()?,
                (Growth::Resize, Some(list), None) => element_bytes(&list),
                (_, Some(value), _) => value.bytes()?,
                (_, None, _) => Ints::One(Some(0)),
            };
            Box::new(move |r| n(count.get(r)).saturating_mul(n(size.get(r)).max(1)))
        }
        Growth::Series => {
            let ints: Vec<Ints> = args
                .iter()
                .map(|a| series_points(&Arg::of(a)))
                .collect::<DFResult<_>>()?;
            Box::new(move |r| {
                let v: Vec<Option<i64>> = ints.iter().map(|i| i.get(r)).collect();
                let (start, stop, step) = match v.as_slice() {
                    [stop] => (Some(0), *stop, Some(1)),
                    [start, stop] => (*start, *stop, Some(1)),
                    [start, stop, step, ..] => (*start, *stop, *step),
                    [] => (Some(0), Some(0), Some(1)),
                };
                match (start, stop, step) {
                    (Some(a), Some(b), Some(s)) if s != 0 => {
                        let span = (i128::from(b) - i128::from(a)).unsigned_abs();
                        let steps = span / i128::from(s).unsigned_abs() + 1;
                        u64::try_from(steps).unwrap_or(u64::MAX).saturating_mul(8)
                    }
                    _ => 0,
                }
            })
        }
        Growth::Replace | Growth::RegexpReplace => {
            let (Some(text), Some(from), Some(to)) = (arg(0), arg(1), arg(2)) else {
                return Ok((0, 0));
            };
            let (text, from, to) = (text.bytes()?, from.bytes()?, to.bytes()?);
            let regexp = growth == Growth::RegexpReplace;
            Box::new(move |r| {
                let (s, f, t) = (n(text.get(r)), n(from.get(r)), n(to.get(r)));
                // A literal `from` occurs at most s / |from| times, an empty one at every
                // position; a pattern may match (empty) at every position.
                let matches = if regexp || f == 0 { s + 1 } else { s / f };
                // Group references repeat matched text, and matches do not overlap: all of
                // them together repeat the input at most once per reference (≤ |to| of them).
                let references = if regexp { t.saturating_mul(s) } else { 0 };
                s.saturating_add(matches.saturating_mul(t))
                    .saturating_add(references)
            })
        }
        Growth::ReplaceElements | Growth::Join => {
            let Some(list) = arg(0) else {
                return Ok((0, 0));
            };
            let count = list.elements()?;
            let whole = list.bytes()?;
            let each: Vec<Ints> = match growth {
                Growth::Join => [1, 2]
                    .iter()
                    .filter_map(|&i| arg(i))
                    .map(|a| a.bytes())
                    .collect::<DFResult<_>>()?,
                _ => arg(2).map(|a| a.bytes()).transpose()?.into_iter().collect(),
            };
            Box::new(move |r| {
                let widest = each.iter().map(|e| n(e.get(r))).max().unwrap_or(0);
                n(whole.get(r)).saturating_add(n(count.get(r)).saturating_mul(widest + 8))
            })
        }
        Growth::PairWork => {
            let (Some(a), Some(b)) = (arg(0), arg(1)) else {
                return Ok((0, 0));
            };
            let (a, b) = (a.bytes()?, b.bytes()?);
            Box::new(move |r| n(a.get(r)).saturating_mul(n(b.get(r))))
        }
        Growth::Cast => {
            let width = match args.get(1) {
                Some(ColumnarValue::Scalar(named)) => named_width(named),
                _ => 0,
            };
            Box::new(move |_| width)
        }
    };
    let mut largest = 0u64;
    let mut total = 0u64;
    for r in 0..rows {
        let size = per_row(r);
        largest = largest.max(size);
        total = total.saturating_add(size);
    }
    Ok((largest, total))
}

/// Per row, the average bytes of one element of a list argument.
pub(super) fn element_bytes(list: &Arg) -> Ints {
    let per = match list {
        Arg::Scalar(s) => {
            let elements = match s {
                ScalarValue::List(l) => l.values().len(),
                ScalarValue::LargeList(l) => l.values().len(),
                ScalarValue::FixedSizeList(l) => l.values().len(),
                _ => 1,
            };
            s.size() / elements.max(1)
        }
        Arg::Array(a) => {
            let values = match a.data_type() {
                DataType::List(_) => a.as_list::<i32>().values().len(),
                DataType::LargeList(_) => a.as_list::<i64>().values().len(),
                _ => a.len(),
            };
            a.get_array_memory_size() / values.max(1)
        }
    };
    Ints::One(Some(per as i64 + 8))
}

/// A series bound or step as a number of the series' smallest unit: integers as they are,
/// dates in days, timestamps in their unit, intervals in nanoseconds (a month as 28 days, the
/// most steps it can make). Anything else counts no steps.
pub(super) fn series_points(arg: &Arg) -> DFResult<Ints> {
    let data_type = match arg {
        Arg::Scalar(s) => s.data_type(),
        Arg::Array(a) => a.data_type().clone(),
    };
    match data_type {
        DataType::Interval(arrow::datatypes::IntervalUnit::MonthDayNano) => Ok(match arg {
            Arg::Scalar(ScalarValue::IntervalMonthDayNano(v)) => {
                Ints::One(v.map(|v| interval_nanos(v.months, v.days, v.nanoseconds)))
            }
            Arg::Array(a) => {
                let a = a.as_primitive::<IntervalMonthDayNanoType>();
                Ints::Many(
                    a.iter()
                        .map(|v| v.map(|v| interval_nanos(v.months, v.days, v.nanoseconds)))
                        .collect(),
                )
            }
            _ => Ints::One(None),
        }),
        DataType::Interval(_) => Ok(Ints::One(None)),
        DataType::Timestamp(unit, _) => {
            // Steps are nanoseconds: bring the bounds to nanoseconds too.
            let scale: i64 = match unit {
                arrow::datatypes::TimeUnit::Second => 1_000_000_000,
                arrow::datatypes::TimeUnit::Millisecond => 1_000_000,
                arrow::datatypes::TimeUnit::Microsecond => 1_000,
                arrow::datatypes::TimeUnit::Nanosecond => 1,
            };
            scaled(arg.ints()?, scale)
        }
        DataType::Date32 | DataType::Date64 => {
            let days = match arg {
                Arg::Scalar(s) => Arg::Scalar(&s.cast_to(&DataType::Date32)?).ints()?,
                Arg::Array(a) => Ints::Many(int64(&arrow::compute::cast(a, &DataType::Date32)?)?),
            };
            scaled(days, 86_400_000_000_000)
        }
        _ => arg.ints(),
    }
}

pub(super) fn scaled(ints: Ints, by: i64) -> DFResult<Ints> {
    Ok(match ints {
        Ints::One(v) => Ints::One(v.map(|v| v.saturating_mul(by))),
        Ints::Many(a) => Ints::Many(a.iter().map(|v| v.map(|v| v.saturating_mul(by))).collect()),
    })
}

pub(super) fn interval_nanos(months: i32, days: i32, nanos: i64) -> i64 {
    const DAY: i64 = 86_400_000_000_000;
    i64::from(months)
        .saturating_mul(28 * DAY)
        .saturating_add(i64::from(days).saturating_mul(DAY))
        .saturating_add(nanos)
}

/// Bytes one row of `data_type` takes at least, whatever its value (fixed-size types).
pub(super) fn fixed_width(data_type: &DataType) -> u64 {
    match data_type {
        DataType::FixedSizeBinary(n) => (*n).max(0) as u64,
        DataType::FixedSizeList(field, n) => {
            ((*n).max(0) as u64).saturating_mul(fixed_width(field.data_type()).max(1))
        }
        DataType::Struct(fields) => fields
            .iter()
            .map(|f| fixed_width(f.data_type()))
            .fold(0u64, u64::saturating_add),
        other => other.primitive_width().unwrap_or(0) as u64,
    }
}

/// The per-value width of the type a type name (`'FixedSizeBinary(16)'`) names; 0 for anything
/// else (a variable-width type, a value that is no type name).
pub(super) fn named_width(name: &ScalarValue) -> u64 {
    match name {
        ScalarValue::Utf8(Some(t))
        | ScalarValue::Utf8View(Some(t))
        | ScalarValue::LargeUtf8(Some(t)) => {
            t.parse::<DataType>().map(|d| fixed_width(&d)).unwrap_or(0)
        }
        _ => 0,
    }
}
