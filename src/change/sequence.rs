//! What orders a key's changes: `sequence_by`.
//!
//! Each source has its own position: lakestream's producer `source.seq`,
//! PostgreSQL `source.lsn`, MySQL `source.file` + `source.pos` +
//! `source.row`, SQL Server `source.commit_lsn` + `source.change_lsn` +
//! `source.event_serial_no`, Oracle `source.scn`. A definition lists them as
//! alternatives; an event uses the first whose first field it carries.
//!
//! The sequence is stored in the table's sequence column, so that the upsert
//! compares a change with the row it would replace:
//! - a **bigint** column holds one number: a single numeric field, or
//!   several fields packed into 63 bits by `bits` (a string field such as
//!   MySQL's `mysql-bin.000042` gives its trailing digits). A value that does
//!   not fit its bits is an error, never a wrap-around;
//! - a **string** column holds the fields encoded so that comparing the text
//!   compares the fields in order: a number as 16 hex digits (sign-flipped),
//!   a string as itself (SQL Server LSNs are fixed-width hex), fields joined
//!   by U+0001.
//!
//! Plain rows and Kafka tombstones carry no envelope: a plain row uses
//! `row_sequence_by` on its own fields, else its Kafka offset (a key's
//! records stay in one partition, in order).

use super::spec::Alternative;
use super::json::{Json, Object};
use super::{err, truncate, DecodeError, ErrorKind};

/// A sequence value, comparable within one table.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Seq {
    Int(i64),
    Text(String),
}

impl std::fmt::Display for Seq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Seq::Int(i) => write!(f, "{i}"),
            Seq::Text(t) => f.write_str(&t.replace('\u{1}', "/")),
        }
    }
}

/// One component of a position.
#[derive(Debug)]
enum Part {
    Null,
    Int(i64),
    Text(String),
}

/// The sequence of an event (an object holding the fields) by the first
/// alternative it carries; `fallback` (the Kafka offset) when it carries none,
/// or an error naming what was looked for.
pub fn read(obj: &Object, alternatives: &[Alternative], fallback: Option<i64>, bigint: bool, at: &str) -> Result<Seq, DecodeError> {
    for alt in alternatives {
        if lookup(obj, &alt.fields[0], at)?.is_none() {
            continue;
        }
        let mut parts = Vec::with_capacity(alt.fields.len());
        for path in &alt.fields {
            parts.push(part(lookup(obj, path, at)?, || name(at, path))?);
        }
        return if bigint { pack(&parts, alt, at) } else { Ok(Seq::Text(encode(&parts))) };
    }
    match fallback {
        Some(offset) => Ok(of_offset(offset, bigint)),
        None => {
            let wanted: Vec<String> = alternatives.iter().map(Alternative::describe).collect();
            let first = alternatives.first().map(|a| name(at, &a.fields[0])).unwrap_or_else(|| "sequence".into());
            Err(err(ErrorKind::MissingField, format!("{first}: missing (sequence_by: {})", wanted.join(" | "))))
        }
    }
}

/// The lowest sequence of a table: what a Kafka tombstone gets when nothing
/// of its key is known (it deletes nothing and protects nothing).
pub fn lowest(bigint: bool) -> Seq {
    if bigint {
        Seq::Int(i64::MIN)
    } else {
        Seq::Text(String::new())
    }
}

/// The sequence a Kafka offset stands for.
pub fn of_offset(offset: i64, bigint: bool) -> Seq {
    if bigint {
        Seq::Int(offset)
    } else {
        Seq::Text(encode(&[Part::Int(offset)]))
    }
}

fn name(at: &str, path: &[String]) -> String {
    if at.is_empty() {
        path.join(".")
    } else {
        format!("{at}.{}", path.join("."))
    }
}

/// The value at `path` (None: absent or null); an error when a step is not an object.
fn lookup<'o, 'a>(obj: &'o Object<'a>, path: &[String], at: &str) -> Result<Option<&'o Json<'a>>, DecodeError> {
    let mut current = obj;
    for (i, step) in path.iter().enumerate() {
        match current.get(step) {
            None | Some(Json::Null) => return Ok(None),
            Some(v) if i + 1 == path.len() => return Ok(Some(v)),
            Some(Json::Object(inner)) => current = inner,
            Some(other) => {
                return Err(err(
                    ErrorKind::WrongType,
                    format!("{}: expected an object, found {}", name(at, &path[..=i]), other.type_name()),
                ))
            }
        }
    }
    Ok(None)
}

fn part(value: Option<&Json>, path: impl Fn() -> String) -> Result<Part, DecodeError> {
    Ok(match value {
        None => Part::Null,
        Some(Json::Number(n)) => {
            Part::Int(n.as_i64().ok_or_else(|| err(ErrorKind::InvalidValue, format!("{}: {n} is not a whole 64-bit number", path())))?)
        }
        Some(Json::String(s)) => match s.parse::<i64>() {
            Ok(i) if s.bytes().all(|b| b.is_ascii_digit()) => Part::Int(i),
            _ => Part::Text(s.to_string()),
        },
        Some(other) => {
            return Err(err(ErrorKind::WrongType, format!("{}: expected a whole number or a string, found {}", path(), other.type_name())))
        }
    })
}

fn encode(parts: &[Part]) -> String {
    let mut out = String::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            out.push('\u{1}');
        }
        match p {
            Part::Null => {}
            Part::Int(v) => out.push_str(&format!("n{:016x}", (*v as u64) ^ (1u64 << 63))),
            Part::Text(t) => {
                out.push('s');
                out.push_str(t);
            }
        }
    }
    out
}

fn pack(parts: &[Part], alt: &Alternative, at: &str) -> Result<Seq, DecodeError> {
    let number = |p: &Part, path: &str| -> Result<u64, DecodeError> {
        match p {
            Part::Null => Ok(0),
            Part::Int(v) if *v >= 0 => Ok(*v as u64),
            Part::Int(v) => Err(err(ErrorKind::InvalidValue, format!("{path}: {v} is negative"))),
            Part::Text(t) => {
                let digits: String = t.chars().rev().take_while(char::is_ascii_digit).collect::<Vec<_>>().into_iter().rev().collect();
                digits.parse().map_err(|_| {
                    err(ErrorKind::InvalidValue, format!("{path}: `{}` does not end in a number", truncate(t, 40)))
                })
            }
        }
    };
    let Some(bits) = &alt.bits else {
        if let Part::Int(v) = parts[0] {
            return Ok(Seq::Int(v));
        }
        let path = name(at, &alt.fields[0]);
        let v = number(&parts[0], &path)?;
        return i64::try_from(v).map(Seq::Int).map_err(|_| err(ErrorKind::InvalidValue, format!("{path}: {v} does not fit a bigint")));
    };
    let mut packed: u64 = 0;
    for ((p, b), path) in parts.iter().zip(bits).zip(&alt.fields) {
        let path = name(at, path);
        let v = number(p, &path)?;
        if v >> b != 0 {
            return Err(err(
                ErrorKind::InvalidValue,
                format!("{path}: {v} does not fit the {b} bits the table's sequence packs it into"),
            ));
        }
        packed = (packed << b) | v;
    }
    Ok(Seq::Int(packed as i64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn alt(fields: &[&str], bits: Option<Vec<u8>>) -> Alternative {
        Alternative { fields: fields.iter().map(|f| f.split('.').map(str::to_string).collect()).collect(), bits }
    }

    fn obj(v: Value) -> Object<'static> {
        match Json::from(v) {
            Json::Object(o) => o,
            other => panic!("an object, not {other}"),
        }
    }

    #[test]
    fn positions_order_like_the_connector() {
        let alts = [alt(&["source.seq"], None), alt(&["source.lsn"], None), alt(&["source.file", "source.pos", "source.row"], Some(vec![20, 32, 11]))];
        let seq = |v: Value| read(&obj(v), &alts, None, true, "").unwrap();
        assert_eq!(seq(json!({"source": {"seq": 7}})), Seq::Int(7));
        assert_eq!(seq(json!({"source": {"lsn": 24023128, "sequence": "[\"1\",\"2\"]"}})), Seq::Int(24023128));
        let mysql = |file: &str, pos: i64, row: i64| seq(json!({"source": {"file": file, "pos": pos, "row": row}}));
        assert!(mysql("mysql-bin.000003", 900, 0) < mysql("mysql-bin.000003", 900, 1));
        assert!(mysql("mysql-bin.000003", 900, 1) < mysql("mysql-bin.000003", 901, 0));
        assert!(mysql("mysql-bin.000003", 99_999, 0) < mysql("mysql-bin.000004", 4, 0));
        let e = read(&obj(json!({"source": {"file": "f.1", "pos": 1i64 << 33, "row": 0}})), &alts, None, true, "").unwrap_err();
        assert!(e.message.contains("32 bits"), "{}", e.message);
        let e = read(&obj(json!({"source": {"table": "t"}})), &alts, None, true, "").unwrap_err();
        assert_eq!((e.kind, e.message.starts_with("source.seq: missing")), (ErrorKind::MissingField, true), "{}", e.message);
        assert_eq!(read(&obj(json!({"source": "x"})), &alts, None, true, "").unwrap_err().kind, ErrorKind::WrongType);
        assert_eq!(read(&obj(json!({"source": {"seq": 1.5}})), &alts, None, true, "").unwrap_err().kind, ErrorKind::InvalidValue);
        assert_eq!(read(&obj(json!({})), &alts, Some(42), true, "").unwrap(), Seq::Int(42));

        let sql = [alt(&["source.commit_lsn", "source.change_lsn", "source.event_serial_no"], None)];
        let s = |c: &str, ch: Option<&str>, n: i64| read(&obj(json!({"source": {"commit_lsn": c, "change_lsn": ch, "event_serial_no": n}})), &sql, None, false, "").unwrap();
        assert!(s("00000027:00000758:0003", None, 1) < s("00000027:00000758:0005", Some("00000027:00000758:0002"), 1));
        assert!(s("00000027:00000758:0005", Some("00000027:00000758:0002"), 1) < s("00000027:00000758:0005", Some("00000027:00000758:0002"), 2));
        assert!(s("00000027:00000758:0005", Some("00000027:00000758:0002"), 2) < s("0000002a:00000010:0001", Some("0000002a:00000010:0001"), 1));
        assert!(of_offset(9, false) < of_offset(10, false));
    }
}
