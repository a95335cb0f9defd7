//! One Kafka record to a change of one row, by the table's definition.
//!
//! The record's value is a Debezium envelope (with or without the Connect
//! wrapper), a plain row, or null (a Kafka tombstone); see [`super::envelope`].
//! The row image is read column by column ([`super::value`]); the key is the
//! primary key columns of the image (of the Kafka key for a tombstone); the
//! sequence comes from `sequence_by` ([`super::sequence`]). Fields the table
//! has no column for follow `on_new_column`. Anything wrong is a
//! [`DecodeError`] naming the field, which sends the record to quarantine.

use super::envelope::{self, Hints};
use super::json::{Json, Object};
use super::sequence::{self, Seq};
use super::spec::{ChangeSpec, ColumnSource, FieldSource, Format, OnNewColumn};
use super::value::{self, Scalar};
use super::{err, truncate, DecodeError, ErrorKind, Key, Op};
use crate::tables::definition::{ColumnDefinition, TableDefinition};
use deltalake::arrow::datatypes::DataType;
use std::collections::HashSet;

/// A record decoded for one table, before its derived columns are evaluated.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub op: Op,
    pub seq: Seq,
    pub source_ts_ms: Option<i64>,
    pub key: Key,
    /// One value per field column ([`Reader::fields`]); for a key-only
    /// image, nulls but for the key.
    pub image: Vec<Scalar>,
    pub full_image: bool,
    /// The full `before` image of an update, when the event carries one.
    pub before: Option<Vec<Scalar>>,
    pub kafka_tombstone: bool,
    /// Fields of the image that are not columns (with `on_new_column = "ignore"`).
    pub ignored_fields: Vec<String>,
    /// Fields of the image that are not columns yet (`on_new_column = "evolve"`),
    /// with the type their value calls for.
    pub new_fields: Vec<(String, DataType)>,
    /// The values of the fields `apply_as_deletes` reads, as text.
    pub flags: Vec<Option<String>>,
}

/// What a table reads from a record: its definition, prepared.
pub struct Reader {
    pub definition: &'static TableDefinition,
    pub spec: &'static ChangeSpec,
    /// The columns read from the row image: (column, source).
    pub fields: Vec<(&'static ColumnDefinition, &'static FieldSource)>,
    /// Positions in `fields` of the primary key columns.
    pub key: Vec<usize>,
    /// Position in `fields` of `key_text`.
    key_text: Option<usize>,
    /// Top-level fields of a row image that are expected: every field of
    /// every record is looked up here, so hashed with foldhash.
    known: HashSet<String, foldhash::fast::RandomState>,
    /// Fields `apply_as_deletes` reads.
    pub flag_fields: Vec<String>,
    bigint_sequence: bool,
}

/// A key as the text of one column: the bytes as UTF-8, or the string a JSON
/// string key holds (Kafka Connect's JSON converter writes `"A-1"`).
fn key_text(raw: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(raw).ok()?;
    match Json::parse(text) {
        Ok(Json::String(s)) => Some(s.into_owned()),
        _ => Some(text.to_string()),
    }
}

/// A field name that can become a Delta column without column mapping.
fn evolvable(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
}

const NEED_TOMBSTONE_KEY: &str = "a tombstone (null value) deletes the row named by its key, which must hold the primary key";

impl Reader {
    /// Prepares a change table's definition (checked at load: see
    /// [`crate::tables::definition`]); None for a table that is not one.
    pub fn new(definition: &'static TableDefinition) -> Option<Reader> {
        let spec = definition.change.as_ref()?;
        let fields: Vec<_> = definition
            .columns
            .iter()
            .filter_map(|c| match &c.source {
                Some(ColumnSource::Field(f)) => Some((c, f)),
                _ => None,
            })
            .collect();
        let position = |name: &str| fields.iter().position(|(c, _)| c.name == name);
        let key = definition.primary_key.iter().map(|k| position(k).expect("key columns are field columns (checked at load)")).collect();
        let key_text = spec.key_text.as_deref().and_then(position);
        let mut known: HashSet<String, foldhash::fast::RandomState> = fields.iter().map(|(_, f)| f.path[0].clone()).collect();
        known.extend(spec.ignore_fields.iter().cloned());
        for alt in &spec.row_sequence_by {
            known.extend(alt.fields.iter().map(|f| f[0].clone()));
        }
        let flag_fields = spec.apply_as_deletes.as_deref().map(super::derive::identifiers).unwrap_or_default();
        known.extend(flag_fields.iter().cloned());
        let bigint_sequence = definition
            .sequence_column
            .as_deref()
            .and_then(|s| definition.column(s))
            .is_none_or(|c| c.data_type == DataType::Int64);
        Some(Reader { definition, spec, fields, key, key_text, known, flag_fields, bigint_sequence })
    }

    pub fn bigint_sequence(&self) -> bool {
        self.bigint_sequence
    }

    /// Decodes one record. `offset` orders plain rows that carry no sequence.
    pub fn decode(&self, key: Option<&[u8]>, value: Option<&[u8]>, offset: i64, max_bytes: usize) -> Result<Change, DecodeError> {
        let Some(value) = value else {
            return self.tombstone(key, offset);
        };
        if value.len() > max_bytes {
            return Err(err(
                ErrorKind::Oversized,
                format!("value is {} bytes, the limit (decode.max_record_bytes) is {max_bytes}", value.len()),
            ));
        }
        let text = std::str::from_utf8(value).map_err(|e| err(ErrorKind::NotUtf8, format!("value is not UTF-8: {e}")))?;
        let json = Json::parse(text).map_err(|e| err(ErrorKind::NotJson, format!("value is not JSON: {e}")))?;
        let Json::Object(obj) = json else {
            return Err(err(ErrorKind::NotAnObject, format!("value is {}, expected a JSON object", json.type_name())));
        };
        let Some(unwrapped) = envelope::unwrap(obj)? else {
            return self.tombstone(key, offset);
        };
        let change = if self.spec.format == Format::Debezium && unwrapped.object.contains_key("op") {
            self.envelope(&unwrapped.object, unwrapped.schema.as_ref())?
        } else {
            self.plain_row(&unwrapped.object, unwrapped.schema.as_ref(), offset)?
        };
        self.check_key(key, &change.key)?;
        Ok(change)
    }

    fn envelope(&self, obj: &Object, schema: Option<&Json>) -> Result<Change, DecodeError> {
        let op = match obj.get("op") {
            Some(Json::String(s)) => match s.as_ref() {
                "c" => Op::Create,
                "u" => Op::Update,
                "d" => Op::Delete,
                "r" => Op::Read,
                other => return Err(err(ErrorKind::UnknownOp, format!("op: `{}` is not one of c, u, d, r", truncate(other, 20)))),
            },
            Some(other) => return Err(err(ErrorKind::WrongType, format!("op: expected a string, found {}", other.type_name()))),
            None => return Err(err(ErrorKind::MissingField, "op: missing")),
        };
        match obj.get("source") {
            None | Some(Json::Null) => {
                let wanted: Vec<String> = self.spec.sequence_by.iter().map(|a| a.describe()).collect();
                return Err(err(ErrorKind::MissingField, format!("source: missing (it carries the sequence: {})", wanted.join(" | "))));
            }
            Some(Json::Object(_)) => {}
            Some(other) => return Err(err(ErrorKind::WrongType, format!("source: expected an object, found {}", other.type_name()))),
        }
        let seq = sequence::read(obj, &self.spec.sequence_by, None, self.bigint_sequence, "")?;
        let source_ts_ms = match obj.get("ts_ms") {
            None | Some(Json::Null) => obj.get("source").and_then(|s| s.get("ts_ms")).and_then(Json::as_i64),
            Some(v) => Some(v.as_i64().ok_or_else(|| {
                err(ErrorKind::WrongType, format!("ts_ms: expected whole milliseconds, found {}", v.type_name()))
            })?),
        };
        let image = |name: &str| -> Result<Option<&Object>, DecodeError> {
            match obj.get(name) {
                None | Some(Json::Null) => Ok(None),
                Some(Json::Object(m)) => Ok(Some(m)),
                Some(other) => Err(err(ErrorKind::WrongType, format!("{name}: expected an object, found {}", other.type_name()))),
            }
        };
        if op == Op::Delete {
            let before = image("before")?
                .ok_or_else(|| err(ErrorKind::MissingField, "before: a delete (op d) needs the `before` image with the key"))?;
            let hints = envelope::hints(schema, Some("before"));
            let key = self.key_of(before, &hints, "before")?;
            // A full before image lets the writer prune by partition; a key-only one still deletes.
            let (image, full_image) = match self.read_image(before, &hints, "before") {
                Ok(values) => (values, true),
                Err(_) => (self.key_only(&key), false),
            };
            let flags = self.flags(before);
            return Ok(Change {
                op,
                seq,
                source_ts_ms,
                key,
                image,
                full_image,
                before: None,
                kafka_tombstone: false,
                ignored_fields: vec![],
                new_fields: vec![],
                flags,
            });
        }
        let after = image("after")?.ok_or_else(|| err(ErrorKind::MissingField, format!("after: op {} needs the `after` image", op.code())))?;
        let hints = envelope::hints(schema, Some("after"));
        let values = self.read_image(after, &hints, "after")?;
        let key = self.key.iter().map(|i| values[*i].clone()).collect();
        let (ignored_fields, new_fields) = self.unknown_fields(after, &hints, "after")?;
        let before = match image("before")? {
            Some(b) => self.read_image(b, &envelope::hints(schema, Some("before")), "before").ok(),
            None => None,
        };
        let flags = self.flags(after);
        Ok(Change { op, seq, source_ts_ms, key, image: values, full_image: true, before, kafka_tombstone: false, ignored_fields, new_fields, flags })
    }

    fn plain_row(&self, obj: &Object, schema: Option<&Json>, offset: i64) -> Result<Change, DecodeError> {
        let hints = envelope::hints(schema, None);
        let values = self.read_image(obj, &hints, "value")?;
        let key = self.key.iter().map(|i| values[*i].clone()).collect();
        let seq = sequence::read(obj, &self.spec.row_sequence_by, Some(offset), self.bigint_sequence, "value")?;
        let (ignored_fields, new_fields) = self.unknown_fields(obj, &hints, "value")?;
        let flags = self.flags(obj);
        Ok(Change {
            op: Op::Update,
            seq,
            source_ts_ms: None,
            key,
            image: values,
            full_image: true,
            before: None,
            kafka_tombstone: false,
            ignored_fields,
            new_fields,
            flags,
        })
    }

    fn tombstone(&self, key: Option<&[u8]>, offset: i64) -> Result<Change, DecodeError> {
        let tombstone_err = |why: String| err(ErrorKind::TombstoneKey, format!("{NEED_TOMBSTONE_KEY} ({}); {why}", self.key_names()));
        let raw = key.ok_or_else(|| tombstone_err("the record has no key".into()))?;
        let key = match envelope::key_object(raw) {
            Some((obj, hints)) => self.key_of(&obj, &hints, "key").map_err(|e| tombstone_err(e.message))?,
            None => match (self.key_text, self.key.as_slice()) {
                (Some(t), [only]) if t == *only => {
                    let text = key_text(raw).ok_or_else(|| tombstone_err("the key is not UTF-8".into()))?;
                    let (column, source) = self.fields[t];
                    let v = value::read(Some(&Json::String(text.into())), &column.data_type, source, None, &"key")
                        .map_err(|e| tombstone_err(e.message))?;
                    vec![v]
                }
                _ => return Err(tombstone_err("the key is not a JSON object".into())),
            },
        };
        Ok(Change {
            op: Op::Delete,
            seq: sequence::of_offset(offset, self.bigint_sequence),
            source_ts_ms: None,
            image: self.key_only(&key),
            key,
            full_image: false,
            before: None,
            kafka_tombstone: true,
            ignored_fields: vec![],
            new_fields: vec![],
            flags: vec![None; self.flag_fields.len()],
        })
    }

    fn key_names(&self) -> String {
        self.key.iter().map(|i| self.fields[*i].0.name.as_str()).collect::<Vec<_>>().join(", ")
    }

    fn key_only(&self, key: &Key) -> Vec<Scalar> {
        let mut image = vec![Scalar::Null; self.fields.len()];
        for (i, v) in self.key.iter().zip(key) {
            image[*i] = v.clone();
        }
        image
    }

    /// The key columns of an image (every one required).
    fn key_of(&self, obj: &Object, hints: &Hints, at: &str) -> Result<Key, DecodeError> {
        self.key
            .iter()
            .map(|i| {
                let (column, source) = self.fields[*i];
                let v = self.read_field(obj, column, source, hints, at)?;
                if v.is_null() {
                    return Err(err(ErrorKind::MissingField, format!("{at}.{}: missing", source.path.join("."))));
                }
                Ok(v)
            })
            .collect()
    }

    fn read_image(&self, obj: &Object, hints: &Hints, at: &str) -> Result<Vec<Scalar>, DecodeError> {
        let mut values: Vec<Scalar> = Vec::with_capacity(self.fields.len());
        for (i, (column, source)) in self.fields.iter().enumerate() {
            let v = self.read_field(obj, column, source, hints, at)?;
            if v.is_null() && self.key.contains(&i) {
                return Err(err(ErrorKind::MissingField, format!("{at}.{}: missing", source.path.join("."))));
            }
            values.push(v);
        }
        Ok(values)
    }

    fn read_field(&self, obj: &Object, column: &ColumnDefinition, source: &FieldSource, hints: &Hints, at: &str) -> Result<Scalar, DecodeError> {
        let mut current = obj;
        let mut found = None;
        for (i, step) in source.path.iter().enumerate() {
            match current.get(step) {
                Some(v) if i + 1 == source.path.len() => found = Some(v),
                Some(Json::Object(inner)) => current = inner,
                None | Some(Json::Null) => break,
                Some(other) => {
                    return Err(err(
                        ErrorKind::WrongType,
                        format!("{at}.{}: expected an object, found {}", source.path[..=i].join("."), other.type_name()),
                    ))
                }
            }
        }
        let hint = if source.path.len() == 1 && !hints.is_empty() { hints.get(&source.path[0]) } else { None };
        value::read(found, &column.data_type, source, hint, &value::FieldName(at, &source.path))
    }

    /// Fields of a row image the table has no column for: ignored, or new
    /// (with the type their value calls for), or an error.
    #[allow(clippy::type_complexity)]
    fn unknown_fields(&self, obj: &Object, hints: &Hints, at: &str) -> Result<(Vec<String>, Vec<(String, DataType)>), DecodeError> {
        let mut unknown: Vec<&str> = obj.names().filter(|k| !self.known.contains(*k)).collect();
        if unknown.is_empty() {
            return Ok((vec![], vec![]));
        }
        unknown.sort_unstable();
        unknown.dedup();
        match self.spec.on_new_column {
            OnNewColumn::Ignore => return Ok((unknown.into_iter().map(str::to_string).collect(), vec![])),
            OnNewColumn::Evolve => {
                // Only a plain name that no column has in another case can become a column
                // (Delta names are case-insensitive and, without column mapping, plain).
                if let Some(bad) = unknown.iter().find(|k| !evolvable(k) || self.definition.columns.iter().any(|c| c.name.eq_ignore_ascii_case(k))) {
                    return Err(err(
                        ErrorKind::UnknownColumn,
                        format!(
                            "{at}.{}: {} cannot add a column of this name (letters, digits and _, unique regardless of case); \
                             list it in ignore_fields or declare a column for it",
                            truncate(bad, 60),
                            self.definition.name
                        ),
                    ));
                }
                let new = unknown
                    .iter()
                    .filter_map(|k| value::infer(obj.get(k)?, hints.get(*k)).map(|t| (k.to_string(), t)))
                    .collect();
                return Ok((vec![], new));
            }
            OnNewColumn::Quarantine => {}
        }
        Err(err(
            ErrorKind::UnknownColumn,
            format!(
                "{at}.{}: {} has no column for it (on_new_column = \"quarantine\")",
                unknown[0],
                self.definition.name
            ),
        ))
    }

    fn flags(&self, obj: &Object) -> Vec<Option<String>> {
        self.flag_fields
            .iter()
            .map(|f| match obj.get(f) {
                None | Some(Json::Null) => None,
                Some(Json::String(s)) => Some(s.to_string()),
                Some(other) => Some(other.to_string()),
            })
            .collect()
    }

    /// A record's Kafka key, when present, must name the same row as its
    /// payload: the `key_text` column's value as text, or a JSON object
    /// (Debezium's key struct, wrapped or not) whose key fields equal the row's.
    fn check_key(&self, kafka_key: Option<&[u8]>, key: &Key) -> Result<(), DecodeError> {
        let Some(raw) = kafka_key else { return Ok(()) };
        let text = String::from_utf8_lossy(raw);
        if let Some(t) = self.key_text {
            let position = self.key.iter().position(|k| *k == t);
            let value = position.map(|p| &key[p]);
            let same = |bare: &str| {
                matches!(value, Some(Scalar::Text(s)) if s == bare) || matches!(value, Some(Scalar::Int(i)) if i.to_string() == bare)
            };
            // The bare value (what produce writes), else a JSON string holding it.
            if same(&text) || key_text(raw).is_some_and(|bare| same(&bare)) {
                return Ok(());
            }
        }
        if let Some((obj, hints)) = envelope::key_object(raw) {
            let mut compared = 0;
            let mut same = true;
            for (i, k) in self.key.iter().enumerate() {
                let (column, source) = self.fields[*k];
                if !obj.contains_key(&source.path[0]) {
                    continue;
                }
                compared += 1;
                match self.read_field(&obj, column, source, &hints, "key") {
                    Ok(v) if v == key[i] => {}
                    _ => same = false,
                }
            }
            if compared > 0 && same {
                return Ok(());
            }
        }
        let named: Vec<String> = self.key.iter().zip(key).map(|(i, v)| format!("{} {v}", self.fields[*i].0.name)).collect();
        Err(err(
            ErrorKind::KeyMismatch,
            format!("Kafka key `{}` does not match the payload's key ({})", truncate(&text, 80), named.join(", ")),
        ))
    }
}

#[cfg(test)]
mod tests;
