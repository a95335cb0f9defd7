//! Column values: a JSON value of a row image, read as the column's Delta
//! type, exactly (no silent rounding), with Debezium's default encodings.
//!
//! When the record came with Kafka Connect's schema, the field's semantic
//! type decides (`io.debezium.time.Date`: days; `…Timestamp`: ms;
//! `…MicroTimestamp`: µs; `…NanoTimestamp`: ns; `…ZonedTimestamp`: ISO text
//! with a zone; `org.apache.kafka.connect.data.Decimal`: base64 unscaled
//! bytes at the schema's scale). Without it the text decides: ISO dates and
//! instants, decimal text (`decimal.handling.mode=string`) or numbers
//! (`double`), a whole number of days for a date, and for an integer
//! timestamp the column's `unit`.

use super::spec::{FieldSource, TimestampUnit};
use super::json::Json;
use super::{err, truncate, DecodeError, ErrorKind};
use base64::Engine;
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use deltalake::arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float64Builder, Int16Builder, Int32Builder,
    Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use deltalake::arrow::datatypes::{DataType, TimeUnit};
use std::sync::Arc;

/// One typed value.
#[derive(Clone, Debug, PartialEq)]
pub enum Scalar {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    /// Unscaled, at the column's scale.
    Decimal(i128),
    /// Days since the epoch.
    Date(i32),
    /// Microseconds since the epoch, UTC.
    Micros(i64),
    Bytes(Vec<u8>),
}

impl Eq for Scalar {}

impl std::hash::Hash for Scalar {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        std::mem::discriminant(self).hash(state);
        match self {
            Scalar::Null => {}
            Scalar::Bool(b) => b.hash(state),
            Scalar::Int(i) | Scalar::Micros(i) => i.hash(state),
            Scalar::Float(f) => f.to_bits().hash(state),
            Scalar::Text(s) => s.hash(state),
            Scalar::Decimal(d) => d.hash(state),
            Scalar::Date(d) => d.hash(state),
            Scalar::Bytes(b) => b.hash(state),
        }
    }
}

/// A total order (nulls first, then by type, then by value): keys sort, so
/// that the upsert writes rows in key order and file statistics prune well.
impl Ord for Scalar {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        fn rank(s: &Scalar) -> u8 {
            match s {
                Scalar::Null => 0,
                Scalar::Bool(_) => 1,
                Scalar::Int(_) => 2,
                Scalar::Float(_) => 3,
                Scalar::Text(_) => 4,
                Scalar::Decimal(_) => 5,
                Scalar::Date(_) => 6,
                Scalar::Micros(_) => 7,
                Scalar::Bytes(_) => 8,
            }
        }
        match (self, other) {
            (Scalar::Bool(a), Scalar::Bool(b)) => a.cmp(b),
            (Scalar::Int(a), Scalar::Int(b)) | (Scalar::Micros(a), Scalar::Micros(b)) => a.cmp(b),
            (Scalar::Float(a), Scalar::Float(b)) => a.total_cmp(b),
            (Scalar::Text(a), Scalar::Text(b)) => a.cmp(b),
            (Scalar::Decimal(a), Scalar::Decimal(b)) => a.cmp(b),
            (Scalar::Date(a), Scalar::Date(b)) => a.cmp(b),
            (Scalar::Bytes(a), Scalar::Bytes(b)) => a.cmp(b),
            _ => rank(self).cmp(&rank(other)),
        }
    }
}

impl PartialOrd for Scalar {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Scalar {
    pub fn is_null(&self) -> bool {
        matches!(self, Scalar::Null)
    }
}

impl std::fmt::Display for Scalar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scalar::Null => f.write_str("null"),
            Scalar::Bool(b) => write!(f, "{b}"),
            Scalar::Int(i) => write!(f, "{i}"),
            Scalar::Float(x) => write!(f, "{x}"),
            Scalar::Text(s) => write!(f, "`{}`", truncate(s, 40)),
            Scalar::Decimal(d) => write!(f, "{d} (unscaled)"),
            Scalar::Date(d) => write!(f, "{}", epoch_date() + chrono::Duration::days(i64::from(*d))),
            Scalar::Micros(m) => write!(f, "{}", DateTime::from_timestamp_micros(*m).map(|t| t.to_rfc3339()).unwrap_or_default()),
            Scalar::Bytes(b) => write!(f, "{} bytes", b.len()),
        }
    }
}

pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// The types a row image can fill.
pub fn supported(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Utf8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::Boolean
            | DataType::Float64
            | DataType::Date32
            | DataType::Binary
            | DataType::Decimal128(_, _)
    ) || *t == timestamp_type()
}

fn epoch_date() -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")
}

pub fn days_since_epoch(d: NaiveDate) -> i32 {
    d.signed_duration_since(epoch_date()).num_days() as i32
}

/// What Kafka Connect's schema says of a field: its semantic type name and,
/// for a decimal, its scale.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FieldHint {
    pub name: Option<String>,
    pub scale: Option<i8>,
}

impl FieldHint {
    fn is(&self, name: &str) -> bool {
        self.name.as_deref() == Some(name)
    }
}

/// A field's name in messages, e.g. `after.price`, formatted only when a
/// message needs it (decoding reads millions of fields that need none).
pub struct FieldName<'a>(pub &'a str, pub &'a [String]);

impl std::fmt::Display for FieldName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.0, self.1.join("."))
    }
}

/// Reads `value` (None: the field is absent) as a value of `data_type`.
/// `at` names the field in messages, e.g. `after.price`.
pub fn read(
    value: Option<&Json>,
    data_type: &DataType,
    source: &FieldSource,
    hint: Option<&FieldHint>,
    at: &dyn std::fmt::Display,
) -> Result<Scalar, DecodeError> {
    let value = match value {
        None | Some(Json::Null) => None,
        Some(Json::String(s)) if source.null_if.iter().any(|n| n == s.as_ref()) => None,
        Some(v) => Some(v),
    };
    let Some(value) = value else {
        if source.required {
            return Err(err(ErrorKind::MissingField, format!("{at}: missing")));
        }
        return Ok(Scalar::Null);
    };
    let wrong = |expected: &str| err(ErrorKind::WrongType, format!("{at}: expected {expected}, found {}", value.type_name()));
    let invalid = |why: String| err(ErrorKind::InvalidValue, format!("{at}: {why}"));
    let default_hint = FieldHint::default();
    let hint = hint.unwrap_or(&default_hint);
    let scalar = match data_type {
        DataType::Utf8 => match value {
            Json::String(s) => Scalar::Text(s.to_string()),
            Json::Number(n) if source.numbers_as_text => Scalar::Text(n.to_string()),
            // A column added by evolution from an object or array holds its JSON.
            Json::Object(_) | Json::Array(_) | Json::Bool(_) | Json::Number(_) if source.numbers_as_text && source.evolved => {
                Scalar::Text(value.to_string())
            }
            _ => return Err(wrong("a string")),
        },
        DataType::Int16 | DataType::Int32 | DataType::Int64 => {
            let Json::Number(n) = value else { return Err(wrong("a whole number")) };
            let i = n.as_i64().ok_or_else(|| invalid(format!("{n} is not a whole 64-bit number")))?;
            let (lo, hi, bits) = match data_type {
                DataType::Int16 => (i64::from(i16::MIN), i64::from(i16::MAX), 16),
                DataType::Int32 => (i64::from(i32::MIN), i64::from(i32::MAX), 32),
                _ => (i64::MIN, i64::MAX, 64),
            };
            if i < lo || i > hi {
                return Err(invalid(format!("{i} does not fit a {bits}-bit int")));
            }
            if let Some(min) = source.min.filter(|m| i < *m) {
                return Err(invalid(format!("{i} is below the minimum {min}")));
            }
            Scalar::Int(i)
        }
        DataType::Boolean => match value {
            Json::Bool(b) => Scalar::Bool(*b),
            // MySQL's TINYINT(1), as the connector sends it without a converter.
            Json::Number(n) if n.as_i64() == Some(0) || n.as_i64() == Some(1) => Scalar::Bool(n.as_i64() == Some(1)),
            _ => return Err(wrong("a boolean")),
        },
        DataType::Float64 => match value {
            Json::Number(n) => Scalar::Float(n.as_f64().ok_or_else(|| invalid(format!("{n} is not a number")))?),
            _ => return Err(wrong("a number")),
        },
        DataType::Decimal128(p, s) => Scalar::Decimal(read_decimal(value, *p, *s, hint).map_err(|e| match e {
            DecimalError::Type => wrong("a decimal number"),
            DecimalError::Value(why) => invalid(why),
        })?),
        DataType::Date32 => match value {
            Json::String(s) => Scalar::Date(parse_date(s).ok_or_else(|| invalid(format!("`{}` is not a date (YYYY-MM-DD)", truncate(s, 40))))?),
            Json::Number(n) => {
                // io.debezium.time.Date: days since the epoch.
                let days = n.as_i64().and_then(|d| i32::try_from(d).ok()).ok_or_else(|| invalid(format!("{n} is not a whole number of days")))?;
                Scalar::Date(days)
            }
            _ => return Err(wrong("a date")),
        },
        DataType::Binary => match value {
            Json::String(s) => Scalar::Bytes(
                base64::engine::general_purpose::STANDARD.decode(s.as_bytes()).map_err(|_| invalid("is not base64 (binary.handling.mode=bytes)".into()))?,
            ),
            _ => return Err(wrong("base64 text")),
        },
        t if *t == timestamp_type() => match value {
            Json::String(s) => Scalar::Micros(parse_instant(s).ok_or_else(|| {
                invalid(format!("`{}` is not an ISO-8601 timestamp (e.g. 2024-05-01T10:00:00Z)", truncate(s, 40)))
            })?),
            Json::Number(n) => {
                let i = n.as_i64().ok_or_else(|| invalid(format!("{n} is not a whole number")))?;
                let unit = if hint.is("io.debezium.time.Timestamp") || hint.is("org.apache.kafka.connect.data.Timestamp") {
                    TimestampUnit::Millis
                } else if hint.is("io.debezium.time.MicroTimestamp") {
                    TimestampUnit::Micros
                } else if hint.is("io.debezium.time.NanoTimestamp") {
                    TimestampUnit::Nanos
                } else if let Some(u) = source.unit {
                    u
                } else {
                    return Err(invalid(format!(
                        "{i} is a number: its unit comes from the Connect schema (schemas.enable=true) or `unit` (millis, micros, nanos) in the column's definition"
                    )));
                };
                Scalar::Micros(match unit {
                    TimestampUnit::Millis => i.checked_mul(1000).ok_or_else(|| invalid(format!("{i} ms is out of range")))?,
                    TimestampUnit::Micros => i,
                    TimestampUnit::Nanos => i.div_euclid(1000),
                })
            }
            _ => return Err(wrong("a timestamp")),
        },
        other => return Err(invalid(format!("type {other} cannot be read from JSON"))),
    };
    if let (Some(re), Scalar::Text(s)) = (&source.pattern, &scalar) {
        if !re.is_match(s) {
            return Err(invalid(format!("`{}` does not match the pattern `{}`", truncate(s, 40), re.as_str())));
        }
    }
    Ok(scalar)
}

enum DecimalError {
    Type,
    Value(String),
}

fn read_decimal(value: &Json, precision: u8, scale: i8, hint: &FieldHint) -> Result<i128, DecimalError> {
    let unscaled = match value {
        // decimal.handling.mode=double, or a JSON number: its text is exact.
        Json::Number(n) => parse_decimal(&n.to_string(), scale)?,
        Json::String(s) => {
            let connect_decimal = hint.is("org.apache.kafka.connect.data.Decimal");
            match (connect_decimal, parse_decimal(s, scale)) {
                (false, Ok(v)) => v,
                // decimal.handling.mode=precise: base64 of the unscaled big-endian two's complement.
                (_, parsed) => match decode_unscaled(s) {
                    Some(raw) => rescale(raw, hint.scale.unwrap_or(scale), scale)?,
                    None => return Err(parsed.err().unwrap_or_else(|| DecimalError::Value(format!("`{}` is not base64", truncate(s, 40))))),
                },
            }
        }
        _ => return Err(DecimalError::Type),
    };
    let max = 10i128.pow(u32::from(precision)) - 1;
    if unscaled.abs() > max {
        return Err(DecimalError::Value(format!("{} is out of range for decimal({precision},{scale})", show(unscaled, scale))));
    }
    Ok(unscaled)
}

fn show(unscaled: i128, scale: i8) -> String {
    if scale <= 0 {
        return unscaled.to_string();
    }
    let p = 10i128.pow(scale as u32);
    let sign = if unscaled < 0 { "-" } else { "" };
    format!("{sign}{}.{:0width$}", unscaled.abs() / p, unscaled.abs() % p, width = scale as usize)
}

/// Decimal text in plain notation at `scale`, refusing anything that would round.
fn parse_decimal(text: &str, scale: i8) -> Result<i128, DecimalError> {
    let t = text.trim();
    let bad = || DecimalError::Value(format!("`{}` is not a decimal number", truncate(text, 40)));
    let (negative, digits) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t),
    };
    let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() && frac.is_empty() || !all_digits(whole) || !all_digits(frac) {
        return Err(bad());
    }
    let frac = frac.trim_end_matches('0');
    let scale_u = scale.max(0) as usize;
    if frac.len() > scale_u {
        return Err(DecimalError::Value(format!("`{}` has more than {scale} decimal places", truncate(text, 40))));
    }
    let out_of_range = || DecimalError::Value(format!("`{}` is out of range", truncate(text, 40)));
    let whole: i128 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| out_of_range())? };
    let frac_value: i128 = if frac.is_empty() { 0 } else { frac.parse::<i128>().map_err(|_| bad())? * 10i128.pow((scale_u - frac.len()) as u32) };
    let v = whole.checked_mul(10i128.pow(scale_u as u32)).and_then(|w| w.checked_add(frac_value)).ok_or_else(out_of_range)?;
    Ok(if negative { -v } else { v })
}

fn decode_unscaled(text: &str) -> Option<i128> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(text).ok()?;
    if bytes.is_empty() || bytes.len() > 16 {
        return None;
    }
    let negative = bytes[0] & 0x80 != 0;
    let mut buf = if negative { [0xffu8; 16] } else { [0u8; 16] };
    buf[16 - bytes.len()..].copy_from_slice(&bytes);
    Some(i128::from_be_bytes(buf))
}

fn rescale(unscaled: i128, from: i8, to: i8) -> Result<i128, DecimalError> {
    if from == to {
        return Ok(unscaled);
    }
    if from < to {
        return unscaled
            .checked_mul(10i128.pow((to - from) as u32))
            .ok_or_else(|| DecimalError::Value("is out of range".into()));
    }
    let p = 10i128.pow((from - to) as u32);
    if unscaled % p != 0 {
        return Err(DecimalError::Value(format!("{} has more than {to} decimal places", show(unscaled, from))));
    }
    Ok(unscaled / p)
}

pub fn parse_date(s: &str) -> Option<i32> {
    // The common `YYYY-MM-DD` read straight from its digits: chrono's
    // `parse_from_str` parses its format string again for every value.
    if let [y0, y1, y2, y3, b'-', m0, m1, b'-', d0, d1] = s.as_bytes() {
        let digits = [y0, y1, y2, y3, m0, m1, d0, d1];
        if digits.iter().all(|b| b.is_ascii_digit()) {
            let n = |bytes: &[&u8]| bytes.iter().fold(0u32, |acc, b| acc * 10 + u32::from(**b - b'0'));
            let (year, month, day) = (n(&digits[..4]) as i32, n(&digits[4..6]), n(&digits[6..]));
            return NaiveDate::from_ymd_opt(year, month, day).map(days_since_epoch);
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok().map(days_since_epoch)
}

/// An ISO-8601 instant: with a zone (`Z`, `+02:00`: io.debezium.time.ZonedTimestamp)
/// it is converted to UTC; without one it is taken as UTC.
pub fn parse_instant(s: &str) -> Option<i64> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc).timestamp_micros());
    }
    for f in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
            return Some(t.and_utc().timestamp_micros());
        }
    }
    None
}

/// The Delta type a new column gets from a value (`on_new_column = "evolve"`):
/// the Connect schema's semantic type when the record has one, else the JSON
/// type (a whole number: bigint; another number: double; text: string; an
/// object or array: string holding its JSON). None for a null.
pub fn infer(value: &Json, hint: Option<&FieldHint>) -> Option<DataType> {
    if value.is_null() {
        return None;
    }
    if let Some(h) = hint {
        match h.name.as_deref() {
            Some("io.debezium.time.Date") | Some("org.apache.kafka.connect.data.Date") => return Some(DataType::Date32),
            Some("io.debezium.time.Timestamp")
            | Some("io.debezium.time.MicroTimestamp")
            | Some("io.debezium.time.NanoTimestamp")
            | Some("io.debezium.time.ZonedTimestamp")
            | Some("org.apache.kafka.connect.data.Timestamp") => return Some(timestamp_type()),
            Some("org.apache.kafka.connect.data.Decimal") => return Some(DataType::Decimal128(38, h.scale.unwrap_or(0).clamp(0, 38))),
            _ => {}
        }
    }
    Some(match value {
        Json::Bool(_) => DataType::Boolean,
        Json::Number(n) if n.is_i64() || n.is_u64() => DataType::Int64,
        Json::Number(_) => DataType::Float64,
        _ => DataType::Utf8,
    })
}

/// An Arrow array of `data_type` from scalars read for it.
pub fn array(data_type: &DataType, values: &[&Scalar]) -> Result<ArrayRef, String> {
    let n = values.len();
    let mismatch = |v: &Scalar| format!("value {v} does not fit a {data_type} column");
    Ok(match data_type {
        DataType::Utf8 => {
            let mut b = StringBuilder::with_capacity(n, n * 8);
            for v in values {
                match *v {
                    Scalar::Null => b.append_null(),
                    Scalar::Text(s) => b.append_value(s),
                    other => return Err(mismatch(other)),
                }
            }
            Arc::new(b.finish())
        }
        DataType::Int16 => {
            let mut b = Int16Builder::with_capacity(n);
            for v in values {
                match *v {
                    Scalar::Null => b.append_null(),
                    Scalar::Int(i) => b.append_value(i16::try_from(*i).map_err(|_| mismatch(*v))?),
                    other => return Err(mismatch(other)),
                }
            }
            Arc::new(b.finish())
        }
        DataType::Int32 => {
            let mut b = Int32Builder::with_capacity(n);
            for v in values {
                match *v {
                    Scalar::Null => b.append_null(),
                    Scalar::Int(i) => b.append_value(i32::try_from(*i).map_err(|_| mismatch(*v))?),
                    other => return Err(mismatch(other)),
                }
            }
            Arc::new(b.finish())
        }
        DataType::Int64 => {
            let mut b = Int64Builder::with_capacity(n);
            for v in values {
                match *v {
                    Scalar::Null => b.append_null(),
                    Scalar::Int(i) => b.append_value(*i),
                    other => return Err(mismatch(other)),
                }
            }
            Arc::new(b.finish())
        }
        DataType::Boolean => {
            let mut b = BooleanBuilder::with_capacity(n);
            for v in values {
                match *v {
                    Scalar::Null => b.append_null(),
                    Scalar::Bool(x) => b.append_value(*x),
                    other => return Err(mismatch(other)),
                }
            }
            Arc::new(b.finish())
        }
        DataType::Float64 => {
            let mut b = Float64Builder::with_capacity(n);
            for v in values {
                match *v {
                    Scalar::Null => b.append_null(),
                    Scalar::Float(x) => b.append_value(*x),
                    other => return Err(mismatch(other)),
                }
            }
            Arc::new(b.finish())
        }
        DataType::Decimal128(p, s) => {
            let mut b = Decimal128Builder::with_capacity(n).with_precision_and_scale(*p, *s).map_err(|e| e.to_string())?;
            for v in values {
                match *v {
                    Scalar::Null => b.append_null(),
                    Scalar::Decimal(d) => b.append_value(*d),
                    other => return Err(mismatch(other)),
                }
            }
            Arc::new(b.finish())
        }
        DataType::Date32 => {
            let mut b = Date32Builder::with_capacity(n);
            for v in values {
                match *v {
                    Scalar::Null => b.append_null(),
                    Scalar::Date(d) => b.append_value(*d),
                    other => return Err(mismatch(other)),
                }
            }
            Arc::new(b.finish())
        }
        DataType::Binary => {
            let mut b = BinaryBuilder::with_capacity(n, n * 8);
            for v in values {
                match *v {
                    Scalar::Null => b.append_null(),
                    Scalar::Bytes(x) => b.append_value(x),
                    other => return Err(mismatch(other)),
                }
            }
            Arc::new(b.finish())
        }
        t if *t == timestamp_type() => {
            let mut b = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
            for v in values {
                match *v {
                    Scalar::Null => b.append_null(),
                    Scalar::Micros(m) => b.append_value(*m),
                    other => return Err(mismatch(other)),
                }
            }
            Arc::new(b.finish())
        }
        other => return Err(format!("type {other} is not supported in a change table")),
    })
}

/// The scalar at `row` of an Arrow array of a supported type.
pub fn scalar_at(array: &dyn deltalake::arrow::array::Array, row: usize) -> Scalar {
    use deltalake::arrow::array::AsArray;
    use deltalake::arrow::datatypes::{Date32Type, Decimal128Type, Float64Type, Int16Type, Int32Type, Int64Type, TimestampMicrosecondType};
    if array.is_null(row) {
        return Scalar::Null;
    }
    match array.data_type() {
        DataType::Utf8 => Scalar::Text(array.as_string::<i32>().value(row).to_string()),
        DataType::LargeUtf8 => Scalar::Text(array.as_string::<i64>().value(row).to_string()),
        DataType::Utf8View => Scalar::Text(array.as_string_view().value(row).to_string()),
        DataType::Int16 => Scalar::Int(i64::from(array.as_primitive::<Int16Type>().value(row))),
        DataType::Int32 => Scalar::Int(i64::from(array.as_primitive::<Int32Type>().value(row))),
        DataType::Int64 => Scalar::Int(array.as_primitive::<Int64Type>().value(row)),
        DataType::Boolean => Scalar::Bool(array.as_boolean().value(row)),
        DataType::Float64 => Scalar::Float(array.as_primitive::<Float64Type>().value(row)),
        DataType::Decimal128(_, _) => Scalar::Decimal(array.as_primitive::<Decimal128Type>().value(row)),
        DataType::Date32 => Scalar::Date(array.as_primitive::<Date32Type>().value(row)),
        DataType::Timestamp(TimeUnit::Microsecond, _) => Scalar::Micros(array.as_primitive::<TimestampMicrosecondType>().value(row)),
        DataType::Binary => Scalar::Bytes(array.as_binary::<i32>().value(row).to_vec()),
        _ => Scalar::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field() -> FieldSource {
        FieldSource { path: vec!["x".into()], required: false, null_if: vec![], pattern: None, min: None, unit: None, numbers_as_text: false, evolved: false }
    }

    fn hint(name: &str, scale: Option<i8>) -> FieldHint {
        FieldHint { name: Some(name.into()), scale }
    }

    #[test]
    fn dates_read_from_their_digits_as_chrono_reads_them() {
        let chrono = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok().map(days_since_epoch);
        for s in ["2019-12-09", "1970-01-01", "0000-01-01", "2024-02-29", "2023-02-29", "2019-13-01", "2019-00-10", "2019-1-09", "2019-12-9", "20191209", "2019/12/09", " 2019-12-09", "+2019-12-09", "2019-12-09x", ""] {
            assert_eq!(parse_date(s), chrono(s), "{s:?}");
        }
        assert_eq!(parse_date("1970-01-02"), Some(1));
    }

    #[test]
    fn debezium_encodings_decode_exactly() {
        let f = field();
        let dec = DataType::Decimal128(12, 2);
        // 1500.25 at scale 2 = 150025 = 0x02_4A_09 -> base64 "AkoJ"
        let b64 = Json::from(serde_json::json!("AkoJ"));
        assert_eq!(read(Some(&b64), &dec, &f, Some(&hint("org.apache.kafka.connect.data.Decimal", Some(2))), &"a"), Ok(Scalar::Decimal(150025)));
        // scale 3 in the schema, 2 in the column: exact when the last digit is 0
        assert_eq!(read(Some(&b64), &dec, &f, Some(&hint("org.apache.kafka.connect.data.Decimal", Some(3))), &"a").unwrap_err().kind, ErrorKind::InvalidValue);
        assert_eq!(read(Some(&Json::from(serde_json::json!("-0.05"))), &dec, &f, None, &"a"), Ok(Scalar::Decimal(-5)));
        assert_eq!(read(Some(&Json::from(serde_json::json!(1500.5))), &dec, &f, None, &"a"), Ok(Scalar::Decimal(150050)));
        assert_eq!(read(Some(&Json::from(serde_json::json!(1.005))), &dec, &f, None, &"a").unwrap_err().kind, ErrorKind::InvalidValue);
        // negative base64: -1 = 0xFF
        assert_eq!(read(Some(&Json::from(serde_json::json!("/w=="))), &dec, &f, Some(&hint("org.apache.kafka.connect.data.Decimal", Some(2))), &"a"), Ok(Scalar::Decimal(-1)));
        let ts = timestamp_type();
        let us = 1_700_000_000_123_456i64;
        assert_eq!(read(Some(&Json::from(serde_json::json!(us))), &ts, &f, Some(&hint("io.debezium.time.MicroTimestamp", None)), &"a"), Ok(Scalar::Micros(us)));
        assert_eq!(read(Some(&Json::from(serde_json::json!(us / 1000))), &ts, &f, Some(&hint("io.debezium.time.Timestamp", None)), &"a"), Ok(Scalar::Micros(us / 1000 * 1000)));
        assert_eq!(read(Some(&Json::from(serde_json::json!(us * 1000))), &ts, &f, Some(&hint("io.debezium.time.NanoTimestamp", None)), &"a"), Ok(Scalar::Micros(us)));
        assert_eq!(read(Some(&Json::from(serde_json::json!(us))), &ts, &f, None, &"a").unwrap_err().kind, ErrorKind::InvalidValue, "no unit");
        let zoned = Json::from(serde_json::json!("2023-11-14T23:13:20.123456+01:00"));
        assert_eq!(read(Some(&zoned), &ts, &f, None, &"a"), Ok(Scalar::Micros(us)));
        assert_eq!(read(Some(&Json::from(serde_json::json!(19000))), &DataType::Date32, &f, None, &"a"), Ok(Scalar::Date(19000)));
        assert_eq!(read(Some(&Json::from(serde_json::json!("2022-01-08"))), &DataType::Date32, &f, None, &"a"), Ok(Scalar::Date(19000)));
        let e = read(Some(&Json::from(serde_json::json!(true))), &dec, &f, None, &"after.price").unwrap_err();
        assert_eq!(e.message, "after.price: expected a decimal number, found a boolean");
        assert_eq!(read(Some(&Json::from(serde_json::json!("3"))), &DataType::Int32, &f, None, &"a").unwrap_err().kind, ErrorKind::WrongType);
        assert_eq!(read(Some(&Json::from(serde_json::json!(1i64 << 40))), &DataType::Int32, &f, None, &"a").unwrap_err().kind, ErrorKind::InvalidValue);
    }
}
