use super::*;
use crate::order_line::Price;

const MAX: usize = 1 << 20;

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

fn kind_of(key: Option<&str>, value: &str) -> ErrorKind {
    decode(key.map(str::as_bytes), Some(value.as_bytes()), 7, MAX).unwrap_err().kind
}

#[test]
fn envelope_round_trips() {
    let l = line();
    let env = Envelope { op: Op::Create, ts_ms: 5, source: Source { table: "order_lines", seq: 42 }, before: None, after: Some(&l) };
    let bytes = serde_json::to_vec(&env).unwrap();
    let ev = decode(Some(b"581475"), Some(&bytes), 7, MAX).unwrap();
    assert_eq!(ev.op, Op::Create);
    assert_eq!(ev.seq, 42);
    assert_eq!(ev.source_ts_ms, Some(5));
    assert_eq!(ev.key, LineKey { transaction_no: "581475".into(), line_no: 2 });
    assert_eq!(ev.line, Some(l));
}

#[test]
fn delete_needs_only_the_key_and_connect_wrapper_is_unwrapped() {
    let v = r#"{"schema":{},"payload":{"op":"d","source":{"seq":9},"before":{"transaction_no":"C1","line_no":1},"after":null}}"#;
    let ev = decode(None, Some(v.as_bytes()), 7, MAX).unwrap();
    assert_eq!((ev.op, ev.seq, ev.line.is_none()), (Op::Delete, 9, true));
    assert_eq!(ev.key.transaction_no, "C1");
}

#[test]
fn plain_rows_are_upserts_and_tombstones_delete_their_key() {
    let row = serde_json::to_string(&line()).unwrap();
    let ev = decode(None, Some(row.as_bytes()), 70, MAX).unwrap();
    assert_eq!((ev.op, ev.seq), (Op::Update, 70));
    let ev = decode(Some(br#"{"transaction_no":"581475","line_no":3}"#), None, 71, MAX).unwrap();
    assert_eq!((ev.op, ev.seq, ev.key.line_no), (Op::Delete, 71, 3));
    assert_eq!(decode(Some(b"581475"), None, 1, MAX).unwrap_err().kind, ErrorKind::TombstoneKey);
    assert_eq!(decode(None, None, 1, MAX).unwrap_err().kind, ErrorKind::TombstoneKey);
}

#[test]
fn every_bad_input_gets_its_kind_and_names_the_field() {
    let ok = serde_json::to_value(line()).unwrap();
    let with = |field: &str, v: Value| {
        let mut after = ok.clone();
        after[field] = v;
        serde_json::json!({"op":"c","source":{"seq":1},"after":after}).to_string()
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
    assert_eq!(kind_of(None, r#"{"op":"x","source":{"seq":1}}"#), ErrorKind::UnknownOp);
    assert_eq!(kind_of(None, r#"{"op":"c","after":{}}"#), ErrorKind::MissingField);
    assert_eq!(kind_of(Some("999999"), &with("price", 1.into())), ErrorKind::KeyMismatch);
    let e = decode(None, Some(with("price", Value::Bool(true)).as_bytes()), 1, MAX).unwrap_err();
    assert_eq!(e.message, "after.price: expected a decimal number, found a boolean");
    let e = decode(None, Some(&[0xff, 0xfe]), 1, MAX).unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotUtf8);
    let e = decode(None, Some(&vec![b' '; 100]), 1, 99).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Oversized);
    assert!(e.message.contains("100 bytes"), "{}", e.message);
}
