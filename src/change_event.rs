//! Change events: what the orders application publishes for each change of a
//! row of its `order_lines` table, and how a Kafka record value is decoded
//! into one.
//!
//! Accepted shapes (all JSON):
//! - the Debezium-style envelope `produce` writes:
//!   `{"op":"c|u|d|r","ts_ms":…,"source":{"table":…,"seq":…},"before":…,"after":…}`;
//! - the same wrapped by Kafka Connect's JSON converter: `{"schema":…,"payload":{…}}`;
//! - a plain row (the whole `after` image): an upsert. Its sequence is its
//!   `_seq` field when present, else the Kafka offset (keys stay in one
//!   partition, so offsets order a key's plain rows);
//! - a null value (Kafka tombstone) with a key `{"transaction_no":…,"line_no":…}`:
//!   deletes that line.
//!
//! Anything else is a [`DecodeError`] whose `kind` and message (naming the
//! field) go to the quarantine table.

use crate::order_line::{json_type, price_from_json, OrderLine};
use chrono::NaiveDate;
use serde::Serialize;
use serde_json::{Map, Value};

/// The operation of a change event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Op {
    #[serde(rename = "c")]
    Create,
    #[serde(rename = "u")]
    Update,
    #[serde(rename = "d")]
    Delete,
    /// A snapshot read: the row as it is, an upsert like `c`.
    #[serde(rename = "r")]
    Read,
}

impl Op {
    pub fn code(self) -> &'static str {
        match self {
            Op::Create => "c",
            Op::Update => "u",
            Op::Delete => "d",
            Op::Read => "r",
        }
    }
}

/// The primary key of an order line.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LineKey {
    pub transaction_no: String,
    pub line_no: i32,
}

/// A decoded change of one order line.
#[derive(Clone, Debug, PartialEq)]
pub struct ChangeEvent {
    pub op: Op,
    /// Source sequence: a newer change of a key has a higher `seq`.
    pub seq: i64,
    /// When the change happened at the source (ms since the epoch), if known.
    pub source_ts_ms: Option<i64>,
    pub key: LineKey,
    /// The row after the change; for a delete, the row before it when the event
    /// carries a full `before` image (used to prune by order date), else None.
    pub line: Option<OrderLine>,
    /// The order date of the row before the change, when the event says (its
    /// `before` image): an update may move a line to another date.
    pub before_order_date: Option<NaiveDate>,
}

/// Why a record could not be decoded; `kind` is a stable label for queries
/// and metrics, `message` names the field and the problem.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct DecodeError {
    pub kind: ErrorKind,
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorKind {
    Oversized,
    NotUtf8,
    NotJson,
    NotAnObject,
    MissingField,
    WrongType,
    InvalidValue,
    UnknownOp,
    KeyMismatch,
    TombstoneKey,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 10] = [
        ErrorKind::Oversized,
        ErrorKind::NotUtf8,
        ErrorKind::NotJson,
        ErrorKind::NotAnObject,
        ErrorKind::MissingField,
        ErrorKind::WrongType,
        ErrorKind::InvalidValue,
        ErrorKind::UnknownOp,
        ErrorKind::KeyMismatch,
        ErrorKind::TombstoneKey,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Oversized => "oversized",
            ErrorKind::NotUtf8 => "not_utf8",
            ErrorKind::NotJson => "not_json",
            ErrorKind::NotAnObject => "not_an_object",
            ErrorKind::MissingField => "missing_field",
            ErrorKind::WrongType => "wrong_type",
            ErrorKind::InvalidValue => "invalid_value",
            ErrorKind::UnknownOp => "unknown_op",
            ErrorKind::KeyMismatch => "key_mismatch",
            ErrorKind::TombstoneKey => "tombstone_key",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn err(kind: ErrorKind, message: impl Into<String>) -> DecodeError {
    DecodeError { kind, message: message.into() }
}

/// The envelope `produce` writes, as the orders application would.
#[derive(Serialize)]
pub struct Envelope<'a> {
    pub op: Op,
    pub ts_ms: i64,
    pub source: Source<'a>,
    pub before: Option<&'a OrderLine>,
    pub after: Option<&'a OrderLine>,
}

#[derive(Serialize)]
pub struct Source<'a> {
    pub table: &'a str,
    pub seq: i64,
}

/// Decodes one Kafka record. `offset` stands in for the sequence of plain rows
/// and tombstones, which carry none; `max_bytes` bounds the value size.
pub fn decode(
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    offset: i64,
    max_bytes: usize,
) -> Result<ChangeEvent, DecodeError> {
    let Some(value) = value else {
        return decode_tombstone(key, offset);
    };
    if value.len() > max_bytes {
        return Err(err(
            ErrorKind::Oversized,
            format!("value is {} bytes, the limit (decode.max_record_bytes) is {max_bytes}", value.len()),
        ));
    }
    let text = std::str::from_utf8(value).map_err(|e| err(ErrorKind::NotUtf8, format!("value is not UTF-8: {e}")))?;
    let json: Value = serde_json::from_str(text).map_err(|e| err(ErrorKind::NotJson, format!("value is not JSON: {e}")))?;
    let Value::Object(mut obj) = json else {
        return Err(err(ErrorKind::NotAnObject, format!("value is {}, expected a JSON object", json_type(&json))));
    };
    // Kafka Connect's JSON converter wraps the envelope as {"schema":…, "payload":…}.
    if obj.contains_key("payload") && obj.contains_key("schema") {
        match obj.remove("payload") {
            Some(Value::Object(inner)) => obj = inner,
            Some(Value::Null) | None => return decode_tombstone(key, offset),
            Some(other) => {
                return Err(err(ErrorKind::WrongType, format!("payload: expected an object, found {}", json_type(&other))))
            }
        }
    }
    let event = if obj.contains_key("op") {
        decode_envelope(&obj)?
    } else {
        decode_plain_row(&obj, offset)?
    };
    check_key(key, &event.key)?;
    Ok(event)
}

fn decode_envelope(obj: &Map<String, Value>) -> Result<ChangeEvent, DecodeError> {
    let op = match obj.get("op") {
        Some(Value::String(s)) => match s.as_str() {
            "c" => Op::Create,
            "u" => Op::Update,
            "d" => Op::Delete,
            "r" => Op::Read,
            other => return Err(err(ErrorKind::UnknownOp, format!("op: `{other}` is not one of c, u, d, r"))),
        },
        Some(other) => return Err(err(ErrorKind::WrongType, format!("op: expected a string, found {}", json_type(other)))),
        None => unreachable!("caller checked"),
    };
    let source = match obj.get("source") {
        Some(Value::Object(s)) => s,
        Some(other) => {
            return Err(err(ErrorKind::WrongType, format!("source: expected an object, found {}", json_type(other))))
        }
        None => return Err(err(ErrorKind::MissingField, "source: missing (it carries the sequence `source.seq`)")),
    };
    let seq = required_i64(source, "source.seq", "seq")?;
    let source_ts_ms = match obj.get("ts_ms") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_i64().ok_or_else(|| {
            err(ErrorKind::WrongType, format!("ts_ms: expected whole milliseconds, found {}", json_type(v)))
        })?),
    };
    let image = |name: &str| -> Result<Option<&Map<String, Value>>, DecodeError> {
        match obj.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m)),
            Some(other) => Err(err(ErrorKind::WrongType, format!("{name}: expected an object, found {}", json_type(other)))),
        }
    };
    if op == Op::Delete {
        let before = image("before")?
            .ok_or_else(|| err(ErrorKind::MissingField, "before: a delete (op d) needs the `before` image with the key"))?;
        let key = parse_key(before, "before")?;
        // A full before image lets the writer prune by order date; a key-only one still deletes.
        let line = parse_line(before, "before").ok();
        let before_order_date = line.as_ref().map(|l| l.order_date);
        return Ok(ChangeEvent { op, seq, source_ts_ms, key, line, before_order_date });
    }
    let after = image("after")?
        .ok_or_else(|| err(ErrorKind::MissingField, format!("after: op {} needs the `after` image", op.code())))?;
    let line = parse_line(after, "after")?;
    let before_order_date = image("before")?
        .and_then(|b| b.get("order_date"))
        .and_then(Value::as_str)
        .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok());
    Ok(ChangeEvent { op, seq, source_ts_ms, key: line_key(&line), line: Some(line), before_order_date })
}

fn decode_plain_row(obj: &Map<String, Value>, offset: i64) -> Result<ChangeEvent, DecodeError> {
    let line = parse_line(obj, "value")?;
    let seq = match obj.get("_seq") {
        None | Some(Value::Null) => offset,
        Some(_) => required_i64(obj, "value._seq", "_seq")?,
    };
    Ok(ChangeEvent { op: Op::Update, seq, source_ts_ms: None, key: line_key(&line), line: Some(line), before_order_date: None })
}

fn decode_tombstone(key: Option<&[u8]>, offset: i64) -> Result<ChangeEvent, DecodeError> {
    const NEED: &str = "a tombstone (null value) deletes the line named by its key, which must be \
                        {\"transaction_no\":…,\"line_no\":…}";
    let parsed = key.and_then(|k| serde_json::from_slice::<Value>(k).ok());
    let Some(Value::Object(obj)) = parsed else {
        return Err(err(ErrorKind::TombstoneKey, NEED));
    };
    let key = parse_key(&obj, "key").map_err(|e| err(ErrorKind::TombstoneKey, format!("{NEED}; {}", e.message)))?;
    Ok(ChangeEvent { op: Op::Delete, seq: offset, source_ts_ms: None, key, line: None, before_order_date: None })
}

/// A record's Kafka key, when present, must name the same order as its payload:
/// either the bare transaction number (what `produce` writes) or the full line key.
fn check_key(kafka_key: Option<&[u8]>, key: &LineKey) -> Result<(), DecodeError> {
    let Some(raw) = kafka_key else { return Ok(()) };
    let text = String::from_utf8_lossy(raw);
    if text == key.transaction_no {
        return Ok(());
    }
    if let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(&text) {
        if parse_key(&obj, "key").is_ok_and(|k| k == *key) {
            return Ok(());
        }
    }
    Err(err(
        ErrorKind::KeyMismatch,
        format!(
            "Kafka key `{}` does not match the payload's transaction_no `{}` (line {})",
            truncate(&text, 80),
            key.transaction_no,
            key.line_no
        ),
    ))
}

fn line_key(line: &OrderLine) -> LineKey {
    LineKey { transaction_no: line.transaction_no.clone(), line_no: line.line_no }
}

fn parse_key(obj: &Map<String, Value>, at: &str) -> Result<LineKey, DecodeError> {
    let transaction_no = transaction_no(obj, at)?;
    let line_no = line_no(obj, at)?;
    Ok(LineKey { transaction_no, line_no })
}

fn transaction_no(obj: &Map<String, Value>, at: &str) -> Result<String, DecodeError> {
    let t = required_str(obj, at, "transaction_no")?;
    let digits = t.strip_prefix('C').unwrap_or(t);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || t.len() > 32 {
        return Err(err(
            ErrorKind::InvalidValue,
            format!("{at}.transaction_no: `{}` is not digits with an optional C prefix", truncate(t, 40)),
        ));
    }
    Ok(t.to_string())
}

fn line_no(obj: &Map<String, Value>, at: &str) -> Result<i32, DecodeError> {
    let n = required_i64(obj, &format!("{at}.line_no"), "line_no")?;
    i32::try_from(n)
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| err(ErrorKind::InvalidValue, format!("{at}.line_no: {n} is not a line number (1 or more)")))
}

/// Parses a full row image, naming the first bad field as `at.field`.
fn parse_line(obj: &Map<String, Value>, at: &str) -> Result<OrderLine, DecodeError> {
    let transaction_no = transaction_no(obj, at)?;
    let line_no = line_no(obj, at)?;
    let date_text = required_str(obj, at, "order_date")?;
    let order_date = NaiveDate::parse_from_str(date_text, "%Y-%m-%d").map_err(|_| {
        err(ErrorKind::InvalidValue, format!("{at}.order_date: `{}` is not a date (YYYY-MM-DD)", truncate(date_text, 40)))
    })?;
    let product_no = required_str(obj, at, "product_no")?.to_string();
    let product_name = required_str(obj, at, "product_name")?.to_string();
    let price_value = obj
        .get("price")
        .filter(|v| !v.is_null())
        .ok_or_else(|| err(ErrorKind::MissingField, format!("{at}.price: missing")))?;
    let price = price_from_json(price_value).map_err(|e| {
        let kind = if matches!(price_value, Value::Number(_) | Value::String(_)) {
            ErrorKind::InvalidValue
        } else {
            ErrorKind::WrongType
        };
        err(kind, format!("{at}.price: {e}"))
    })?;
    let quantity_wide = required_i64(obj, &format!("{at}.quantity"), "quantity")?;
    let quantity = i32::try_from(quantity_wide)
        .map_err(|_| err(ErrorKind::InvalidValue, format!("{at}.quantity: {quantity_wide} does not fit a 32-bit int")))?;
    let customer_no = match obj.get("customer_no") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s == "NA" || s.is_empty() => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(other) => {
            return Err(err(
                ErrorKind::WrongType,
                format!("{at}.customer_no: expected a string or null, found {}", json_type(other)),
            ))
        }
    };
    let country = required_str(obj, at, "country")?.to_string();
    Ok(OrderLine { transaction_no, line_no, order_date, product_no, product_name, price, quantity, customer_no, country })
}

fn required_str<'a>(obj: &'a Map<String, Value>, at: &str, field: &str) -> Result<&'a str, DecodeError> {
    match obj.get(field) {
        Some(Value::String(s)) => Ok(s),
        None | Some(Value::Null) => Err(err(ErrorKind::MissingField, format!("{at}.{field}: missing"))),
        Some(other) => Err(err(ErrorKind::WrongType, format!("{at}.{field}: expected a string, found {}", json_type(other)))),
    }
}

fn required_i64(obj: &Map<String, Value>, path: &str, field: &str) -> Result<i64, DecodeError> {
    match obj.get(field) {
        Some(Value::Number(n)) => n
            .as_i64()
            .ok_or_else(|| err(ErrorKind::InvalidValue, format!("{path}: {n} is not a whole 64-bit number"))),
        None | Some(Value::Null) => Err(err(ErrorKind::MissingField, format!("{path}: missing"))),
        Some(other) => Err(err(ErrorKind::WrongType, format!("{path}: expected a whole number, found {}", json_type(other)))),
    }
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests;
