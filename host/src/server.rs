//! The HTTP server: axum's router served by hyper's HTTP/1, as `axum::serve`
//! does, plus the timer that `axum::serve` leaves out. With it hyper enforces
//! its header read timeout: a client that trickles a request's headers (a slow
//! loris), or keeps a connection open without sending the next request, is
//! disconnected after `[header_timeout_ms]`, instead of holding a connection
//! and its task for ever. (A webhook's body has its own limit,
//! `[webhooks] body_timeout_ms`.) At most `[max_connections]` connections are
//! served at once: past that, new clients wait in the listen backlog until
//! one closes, instead of the host running out of file descriptors.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;

/// How long accepting waits after the listener failed (out of file
/// descriptors, say) before it tries again.
const ACCEPT_BACKOFF: Duration = Duration::from_secs(1);
/// How long a shutdown waits for open connections to finish what they are
/// answering. Event streams never finish by themselves: they are cut then.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How often reaching `max_connections` is logged, at most.
const AT_CAPACITY_LOG_EVERY: Duration = Duration::from_secs(60);

/// What the server allows its clients.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time a client has to send a request's headers.
    pub header_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
}

/// Serves `router` on `listener` until `shutdown` resolves; then stops
/// accepting, lets every open connection finish what it is answering, and
/// returns once they have closed, or after [`SHUTDOWN_GRACE`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let mut logged_full: Option<Instant> = None;
    loop {
        // A free slot first: at capacity, new clients wait in the backlog.
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if logged_full.is_none_or(|at| at.elapsed() >= AT_CAPACITY_LOG_EVERY) {
                    logged_full = Some(Instant::now());
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        "every connection slot is taken: new clients wait until one closes"
                    );
                }
                tokio::select! {
                    slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
                    () = &mut shutdown => break,
                }
            }
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // A client that gave up before it was accepted.
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(router.clone());
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(e) = connection.await {
                // A client gone, or too slow with its headers.
                tracing::debug!(error = %e, "connection ended");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::info!(
            "connections still open after {} s (event streams) are closed",
            SHUTDOWN_GRACE.as_secs()
        );
    }
}

/// An accept error that concerns one connection, not the listener.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}
