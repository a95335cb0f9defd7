//! Shutdown: SIGTERM or SIGINT asks the writer to stop. The run loop then
//! commits the open batch and leaves the group; a commit that keeps failing
//! is retried for a grace period, after which the writer gives up (nothing
//! of that batch is committed, so it is read again on restart).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// How long a requested shutdown waits for a failing commit to succeed.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// A shutdown request, observable from the run loop and from every retry loop.
#[derive(Clone, Default)]
pub struct Stop {
    at: Arc<Mutex<Option<Instant>>>,
    notify: Arc<Notify>,
}

impl Stop {
    /// A stop requested when `signal` resolves.
    pub fn on(signal: impl std::future::Future<Output = ()> + Send + 'static) -> Stop {
        let stop = Stop::default();
        let requested = stop.clone();
        tokio::spawn(async move {
            signal.await;
            requested.request();
        });
        stop
    }

    pub fn request(&self) {
        self.at.lock().unwrap().get_or_insert_with(Instant::now);
        self.notify.notify_waiters();
    }

    /// Resolves once a stop is requested.
    pub async fn requested(&self) {
        loop {
            let notified = self.notify.notified();
            if self.at.lock().unwrap().is_some() {
                return;
            }
            notified.await;
        }
    }

    /// True once a stop was requested more than [`SHUTDOWN_GRACE`] ago:
    /// retry loops give up then.
    pub fn overdue(&self) -> bool {
        self.at.lock().unwrap().is_some_and(|t| t.elapsed() >= SHUTDOWN_GRACE)
    }
}

/// Exponential back-off for retrying the lake: 250 ms, doubling up to 30 s.
pub struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Self {
        Backoff(Duration::from_millis(250))
    }
}

impl Backoff {
    /// The wait before the next attempt.
    pub fn next_wait(&self) -> Duration {
        self.0
    }

    pub async fn wait(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(Duration::from_secs(30));
    }
}
