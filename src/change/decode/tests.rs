//! The shipped `order_lines` definition read through the generic decoder:
//! the producer's envelopes, real connectors' envelopes, and bad input.

use super::*;
use crate::order_line::{Envelope, OrderLine, Price, Source};
use chrono::NaiveDate;
use serde_json::{json, Value};

const MAX: usize = 1 << 20;

fn reader() -> Reader {
    Reader::new(crate::tables::definition::get("silver.order_lines")).unwrap()
}

fn line() -> OrderLine {
    OrderLine {
        transaction_no: "581475".into(),
        line_no: 2,
        order_date: NaiveDate::from_ymd_opt(2019, 12, 9).unwrap(),
        product_no: "22596".into(),
        product_name: "Record Frame 7\" Single Size".into(),
        price: Price(1065),
        quantity: 36,
        customer_no: None,
        country: "United Kingdom".into(),
    }
}

fn decode(key: Option<&[u8]>, value: Option<&[u8]>, offset: i64, max: usize) -> Result<Change, DecodeError> {
    reader().decode(key, value, offset, max)
}

fn kind_of(key: Option<&str>, value: &str) -> ErrorKind {
    decode(key.map(str::as_bytes), Some(value.as_bytes()), 7, MAX).unwrap_err().kind
}

fn line_key(t: &str, n: i64) -> Key {
    vec![Scalar::Text(t.into()), Scalar::Int(n)]
}

#[test]
fn envelope_round_trips() {
    let l = line();
    let env = Envelope { op: Op::Create, ts_ms: 5, source: Source { table: "order_lines", seq: 42 }, before: None, after: Some(&l) };
    let bytes = serde_json::to_vec(&env).unwrap();
    let ev = decode(Some(b"581475"), Some(&bytes), 7, MAX).unwrap();
    assert_eq!((ev.op, ev.seq.clone(), ev.source_ts_ms), (Op::Create, Seq::Int(42), Some(5)));
    assert_eq!(ev.key, line_key("581475", 2));
    assert!(ev.full_image && ev.ignored_fields.is_empty(), "{ev:?}");
    let r = reader();
    let price = r.fields.iter().position(|(c, _)| c.name == "price").unwrap();
    assert_eq!(ev.image[price], Scalar::Decimal(1065));
}

#[test]
fn delete_needs_only_the_key_and_connect_wrapper_is_unwrapped() {
    let v = r#"{"schema":{},"payload":{"op":"d","source":{"seq":9},"before":{"transaction_no":"C1","line_no":1},"after":null}}"#;
    let ev = decode(None, Some(v.as_bytes()), 7, MAX).unwrap();
    assert_eq!((ev.op, ev.seq.clone(), ev.full_image), (Op::Delete, Seq::Int(9), false));
    assert_eq!(ev.key, line_key("C1", 1));
}

#[test]
fn plain_rows_are_upserts_and_tombstones_delete_their_key() {
    let row = serde_json::to_string(&line()).unwrap();
    let ev = decode(None, Some(row.as_bytes()), 70, MAX).unwrap();
    assert_eq!((ev.op, ev.seq.clone()), (Op::Update, Seq::Int(70)));
    let mut with_seq = serde_json::to_value(line()).unwrap();
    with_seq["_seq"] = json!(5_000_000);
    let ev = decode(None, Some(with_seq.to_string().as_bytes()), 70, MAX).unwrap();
    assert_eq!(ev.seq, Seq::Int(5_000_000));
    let ev = decode(Some(br#"{"transaction_no":"581475","line_no":3}"#), None, 71, MAX).unwrap();
    assert_eq!((ev.op, ev.kafka_tombstone, ev.key.clone()), (Op::Delete, true, line_key("581475", 3)));
    // Debezium's key, with the schema wrapper.
    let wrapped = br#"{"schema":{"type":"struct","fields":[]},"payload":{"transaction_no":"581475","line_no":4}}"#;
    assert_eq!(decode(Some(wrapped), None, 72, MAX).unwrap().key, line_key("581475", 4));
    assert_eq!(decode(Some(b"581475"), None, 1, MAX).unwrap_err().kind, ErrorKind::TombstoneKey);
    assert_eq!(decode(None, None, 1, MAX).unwrap_err().kind, ErrorKind::TombstoneKey);
    assert_eq!(decode(Some(br#"{"transaction_no":"1","line_no":0}"#), None, 1, MAX).unwrap_err().kind, ErrorKind::TombstoneKey);
}

#[test]
fn real_connector_envelopes_decode_by_their_position() {
    let after = json!({"transaction_no":"581475","line_no":2,"order_date":"2019-12-09","product_no":"22596",
        "product_name":"Frame","price":"10.65","quantity":36,"customer_no":"13069","country":"United Kingdom"});
    // PostgreSQL: source.lsn (and source.sequence), no seq.
    let pg = json!({"before":null,"after":after,"source":{"version":"3.4.3.Final","connector":"postgresql","name":"shop",
        "ts_ms":1700000000000i64,"snapshot":"false","db":"shop","sequence":"[\"24023119\",\"24023128\"]","schema":"public",
        "table":"order_lines","txId":555,"lsn":24023128,"xmin":null},"transaction":null,"op":"c","ts_ms":1700000000100i64});
    let ev = decode(Some(br#"{"transaction_no":"581475","line_no":2}"#), Some(pg.to_string().as_bytes()), 7, MAX).unwrap();
    assert_eq!(ev.seq, Seq::Int(24023128));
    // The same payload inside Kafka Connect's wrapper, key wrapped too.
    let wrapped = json!({"schema":{"type":"struct","fields":[]},"payload":pg});
    let key = br#"{"schema":{"type":"struct","fields":[]},"payload":{"transaction_no":"581475","line_no":2}}"#;
    assert_eq!(decode(Some(key), Some(wrapped.to_string().as_bytes()), 7, MAX).unwrap().seq, Seq::Int(24023128));
    // MySQL: binlog file + position + row.
    let mysql = |file: &str, pos: i64, row: i64| {
        let v = json!({"before":null,"after":after,"source":{"connector":"mysql","file":file,"pos":pos,"row":row,"server_id":223344,
            "gtid":null,"thread":7,"query":null,"table":"order_lines","ts_ms":0},"op":"u","ts_ms":1});
        decode(None, Some(v.to_string().as_bytes()), 7, MAX).unwrap().seq
    };
    assert!(mysql("mysql-bin.000003", 154, 0) < mysql("mysql-bin.000003", 154, 1));
    assert!(mysql("mysql-bin.000003", 900_000, 0) < mysql("mysql-bin.000004", 4, 0));
}

#[test]
fn every_bad_input_gets_its_kind_and_names_the_field() {
    let ok = serde_json::to_value(line()).unwrap();
    let with = |field: &str, v: Value| {
        let mut after = ok.clone();
        after[field] = v;
        json!({"op":"c","source":{"seq":1},"after":after}).to_string()
    };
    assert_eq!(kind_of(None, "{not json"), ErrorKind::NotJson);
    assert_eq!(kind_of(None, ""), ErrorKind::NotJson);
    assert_eq!(kind_of(None, "[1,2]"), ErrorKind::NotAnObject);
    assert_eq!(kind_of(None, &"[".repeat(10_000)), ErrorKind::NotJson);
    assert_eq!(kind_of(None, &with("price", Value::Bool(true))), ErrorKind::WrongType);
    assert_eq!(kind_of(None, &with("price", "ten".into())), ErrorKind::InvalidValue);
    assert_eq!(kind_of(None, &with("quantity", "3".into())), ErrorKind::WrongType);
    assert_eq!(kind_of(None, &with("order_date", "9/12/2019".into())), ErrorKind::InvalidValue);
    assert_eq!(kind_of(None, &with("transaction_no", Value::Null)), ErrorKind::MissingField);
    assert_eq!(kind_of(None, &with("transaction_no", "12x".into())), ErrorKind::InvalidValue);
    assert_eq!(kind_of(None, &with("line_no", 0.into())), ErrorKind::InvalidValue);
    assert_eq!(kind_of(None, &with("country", Value::Null)), ErrorKind::MissingField);
    assert_eq!(kind_of(None, r#"{"op":"x","source":{"seq":1}}"#), ErrorKind::UnknownOp);
    assert_eq!(kind_of(None, r#"{"op":"c","after":{}}"#), ErrorKind::MissingField);
    assert_eq!(kind_of(None, r#"{"op":"c","source":{"table":"t"},"after":{}}"#), ErrorKind::MissingField);
    assert_eq!(kind_of(Some("999999"), &with("price", 1.into())), ErrorKind::KeyMismatch);
    assert_eq!(kind_of(Some(r#"{"transaction_no":"581475","line_no":3}"#), &with("price", 1.into())), ErrorKind::KeyMismatch);
    let e = decode(None, Some(with("price", Value::Bool(true)).as_bytes()), 1, MAX).unwrap_err();
    assert_eq!(e.message, "after.price: expected a decimal number, found a boolean");
    let e = decode(None, Some(&[0xff, 0xfe]), 1, MAX).unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotUtf8);
    let e = decode(None, Some(&vec![b' '; 100]), 1, 99).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Oversized);
    assert!(e.message.contains("100 bytes"), "{}", e.message);
    // A field the table has no column for is a new column (on_new_column = "evolve"), typed by its value.
    let ev = decode(None, Some(with("discount", json!(5)).as_bytes()), 1, MAX).unwrap();
    assert_eq!(ev.new_fields, vec![("discount".to_string(), DataType::Int64)]);
    // ... unless its name cannot be one.
    assert_eq!(kind_of(None, &with("Price", json!(5))), ErrorKind::UnknownColumn);
    assert_eq!(kind_of(None, &with("a b", json!(5))), ErrorKind::UnknownColumn);
}
