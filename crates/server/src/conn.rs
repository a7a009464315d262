//! The accept loop (in place of `axum::serve`, which has no header timeout
//! and no connection cap): HTTP/1.1 over hyper, one task per connection,
//! at most `max_connections` at once (accepting pauses when full), and a
//! watchdog per connection that closes it when
//!
//! - it sends no complete request headers within `header_timeout` (from
//!   accept, or from the first byte of the next request on a keep-alive
//!   connection), or
//! - it stays idle between requests for `idle_timeout`.
//!
//! A request in flight is bounded by the router's request timeout instead.
//! Graceful shutdown stops accepting, lets requests in flight finish and
//! closes idle connections.

use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, Semaphore};
use tokio::time::Instant;
use tower::ServiceExt;

/// File descriptors kept free for everything but client sockets (the store,
/// the decision log, the policy watcher, blocking threads).
pub const RESERVED_FDS: u64 = 256;

/// The connection limits of `serve`.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Close a connection whose request headers are not complete this long
    /// after accept (or after the first byte of its next request).
    pub header_timeout: Duration,
    /// Close a keep-alive connection idle this long between requests.
    pub idle_timeout: Duration,
    /// Most open connections; accepting pauses at the cap.
    pub max_connections: usize,
}

/// Raise the soft open-files limit to the hard one and return the cap on
/// connections that fits under it (`wanted`, or less with a warning).
pub fn fit_connection_cap(wanted: usize) -> usize {
    let soft = raise_nofile_limit();
    let Some(soft) = soft else {
        return wanted.max(1);
    };
    let fits = soft.saturating_sub(RESERVED_FDS).max(1);
    let fits = usize::try_from(fits).unwrap_or(usize::MAX);
    if wanted > fits {
        tracing::warn!(
            wanted,
            cap = fits,
            nofile = soft,
            "--max-connections lowered to fit the open-files limit"
        );
        fits
    } else {
        wanted.max(1)
    }
}

/// Raise the soft RLIMIT_NOFILE to the hard limit; the resulting soft limit.
/// (Public for the tests, which need the same room for their sockets.)
#[cfg(unix)]
#[allow(unsafe_code)] // the one libc call of the workspace (workspace lint: unsafe_code = deny)
pub fn raise_nofile_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit are given a valid pointer to an rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return None;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 on every unix
    Some(lim.rlim_cur as u64)
}

#[cfg(not(unix))]
pub fn raise_nofile_limit() -> Option<u64> {
    None
}

/// Serve `router` on `listener` until `shutdown` resolves, then drain.
pub async fn run(
    listener: TcpListener,
    router: Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()>,
) {
    let max = u32::try_from(limits.max_connections.max(1)).unwrap_or(u32::MAX);
    let slots = Arc::new(Semaphore::new(max as usize));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = pin!(shutdown);
    let mut full_logged = false;
    loop {
        if slots.available_permits() == 0 && !full_logged {
            tracing::warn!(
                max_connections = max,
                "connection cap reached: accepting pauses until one closes"
            );
            full_logged = true;
        }
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        full_logged = full_logged && slots.available_permits() == 0;
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept error");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let stop = stop_rx.clone();
        tokio::spawn(async move {
            serve_connection(stream, router, limits, stop).await;
            tracing::trace!(%peer, "connection closed");
            drop(permit);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection holds a slot until it ends.
    let _ = slots.acquire_many(max).await;
}

const NONE: u64 = u64::MAX;

/// What one connection is doing, shared by its reader, its service and its
/// watchdog. Times are milliseconds since `origin`.
struct Activity {
    origin: Instant,
    in_flight: AtomicUsize,
    /// When the bytes of a request not yet dispatched began (NONE: none).
    pending_since: AtomicU64,
    /// When the last request finished.
    idle_since: AtomicU64,
    wake: Notify,
}

impl Activity {
    fn new() -> Self {
        Activity {
            origin: Instant::now(),
            in_flight: AtomicUsize::new(0),
            // A new connection owes its first request's headers.
            pending_since: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
            wake: Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(NONE - 1)
    }

    fn at(&self, ms: u64) -> Instant {
        self.origin + Duration::from_millis(ms)
    }

    fn on_read(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0
            && self
                .pending_since
                .compare_exchange(NONE, self.now(), Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.wake.notify_one();
        }
    }

    fn begin(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.pending_since.store(NONE, Ordering::Release);
    }

    fn end(&self) {
        self.idle_since.store(self.now(), Ordering::Release);
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    /// The next time to look, or why the connection must close now.
    fn due(&self, limits: &ConnLimits) -> Result<Instant, &'static str> {
        let now = Instant::now();
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return Ok(now + limits.header_timeout.min(limits.idle_timeout));
        }
        let pending = self.pending_since.load(Ordering::Acquire);
        let (at, why) = if pending == NONE {
            (
                self.at(self.idle_since.load(Ordering::Acquire)) + limits.idle_timeout,
                "idle longer than the idle timeout",
            )
        } else {
            (
                self.at(pending) + limits.header_timeout,
                "no complete request headers within the header timeout",
            )
        };
        if now >= at {
            Err(why)
        } else {
            Ok(at)
        }
    }
}

/// Marks a request in flight for as long as it lives.
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// The socket, telling [`Activity`] when bytes arrive.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.on_read();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

async fn serve_connection(
    stream: TcpStream,
    router: Router,
    limits: ConnLimits,
    mut stop: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: activity.clone(),
    });
    let act = activity.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        act.begin();
        let busy = Busy(act.clone());
        let router = router.clone();
        async move {
            let response = router.oneshot(req.map(Body::new)).await;
            drop(busy);
            response
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .keep_alive(true)
        // Our watchdog keeps the time; this bounds each connection's buffer.
        .header_read_timeout(None)
        .max_buf_size(64 * 1024);
    let mut conn = pin!(builder.serve_connection(io, service));
    if *stop.borrow() {
        return;
    }
    let mut draining = false;
    loop {
        let deadline = match activity.due(&limits) {
            Ok(at) => at,
            Err(why) => {
                tracing::debug!(reason = why, "closing connection");
                return;
            }
        };
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            changed = stop.changed(), if !draining => {
                if changed.is_err() || *stop.borrow() {
                    // Nothing in flight (idle, or half-sent headers): close
                    // now; otherwise let the response go out first.
                    if activity.in_flight.load(Ordering::Acquire) == 0 {
                        return;
                    }
                    conn.as_mut().graceful_shutdown();
                    draining = true;
                }
            }
            () = activity.wake.notified() => {}
            () = tokio::time::sleep_until(deadline) => {}
        }
    }
}
