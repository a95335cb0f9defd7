//! Where logs go and in what form. In a terminal: text, with the run's status
//! line (see [`crate::pipeline::status`]) kept below the scrolling lines. In a
//! container or a pipe: JSON lines, one object per event with every field,
//! for a log pipeline to index. `LAKESTREAM_LOG_FORMAT=json|text` overrides.
//!
//! Some events are detail in a terminal and data in JSON (each table's
//! commit, each MERGE's figures): those log at info when [`json_logs`] and
//! at debug otherwise.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

static JSON_LOGS: AtomicBool = AtomicBool::new(false);
static STATUS_BAR: OnceLock<ProgressBar> = OnceLock::new();

pub fn set_json_logs(json: bool) {
    JSON_LOGS.store(json, Ordering::Relaxed);
}

/// True when logs are JSON lines.
pub fn json_logs() -> bool {
    JSON_LOGS.load(Ordering::Relaxed)
}

/// The process's one status line on stderr (drawn once something sets a message).
pub fn status_bar() -> &'static ProgressBar {
    STATUS_BAR.get_or_init(|| {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(ProgressStyle::with_template("{spinner} {msg}").unwrap_or_else(|_| ProgressStyle::default_spinner()));
        bar
    })
}

/// The writer `tracing` logs through: stderr, with the status line (if one
/// is drawn) lifted while a line is printed so that the two never mix.
pub struct StderrLogs;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for StderrLogs {
    type Writer = LogLine;
    fn make_writer(&'a self) -> LogLine {
        LogLine(Vec::with_capacity(256))
    }
}

/// One formatted event, printed whole when dropped.
pub struct LogLine(Vec<u8>);

impl Write for LogLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        let print = || {
            let _ = std::io::stderr().lock().write_all(&self.0);
        };
        match STATUS_BAR.get() {
            Some(bar) if !bar.is_finished() && !bar.is_hidden() => bar.suspend(print),
            _ => print(),
        }
    }
}
