//! Crash points for the reliability tests.
//!
//! `LAKESTREAM_FAILPOINTS=bronze.files_written=3` aborts the process (no
//! cleanup, like `kill -9`) the 3rd time the writer reaches that point. The
//! points sit where a crash is most dangerous for exactly-once: after the data
//! files are uploaded but before the commit that references them, and between
//! the commits of two tables. Unset, a check is one relaxed atomic load.
//!
//! `point=3:fail` instead makes the 3rd pass through an error point
//! ([`fails`]) fail like the lake would (e.g. `writer.assigned`: reading the
//! offsets after an assignment while the store is unreachable).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};

pub const ENV: &str = "LAKESTREAM_FAILPOINTS";

/// Armed points: name -> (nth hit, fail instead of abort).
static ARMED: LazyLock<Option<HashMap<String, (u64, bool)>>> = LazyLock::new(|| {
    let spec = std::env::var(ENV).ok()?;
    let mut points = HashMap::new();
    for item in spec.split(',').filter(|s| !s.trim().is_empty()) {
        let (name, how) = item.split_once('=').unwrap_or((item, "1"));
        let (nth, fail) = match how.trim().split_once(':') {
            Some((n, "fail")) => (n, true),
            _ => (how.trim(), false),
        };
        points.insert(name.trim().to_string(), (nth.trim().parse().unwrap_or(1), fail));
    }
    Some(points)
});
static HITS: LazyLock<Mutex<HashMap<String, u64>>> = LazyLock::new(|| Mutex::new(HashMap::new()));
static ANY: AtomicU64 = AtomicU64::new(u64::MAX);

/// Counts a pass through `point`; true when this is the armed nth pass.
fn reached(point: &str) -> Option<bool> {
    if ANY.load(Ordering::Relaxed) == 0 {
        return None;
    }
    let Some(points) = ARMED.as_ref() else {
        ANY.store(0, Ordering::Relaxed);
        return None;
    };
    let &(nth, fail) = points.get(point)?;
    let mut hits = HITS.lock().unwrap();
    let count = hits.entry(point.to_string()).or_insert(0);
    *count += 1;
    (*count == nth).then_some(fail)
}

/// Marks a crash point. Aborts when the point is armed and reached for the nth time.
pub fn hit(point: &str) {
    if reached(point) == Some(false) {
        eprintln!("failpoint {point} reached: aborting");
        std::process::abort();
    }
}

/// Marks an error point: true (the caller fails as the lake would) when the
/// point is armed with `:fail` and reached for the nth time.
pub fn fails(point: &str) -> bool {
    let fail = reached(point) == Some(true);
    if fail {
        eprintln!("failpoint {point} reached: failing");
    }
    fail
}
