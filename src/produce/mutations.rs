//! The change events `produce` publishes: one insert per order line, plus,
//! with `--mutations RATIO`, what a live orders system also does.
//!
//! Transactions are replayed oldest first (the file is newest first). After a
//! transaction's inserts, each of its lines is, with probability RATIO, hit
//! by one mutation, drawn from a seeded generator so that a seed always
//! gives the same events:
//! - update: a quantity correction (`op:"u"`, before and after images);
//! - delete: `op:"d"`, `before` set, `after` null;
//! - re-delivery: the line's last event sent again, identical;
//! - out of order: two changes where the newer (higher `seq`) is delivered
//!   before the older one: update then update, or update then delete.
//!
//! `seq` numbers events in the order the source made them, from 1; delivery
//! order differs from it only for re-deliveries and out-of-order pairs.

use crate::change::Op;
use crate::order_line::OrderLine;
use std::collections::HashMap;

/// One event to publish, in delivery order.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedEvent {
    pub op: Op,
    pub seq: i64,
    pub before: Option<OrderLine>,
    pub after: Option<OrderLine>,
    /// For a re-delivery: the index (in the plan) of the event sent again.
    pub redelivery_of: Option<usize>,
}

impl PlannedEvent {
    /// The Kafka key: the transaction number, so an order's events stay in order in one partition.
    pub fn key(&self) -> &str {
        &self.after.as_ref().or(self.before.as_ref()).expect("an event has an image").transaction_no
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MutationSummary {
    pub inserts: u64,
    pub updates: u64,
    pub deletes: u64,
    pub redeliveries: u64,
    pub out_of_order: u64,
}

impl MutationSummary {
    pub fn total_events(&self) -> u64 {
        // An out-of-order pair is two events, counted in updates/deletes already.
        self.inserts + self.updates + self.deletes + self.redeliveries
    }
}

/// SplitMix64: tiny, fast, and the same numbers for a seed on every platform
/// and every version of lakestream (unlike a library RNG that may change).
pub struct SeededRng(u64);

impl SeededRng {
    pub fn new(seed: u64) -> Self {
        SeededRng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Plans the events for `lines` (in file order).
pub fn plan(lines: &[OrderLine], ratio: f64, seed: u64) -> (Vec<PlannedEvent>, MutationSummary) {
    // Group by transaction in order of first appearance, then replay oldest first.
    let mut order: Vec<&str> = Vec::new();
    let mut groups: HashMap<&str, Vec<&OrderLine>> = HashMap::new();
    for l in lines {
        groups
            .entry(&l.transaction_no)
            .or_insert_with(|| {
                order.push(&l.transaction_no);
                Vec::new()
            })
            .push(l);
    }
    let mut rng = SeededRng::new(seed);
    let mut events: Vec<PlannedEvent> = Vec::with_capacity(lines.len() + (lines.len() as f64 * ratio * 1.5) as usize);
    let mut summary = MutationSummary::default();
    let mut seq = 0i64;
    let mut next_seq = || {
        seq += 1;
        seq
    };
    for tx in order.iter().rev() {
        let group = &groups[tx];
        let mut last_event: Vec<usize> = Vec::with_capacity(group.len());
        for line in group {
            last_event.push(events.len());
            events.push(PlannedEvent { op: Op::Create, seq: next_seq(), before: None, after: Some((*line).clone()), redelivery_of: None });
            summary.inserts += 1;
        }
        if ratio <= 0.0 {
            continue;
        }
        for (i, line) in group.iter().enumerate() {
            if rng.next_f64() >= ratio {
                continue;
            }
            let current = (*line).clone();
            match rng.below(4) {
                0 => {
                    let after = corrected(&current, &mut rng);
                    last_event[i] = events.len();
                    events.push(PlannedEvent { op: Op::Update, seq: next_seq(), before: Some(current), after: Some(after), redelivery_of: None });
                    summary.updates += 1;
                }
                1 => {
                    events.push(PlannedEvent { op: Op::Delete, seq: next_seq(), before: Some(current), after: None, redelivery_of: None });
                    summary.deletes += 1;
                }
                2 => {
                    let original = last_event[i];
                    let mut again = events[original].clone();
                    again.redelivery_of = Some(original);
                    events.push(again);
                    summary.redeliveries += 1;
                }
                _ => {
                    let first = corrected(&current, &mut rng);
                    let older = PlannedEvent { op: Op::Update, seq: next_seq(), before: Some(current), after: Some(first.clone()), redelivery_of: None };
                    let newer = if rng.below(2) == 0 {
                        let second = corrected(&first, &mut rng);
                        summary.updates += 2;
                        PlannedEvent { op: Op::Update, seq: next_seq(), before: Some(first), after: Some(second), redelivery_of: None }
                    } else {
                        summary.updates += 1;
                        summary.deletes += 1;
                        PlannedEvent { op: Op::Delete, seq: next_seq(), before: Some(first), after: None, redelivery_of: None }
                    };
                    // Delivered newest first: the older change arrives late.
                    events.push(newer);
                    events.push(older);
                    summary.out_of_order += 1;
                }
            }
        }
    }
    (events, summary)
}

/// A quantity correction that keeps the sign (cancellations stay negative) and never reaches 0.
fn corrected(line: &OrderLine, rng: &mut SeededRng) -> OrderLine {
    let step = 1 + rng.below(5) as i32;
    let quantity = if line.quantity < 0 { line.quantity.saturating_sub(step) } else { line.quantity.saturating_add(step) };
    OrderLine { quantity, ..line.clone() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::order_line::Price;
    use chrono::NaiveDate;

    fn lines(n: usize) -> Vec<OrderLine> {
        (0..n)
            .map(|i| OrderLine {
                transaction_no: format!("{}", 500000 + i / 3),
                line_no: (i % 3) as i32 + 1,
                order_date: NaiveDate::from_ymd_opt(2019, 1, 1).unwrap(),
                product_no: "1".into(),
                product_name: "p".into(),
                price: Price(100),
                quantity: if i % 7 == 0 { -2 } else { 2 },
                customer_no: None,
                country: "UK".into(),
            })
            .collect()
    }

    #[test]
    fn no_mutations_replays_oldest_first_with_increasing_seq() {
        let (events, summary) = plan(&lines(6), 0.0, 1);
        assert_eq!(summary.inserts, 6);
        assert_eq!(events[0].key(), "500001", "the file's last transaction is the oldest");
        assert!(events.windows(2).all(|w| w[0].seq < w[1].seq));
    }

    #[test]
    fn a_seed_gives_the_same_events_with_every_kind() {
        let input = lines(3000);
        let (a, sa) = plan(&input, 0.2, 42);
        let (b, _) = plan(&input, 0.2, 42);
        let (c, _) = plan(&input, 0.2, 43);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(sa.updates > 0 && sa.deletes > 0 && sa.redeliveries > 0 && sa.out_of_order > 0, "{sa:?}");
        assert_eq!(a.len() as u64, sa.total_events());
        // Out of order: somewhere a lower seq follows a higher one for the same key.
        let late = a.windows(2).any(|w| w[0].key() == w[1].key() && w[1].seq < w[0].seq && w[1].redelivery_of.is_none());
        assert!(late);
        // Corrections keep the sign and never hit zero.
        assert!(a.iter().filter_map(|e| e.after.as_ref()).all(|l| l.quantity != 0));
        for e in a.iter().filter(|e| e.op == Op::Update) {
            let (b, f) = (e.before.as_ref().unwrap(), e.after.as_ref().unwrap());
            assert_eq!(b.quantity.signum(), f.quantity.signum());
        }
    }
}
