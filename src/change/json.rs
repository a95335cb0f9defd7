//! A record's JSON as decoding reads it: a tree that borrows its field names
//! and text from the record instead of copying them.
//!
//! `serde_json::Value` gives every field name and every string its own heap
//! allocation and files an object's fields in a B-tree; decoding reads each
//! field once and drops the tree straight after, so that was most of the
//! cost of decoding a record. Here an object is its fields in document order
//! (a record's objects are small: a lookup scans them), and a string borrows
//! the record's bytes unless it holds escapes. Numbers are serde_json's own,
//! so they read exactly as `Value` read them.

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Number;
use std::borrow::Cow;
use std::fmt;

/// One JSON value.
#[derive(Clone, Debug, PartialEq)]
pub enum Json<'a> {
    Null,
    Bool(bool),
    Number(Number),
    String(Cow<'a, str>),
    Array(Vec<Json<'a>>),
    Object(Object<'a>),
}

/// A JSON object's fields in document order. A name given twice means its
/// last value, as with `serde_json::Value`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Object<'a>(Vec<(Cow<'a, str>, Json<'a>)>);

impl<'a> Json<'a> {
    /// Parses `text`, borrowing from it.
    pub fn parse(text: &'a str) -> serde_json::Result<Json<'a>> {
        serde_json::from_str(text)
    }

    /// The type's name in error messages ("a string", "an object", …).
    pub fn type_name(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "a boolean",
            Json::Number(_) => "a number",
            Json::String(_) => "a string",
            Json::Array(_) => "an array",
            Json::Object(_) => "an object",
        }
    }

    /// The field `key` of an object.
    pub fn get(&self, key: &str) -> Option<&Json<'a>> {
        match self {
            Json::Object(o) => o.get(key),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Json::Number(n) => n.as_i64(),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Json<'a>]> {
        match self {
            Json::Array(a) => Some(a),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Json::Null)
    }
}

impl<'a> Object<'a> {
    pub fn get(&self, key: &str) -> Option<&Json<'a>> {
        self.0.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.0.iter().any(|(k, _)| k == key)
    }

    /// Takes the field `key` out (its last value; every copy goes).
    pub fn remove(&mut self, key: &str) -> Option<Json<'a>> {
        let mut found = None;
        let mut i = 0;
        while i < self.0.len() {
            if self.0[i].0 == key {
                found = Some(self.0.remove(i).1);
            } else {
                i += 1;
            }
        }
        found
    }

    /// Every field's name in document order, a name given twice twice
    /// (cheaper than `keys` when repeats do not matter or are rare).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(k, _)| k.as_ref())
    }

    /// The field names, each once (where it was last given), in document order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().enumerate().filter(|(i, (k, _))| !self.0[i + 1..].iter().any(|(later, _)| later == k)).map(|(_, (k, _))| k.as_ref())
    }
}

/// Compact JSON, as `serde_json::Value` prints it (fields in document order).
impl fmt::Display for Json<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&serde_json::to_string(self).map_err(|_| fmt::Error)?)
    }
}

impl Serialize for Json<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Json::Null => s.serialize_unit(),
            Json::Bool(b) => s.serialize_bool(*b),
            Json::Number(n) => n.serialize(s),
            Json::String(t) => s.serialize_str(t),
            Json::Array(a) => a.serialize(s),
            Json::Object(o) => {
                let mut map = s.serialize_map(Some(o.0.len()))?;
                for (k, v) in o.keys().map(|k| (k, o.get(k).expect("a listed key"))) {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Json<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }

    fn visit_none<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Json<'de>, D::Error> {
        Json::deserialize(d)
    }

    fn visit_bool<E>(self, b: bool) -> Result<Json<'de>, E> {
        Ok(Json::Bool(b))
    }

    fn visit_i64<E>(self, i: i64) -> Result<Json<'de>, E> {
        Ok(Json::Number(i.into()))
    }

    fn visit_u64<E>(self, u: u64) -> Result<Json<'de>, E> {
        Ok(Json::Number(u.into()))
    }

    fn visit_f64<E>(self, f: f64) -> Result<Json<'de>, E> {
        Ok(Number::from_f64(f).map_or(Json::Null, Json::Number))
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Borrowed(s)))
    }

    fn visit_str<E>(self, s: &str) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Owned(s.to_string())))
    }

    fn visit_string<E>(self, s: String) -> Result<Json<'de>, E> {
        Ok(Json::String(Cow::Owned(s)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json<'de>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json<'de>, A::Error> {
        let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(8));
        while let Some(Name(key)) = map.next_key()? {
            let value = map.next_value()?;
            fields.push((key, value));
        }
        Ok(Json::Object(Object(fields)))
    }
}

/// A field name, borrowed when it has no escapes (`Cow<str>`'s own
/// Deserialize always copies).
struct Name<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Name<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match d.deserialize_str(JsonVisitor)? {
            Json::String(s) => Ok(Name(s)),
            other => Err(serde::de::Error::custom(format!("a field name is a string, found {}", other.type_name()))),
        }
    }
}

/// A tree built from a `serde_json::Value` (tests write their records with `json!`).
impl From<serde_json::Value> for Json<'static> {
    fn from(v: serde_json::Value) -> Self {
        match v {
            serde_json::Value::Null => Json::Null,
            serde_json::Value::Bool(b) => Json::Bool(b),
            serde_json::Value::Number(n) => Json::Number(n),
            serde_json::Value::String(s) => Json::String(Cow::Owned(s)),
            serde_json::Value::Array(a) => Json::Array(a.into_iter().map(Json::from).collect()),
            serde_json::Value::Object(o) => Json::Object(Object(o.into_iter().map(|(k, v)| (Cow::Owned(k), Json::from(v))).collect())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_as_serde_json_reads() {
        let text = r#"{"a":"x","b":"q\"uote","n":-3,"u":18446744073709551615,"f":1500.50,"o":{"z":[1,null,true]},"a":"last"}"#;
        let json = Json::parse(text).unwrap();
        let value: serde_json::Value = serde_json::from_str(text).unwrap();
        assert!(matches!(json.get("b"), Some(Json::String(Cow::Owned(s))) if s == "q\"uote"), "an escape is copied");
        assert!(matches!(json.get("o").and_then(|o| o.get("z")), Some(Json::Array(a)) if a.len() == 3));
        assert_eq!(json.get("a").and_then(Json::as_str), Some("last"), "a repeated name means its last value");
        for key in ["n", "u", "f"] {
            assert_eq!(json.get(key), Some(&Json::from(value[key].clone())), "{key}");
        }
        let Json::Object(mut o) = json else { panic!("an object") };
        assert_eq!(o.keys().collect::<Vec<_>>(), ["b", "n", "u", "f", "o", "a"]);
        assert_eq!(o.remove("a"), Some(Json::String("last".into())));
        assert!(!o.contains_key("a"));
        assert_eq!(Json::Object(o).to_string(), r#"{"b":"q\"uote","n":-3,"u":18446744073709551615,"f":1500.5,"o":{"z":[1,null,true]}}"#);
    }
}
