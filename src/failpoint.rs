//! Crash points for the reliability tests.
//!
//! `LAKESTREAM_FAILPOINTS=bronze.files_written=3` aborts the process (no
//! cleanup, like `kill -9`) the 3rd time the writer reaches that point. The
//! points sit where a crash is most dangerous for exactly-once: after the data
//! files are uploaded but before the commit that references them, and between
//! the commits of two tables. Unset, a check is one relaxed atomic load.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};

pub const ENV: &str = "LAKESTREAM_FAILPOINTS";

static ARMED: LazyLock<Option<HashMap<String, u64>>> = LazyLock::new(|| {
    let spec = std::env::var(ENV).ok()?;
    let mut points = HashMap::new();
    for item in spec.split(',').filter(|s| !s.trim().is_empty()) {
        let (name, nth) = item.split_once('=').unwrap_or((item, "1"));
        points.insert(name.trim().to_string(), nth.trim().parse().unwrap_or(1));
    }
    Some(points)
});
static HITS: LazyLock<Mutex<HashMap<String, u64>>> = LazyLock::new(|| Mutex::new(HashMap::new()));
static ANY: AtomicU64 = AtomicU64::new(u64::MAX);

/// Marks a crash point. Aborts when the point is armed and reached for the nth time.
pub fn hit(point: &str) {
    if ANY.load(Ordering::Relaxed) == 0 {
        return;
    }
    let Some(points) = ARMED.as_ref() else {
        ANY.store(0, Ordering::Relaxed);
        return;
    };
    let Some(&nth) = points.get(point) else { return };
    let mut hits = HITS.lock().unwrap();
    let count = hits.entry(point.to_string()).or_insert(0);
    *count += 1;
    if *count == nth {
        eprintln!("failpoint {point} reached (hit {nth}): aborting");
        std::process::abort();
    }
}
