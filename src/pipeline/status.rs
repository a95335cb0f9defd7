//! What a person running `lakestream run` in a terminal sees: a status line
//! at the bottom (records committed, rate, lag, and with `--until-caught-up`
//! the time left), with the log scrolling above it, one line per batch.
//!
//! Without a terminal (a container, a pipe) there is no status line and the
//! logs are JSON with every field (see [`crate::logs`]); the same events
//! carry the same figures either way.

use crate::logs::{json_logs, status_bar};
use indicatif::ProgressBar;
use std::time::{Duration, Instant};

/// The live status line of a run.
pub struct Status {
    bar: Option<ProgressBar>,
    started: Instant,
    records: u64,
    /// Records committed in the recent past, for the rate: (when, total).
    recent: std::collections::VecDeque<(Instant, u64)>,
}

impl Status {
    /// A status line when stderr is a terminal and logs are text; otherwise nothing is drawn.
    pub fn start() -> Status {
        let on_terminal = std::io::IsTerminal::is_terminal(&std::io::stderr()) && !json_logs();
        let bar = on_terminal.then(|| {
            let bar = status_bar();
            bar.enable_steady_tick(Duration::from_millis(250));
            bar.clone()
        });
        let status = Status { bar, started: Instant::now(), records: 0, recent: Default::default() };
        status.show(None, None);
        status
    }

    /// `records` more are committed; `lag` is what is left to read (as last
    /// measured), `remaining` what is left until caught up (`--until-caught-up`).
    pub fn committed(&mut self, records: u64, lag: Option<i64>, remaining: Option<i64>) {
        self.records += records;
        let now = Instant::now();
        self.recent.push_back((now, self.records));
        while self.recent.len() > 2 && now.duration_since(self.recent[0].0) > Duration::from_secs(10) {
            self.recent.pop_front();
        }
        self.show(lag, remaining);
    }

    /// Records per second over the last ten seconds or so (since start at first).
    pub fn rate(&self) -> f64 {
        let (since, base) = match self.recent.front() {
            Some(&(t, n)) if self.recent.len() > 1 => (t, n),
            _ => (self.started, 0),
        };
        let secs = since.elapsed().as_secs_f64();
        if secs > 0.0 {
            (self.records - base) as f64 / secs
        } else {
            0.0
        }
    }

    fn show(&self, lag: Option<i64>, remaining: Option<i64>) {
        let Some(bar) = &self.bar else { return };
        let rate = self.rate();
        let mut msg = format!("{} records committed · {} records/s", thousands(self.records), thousands(rate as u64));
        if let Some(lag) = lag {
            msg.push_str(&format!(" · lag {}", thousands(lag.max(0) as u64)));
        }
        if let Some(left) = remaining {
            msg.push_str(&format!(" · {} to go", thousands(left.max(0) as u64)));
            if rate > 0.0 && left > 0 {
                msg.push_str(&format!(" · about {} left", duration((left as f64 / rate) as u64)));
            }
        }
        bar.set_message(msg);
    }

    /// Removes the status line (at the end of the run).
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// 1234567 as 1,234,567.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Seconds as `42s`, `3m05s` or `1h02m`.
fn duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_read_as_a_person_writes_them() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(569_861), "569,861");
        assert_eq!(thousands(12_345_678), "12,345,678");
        assert_eq!(duration(42), "42s");
        assert_eq!(duration(185), "3m05s");
        assert_eq!(duration(3_720), "1h02m");
    }
}
