//! The decode stage: each record of a batch becomes a change event or a
//! decode error (which sends it to quarantine). Decoding happens once per
//! batch; every table then takes what it needs from the result.

use crate::change_event::{decode, ChangeEvent, DecodeError};
use crate::source::record::KafkaRecord;

pub struct Decoded {
    pub records: Vec<KafkaRecord>,
    /// One entry per record, same order.
    pub results: Vec<Result<ChangeEvent, DecodeError>>,
}

impl Decoded {
    pub fn new(records: Vec<KafkaRecord>, max_record_bytes: usize) -> Decoded {
        let results = records
            .iter()
            .map(|r| decode(r.key.as_deref(), r.value.as_deref(), r.offset, max_record_bytes))
            .collect();
        Decoded { records, results }
    }

    pub fn rejected(&self) -> usize {
        self.results.iter().filter(|r| r.is_err()).count()
    }
}
