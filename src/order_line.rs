//! An order line: one row of the orders application's `order_lines` table.
//!
//! This is the typed shape shared by the producer (which publishes order lines as
//! change events) and the silver table (which holds their current state). Prices
//! are exact decimals with two places, kept as integer cents so that no float
//! rounding can creep in between the CSV, the JSON envelope and Delta's
//! `decimal(10,2)`.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use std::fmt;

/// An exact amount with two decimal places, stored as hundredths.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Price(pub i64);

impl Price {
    /// Largest magnitude `decimal(10,2)` can hold: 99,999,999.99.
    pub const MAX_CENTS: i64 = 9_999_999_999;

    /// Parses a decimal written in plain notation (`21.47`, `5`, `-0.5`).
    /// More than two decimal places, exponents and anything else are refused,
    /// so that a value is never silently rounded.
    pub fn parse(text: &str) -> Result<Price, String> {
        let t = text.trim();
        let (negative, digits) = match t.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, t),
        };
        let (whole, frac) = match digits.split_once('.') {
            Some((w, f)) => (w, f),
            None => (digits, ""),
        };
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() && frac.is_empty() || !all_digits(whole) || !all_digits(frac) {
            return Err(format!("`{text}` is not a decimal number"));
        }
        if frac.len() > 2 {
            return Err(format!("`{text}` has more than 2 decimal places"));
        }
        let whole: i64 = if whole.is_empty() {
            0
        } else {
            whole
                .parse()
                .map_err(|_| format!("`{text}` is out of range for decimal(10,2)"))?
        };
        let frac_cents: i64 = match frac.len() {
            0 => 0,
            1 => frac.parse::<i64>().unwrap() * 10,
            _ => frac.parse::<i64>().unwrap(),
        };
        let cents = whole
            .checked_mul(100)
            .and_then(|c| c.checked_add(frac_cents))
            .filter(|c| *c <= Self::MAX_CENTS)
            .ok_or_else(|| format!("`{text}` is out of range for decimal(10,2)"))?;
        Ok(Price(if negative { -cents } else { cents }))
    }

    pub fn cents(self) -> i64 {
        self.0
    }
}

impl fmt::Display for Price {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        write!(f, "{sign}{}.{:02}", abs / 100, abs % 100)
    }
}

/// Serialised as a JSON number (`21.47`), the way a database connector
/// configured for numeric decimals emits it.
impl Serialize for Price {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // serde_json writes the shortest text that reads back as the same number
        // (`0.1` for 0.10): the same value, exactly recovered by `price_from_json`.
        let number: serde_json::Number = self.to_string().parse().map_err(serde::ser::Error::custom)?;
        number.serialize(s)
    }
}

/// The change event `produce` writes for an order line, as the orders
/// application would: a Debezium-style envelope whose `source.seq` orders a
/// line's changes (tables/silver_order_lines.toml reads it).
#[derive(Serialize)]
pub struct Envelope<'a> {
    pub op: crate::change::Op,
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

/// One order line. `(transaction_no, line_no)` is the primary key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    /// Six digits, or `C` + six digits for a cancellation.
    pub transaction_no: String,
    /// 1-based position of the line inside its transaction.
    pub line_no: i32,
    pub order_date: NaiveDate,
    pub product_no: String,
    pub product_name: String,
    #[serde(deserialize_with = "deserialize_price")]
    pub price: Price,
    pub quantity: i32,
    pub customer_no: Option<String>,
    pub country: String,
}

impl OrderLine {
    /// A cancellation line carries the `C` prefix on its transaction number.
    pub fn is_cancellation(&self) -> bool {
        self.transaction_no.starts_with('C')
    }

    /// `price * quantity`, exact, in hundredths.
    pub fn line_total_cents(&self) -> i64 {
        self.price.0 * i64::from(self.quantity)
    }
}

fn deserialize_price<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Price, D::Error> {
    let value = crate::change::Json::deserialize(d)?;
    price_from_json(&value).map_err(serde::de::Error::custom)
}

/// Reads a price from a JSON number or a numeric string. A JSON number has
/// already been parsed as f64 by serde_json; its shortest round-trip text is
/// the text that was written for any amount decimal(10,2) can hold.
pub fn price_from_json(value: &crate::change::Json) -> Result<Price, String> {
    match value {
        crate::change::Json::Number(n) => Price::parse(&n.to_string()),
        crate::change::Json::String(s) => Price::parse(s),
        other => Err(format!("expected a decimal number, found {}", other.type_name())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn price_parses_exactly_and_refuses_rounding() {
        assert_eq!(Price::parse("21.47"), Ok(Price(2147)));
        assert_eq!(Price::parse("5"), Ok(Price(500)));
        assert_eq!(Price::parse("5.1"), Ok(Price(510)));
        assert_eq!(Price::parse("-0.05"), Ok(Price(-5)));
        assert_eq!(Price::parse(".5"), Ok(Price(50)));
        assert!(Price::parse("1.005").unwrap_err().contains("more than 2 decimal places"));
        assert!(Price::parse("abc").unwrap_err().contains("not a decimal"));
        assert!(Price::parse("1e3").is_err());
        assert!(Price::parse("").is_err());
        assert!(Price::parse("100000000.00").unwrap_err().contains("out of range"));
        assert_eq!(Price::parse("99999999.99"), Ok(Price(Price::MAX_CENTS)));
    }

    #[test]
    fn price_round_trips_through_json_numbers() {
        for cents in [513, 66062, 2147, 1, 10, 999_999_999, 9_999_999_999, 1050] {
            let p = Price(cents);
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(Price::parse(&json), Ok(p), "{json}");
            let back = crate::change::Json::parse(&json).unwrap();
            assert_eq!(price_from_json(&back), Ok(p));
        }
        assert_eq!(Price(-5).to_string(), "-0.05");
    }
}
