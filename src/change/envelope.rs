//! The shapes a change record comes in, and what Kafka Connect's schema says
//! about its fields.
//!
//! - a Debezium envelope `{"op":…,"before":…,"after":…,"source":…,"ts_ms":…}`;
//! - the same inside Kafka Connect's JSON converter wrapper
//!   `{"schema":{…},"payload":{…}}` (`schemas.enable=true`); a null payload
//!   is a tombstone;
//! - a plain row image (no `op`): an upsert;
//! - a null value: a Kafka tombstone, which deletes the key of its Kafka key.

use super::value::FieldHint;
use super::json::{Json, Object};
use super::{err, DecodeError, ErrorKind};
use std::collections::HashMap;

/// The semantic types of a struct's fields, by field name.
pub type Hints = HashMap<String, FieldHint>;

/// A record value or key, unwrapped.
pub struct Unwrapped<'a> {
    pub object: Object<'a>,
    /// The Connect schema of the object, when it came wrapped.
    pub schema: Option<Json<'a>>,
}

/// Unwraps `{"schema":…,"payload":…}`. `Ok(None)`: a null payload.
pub fn unwrap(mut obj: Object<'_>) -> Result<Option<Unwrapped<'_>>, DecodeError> {
    if !(obj.contains_key("payload") && obj.contains_key("schema")) {
        return Ok(Some(Unwrapped { object: obj, schema: None }));
    }
    let schema = obj.remove("schema");
    match obj.remove("payload") {
        Some(Json::Object(inner)) => Ok(Some(Unwrapped { object: inner, schema })),
        Some(Json::Null) | None => Ok(None),
        Some(other) => Err(err(ErrorKind::WrongType, format!("payload: expected an object, found {}", other.type_name()))),
    }
}

/// The hints of a struct schema's fields; for an envelope, of its `field`
/// (`after`, `before`) when given.
pub fn hints(schema: Option<&Json>, field: Option<&str>) -> Hints {
    let mut out = Hints::new();
    let Some(mut schema) = schema else { return out };
    if let Some(name) = field {
        match fields(schema).and_then(|f| f.iter().find(|f| f.get("field").and_then(Json::as_str) == Some(name))) {
            Some(s) => schema = s,
            None => return out,
        }
    }
    for f in fields(schema).into_iter().flatten() {
        let Some(field) = f.get("field").and_then(Json::as_str) else { continue };
        let name = f.get("name").and_then(Json::as_str).map(str::to_string);
        let scale = f
            .get("parameters")
            .and_then(|p| p.get("scale"))
            .and_then(|s| s.as_str().and_then(|s| s.parse().ok()).or_else(|| s.as_i64().and_then(|i| i8::try_from(i).ok())));
        out.insert(field.to_string(), FieldHint { name, scale });
    }
    out
}

fn fields<'s, 'a>(schema: &'s Json<'a>) -> Option<&'s [Json<'a>]> {
    schema.get("fields").and_then(Json::as_array)
}

/// A Kafka key as an object of fields (Debezium: a struct of the key
/// columns, with or without the wrapper), or None when it is not one.
pub fn key_object(key: &[u8]) -> Option<(Object<'_>, Hints)> {
    let Ok(Json::Object(obj)) = Json::parse(std::str::from_utf8(key).ok()?) else { return None };
    let unwrapped = unwrap(obj).ok()??;
    let hints = hints(unwrapped.schema.as_ref(), None);
    Some((unwrapped.object, hints))
}
