//! Requests an emulator keeps unanswered until a test lets them go: how a
//! test kills the host in the middle of a provider call. A held request that
//! loses its client (a killed host: the handler is dropped with the
//! connection) stops counting, and is never answered.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[derive(Clone)]
pub struct Holds(Arc<Inner>);

struct Inner {
    held: AtomicUsize,
    /// Bumped by `release`; held requests wait for a change.
    release: tokio::sync::watch::Sender<u64>,
}

/// Counts a request as held while it lives.
struct Held<'a>(&'a Inner);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.held.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Default for Holds {
    fn default() -> Self {
        Self(Arc::new(Inner {
            held: AtomicUsize::new(0),
            release: tokio::sync::watch::channel(0).0,
        }))
    }
}

impl Holds {
    /// A ticket to wait on, taken when the request arrives (so a release
    /// after it arrived and before it holds is not missed).
    pub fn ticket(&self) -> tokio::sync::watch::Receiver<u64> {
        self.0.release.subscribe()
    }

    /// Waits, counted as held, until the next release after `ticket` was taken.
    pub async fn hold(&self, mut ticket: tokio::sync::watch::Receiver<u64>) {
        self.0.held.fetch_add(1, Ordering::SeqCst);
        let _held = Held(&self.0);
        let _ = ticket.changed().await;
    }

    /// Requests being held now.
    pub fn held(&self) -> usize {
        self.0.held.load(Ordering::SeqCst)
    }

    /// Lets every held request go on.
    pub fn release(&self) {
        self.0.release.send_modify(|generation| *generation += 1);
    }

    /// Waits until at least `n` requests are held (panics after 30 s, naming `emulator`).
    pub async fn wait_until_held(&self, n: usize, emulator: &str) {
        wait_until(
            emulator,
            || (self.held() >= n).then_some(()),
            || format!("{} of {n} requests held", self.held()),
        )
        .await
    }
}

/// Polls `ready` every 20 ms until it gives a value; panics after 30 s with
/// `emulator` and what `progress` says.
pub async fn wait_until<T>(
    emulator: &str,
    mut ready: impl FnMut() -> Option<T>,
    progress: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(value) = ready() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "{emulator}: {} after 30 s",
            progress()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
