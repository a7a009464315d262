//! The accept loop both listeners share (in place of `axum::serve` and
//! tonic's transport server, which have no header timeout and no
//! connection cap): one task per connection, at most `max_connections`
//! at once across the HTTP/1.1 and the ext_authz HTTP/2 listener
//! (accepting pauses when full: one budget of file descriptors), and a
//! watchdog per connection that closes it when
//!
//! - it sends no complete request headers within `header_timeout` (from
//!   accept, or on HTTP/1.1 from the first byte of the next request on a
//!   keep-alive connection), or
//! - it stays idle between requests for `idle_timeout` (HTTP/2 is told
//!   goodbye first, and given one more header timeout to finish).
//!
//! A request in flight is bounded by the router's request timeout instead;
//! the bytes of request bodies held at once, by a [`BodyBudget`].
//! Graceful shutdown stops accepting, lets requests in flight finish and
//! closes idle connections. This module knows connections, never what a
//! request asks.

use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Notify, OwnedSemaphorePermit, Semaphore};
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

/// The client connections both listeners may hold at once (HTTP and
/// Envoy's gRPC): one slot per open connection, out of one budget of file
/// descriptors (`fit_connection_cap`).
#[derive(Clone)]
pub struct Slots {
    free: Arc<Semaphore>,
    max: usize,
    full_logged: Arc<AtomicBool>,
}

impl Slots {
    /// `max` connections at once (at least one).
    pub fn new(max: usize) -> Self {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        Slots {
            free: Arc::new(Semaphore::new(max)),
            max,
            full_logged: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Wait for a free slot; the first wait at the cap is logged.
    async fn take(&self) -> Option<OwnedSemaphorePermit> {
        if self.free.available_permits() == 0 && !self.full_logged.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                max_connections = self.max,
                "connection cap reached: accepting pauses until one closes"
            );
        }
        let permit = self.free.clone().acquire_owned().await.ok()?;
        if self.free.available_permits() > 0 {
            self.full_logged.store(false, Ordering::Relaxed);
        }
        Some(permit)
    }
}

/// An error a request body ends with, boxed as hyper and tonic take it.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The bytes of request bodies the process holds at once, across every
/// connection of both listeners. `--max-body-bytes` bounds one request;
/// this bounds what many unfinished ones hold together (an HTTP/2
/// connection carries up to 1,024 calls at once, each up to
/// `--max-body-bytes`).
#[derive(Clone)]
pub struct BodyBudget {
    bytes: Arc<Semaphore>,
}

impl BodyBudget {
    /// At most `max` bytes at once (at least one).
    pub fn new(max: usize) -> Self {
        BodyBudget {
            bytes: Arc::new(Semaphore::new(max.clamp(1, Semaphore::MAX_PERMITS))),
        }
    }

    /// `body`, each of whose bytes takes budget from its arrival until the
    /// body is dropped; when the budget is spent, the body ends with the
    /// error `refuse` makes (counted in
    /// `partnergate_body_budget_refusals_total{listener}`).
    pub fn wrap<B>(
        &self,
        body: B,
        listener: &'static str,
        refuse: fn() -> BoxError,
    ) -> Budgeted<B> {
        Budgeted {
            inner: body,
            budget: self.bytes.clone(),
            held: None,
            listener,
            refuse,
        }
    }
}

/// A request body under a [`BodyBudget`].
pub struct Budgeted<B> {
    inner: B,
    budget: Arc<Semaphore>,
    held: Option<OwnedSemaphorePermit>,
    listener: &'static str,
    refuse: fn() -> BoxError,
}

impl<B> hyper::body::Body for Budgeted<B>
where
    B: hyper::body::Body<Data = hyper::body::Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = hyper::body::Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(Some(Ok(frame))) => frame,
        };
        if let Some(data) = frame.data_ref() {
            let n = u32::try_from(data.len()).unwrap_or(u32::MAX);
            let Ok(more) = this.budget.clone().try_acquire_many_owned(n) else {
                metrics::counter!("partnergate_body_budget_refusals_total",
                    "listener" => this.listener)
                .increment(1);
                return Poll::Ready(Some(Err((this.refuse)())));
            };
            match &mut this.held {
                Some(held) => held.merge(more),
                None => this.held = Some(more),
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// What an accepted connection carries into its task: its slot, the
/// listener's stop signal, and a handle the listener's drain waits on.
pub(crate) struct Accepted {
    _slot: OwnedSemaphorePermit,
    _open: mpsc::Sender<()>,
    stop: watch::Receiver<bool>,
}

/// Accept from `accept` until `shutdown` resolves, each connection taking
/// a slot first (accepting pauses while none is free), and hand it to
/// `serve` with its [`Accepted`]; then drop `accept` (which should own
/// the listener, so that new clients are refused from then on), stop
/// every connection and wait until all have ended. An accept error (out
/// of descriptors, a reset before accept) is logged and retried after a
/// pause instead of spinning.
pub(crate) async fn accept_loop<I, A, F>(
    mut accept: impl FnMut() -> A,
    slots: &Slots,
    shutdown: impl Future<Output = ()>,
    mut serve: impl FnMut(I, Accepted) -> F,
) where
    A: Future<Output = std::io::Result<I>>,
    F: Future<Output = ()> + Send + 'static,
{
    let (stop_tx, stop_rx) = watch::channel(false);
    let (open_tx, mut open_rx) = mpsc::channel::<()>(1);
    let mut shutdown = pin!(shutdown);
    loop {
        let slot = tokio::select! {
            s = slots.take() => match s {
                Some(s) => s,
                None => break,
            },
            () = &mut shutdown => break,
        };
        let io = tokio::select! {
            r = accept() => match r {
                Ok(io) => io,
                Err(e) => {
                    tracing::warn!(error = %e, "accept error");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let accepted = Accepted {
            _slot: slot,
            _open: open_tx.clone(),
            stop: stop_rx.clone(),
        };
        tokio::spawn(serve(io, accepted));
    }
    drop(accept);
    let _ = stop_tx.send(true);
    drop(open_tx);
    // Every connection holds a sender until it ends.
    let _ = open_rx.recv().await;
}

/// Serve `router` on `listener` (HTTP/1.1) until `shutdown` resolves, then
/// drain.
pub async fn run(
    listener: TcpListener,
    router: Router,
    limits: ConnLimits,
    slots: &Slots,
    shutdown: impl Future<Output = ()>,
) {
    let listener = Arc::new(listener);
    let accept = move || {
        let listener = listener.clone();
        async move {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
    };
    accept_loop(accept, slots, shutdown, |stream, accepted| {
        serve_connection(stream, router.clone(), limits, accepted)
    })
    .await;
}

const NONE: u64 = u64::MAX;

/// What one connection is doing, shared by its reader, its service and its
/// watchdog. Times are milliseconds since `origin`.
pub(crate) struct Activity {
    origin: Instant,
    in_flight: AtomicUsize,
    /// When the bytes of a request not yet dispatched began (NONE: none).
    pending_since: AtomicU64,
    /// When the last request finished.
    idle_since: AtomicU64,
    wake: Notify,
    /// Answers made but not yet sent in full (an HTTP/2 peer that does not
    /// read keeps them in memory), by when each was made, and how long one
    /// may wait before the connection is closed (`None`: not watched).
    unsent: std::sync::Mutex<std::collections::BTreeMap<u64, u32>>,
    unsent_limit: Option<Duration>,
}

impl Activity {
    /// A new connection: it owes its first request within the header
    /// timeout.
    pub(crate) fn new() -> Self {
        Activity {
            origin: Instant::now(),
            in_flight: AtomicUsize::new(0),
            // A new connection owes its first request's headers.
            pending_since: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
            wake: Notify::new(),
            unsent: std::sync::Mutex::default(),
            unsent_limit: None,
        }
    }

    /// A connection whose answers must be sent (read by the peer) within
    /// `limit` of being made, else it is closed ([`Unsent`]).
    pub(crate) fn with_unsent_limit(limit: Duration) -> Self {
        Activity {
            unsent_limit: Some(limit),
            ..Activity::new()
        }
    }

    /// Note an answer made now and not yet sent; the key to give back.
    fn unsent_begin(&self) -> u64 {
        let at = self.now();
        if let Ok(mut m) = self.unsent.lock() {
            *m.entry(at).or_default() += 1;
        }
        at
    }

    /// The answer made at `at` is sent (or dropped).
    fn unsent_end(&self, at: u64) {
        if let Ok(mut m) = self.unsent.lock() {
            if let Some(n) = m.get_mut(&at) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&at);
                }
            }
        }
    }

    /// When the oldest answer not yet sent must be sent by, if any.
    fn unsent_due(&self) -> Option<Instant> {
        let limit = self.unsent_limit?;
        let oldest = *self.unsent.lock().ok()?.keys().next()?;
        Some(self.at(oldest) + limit)
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
        // The watchdog's deadline was the header timeout's, which may lie
        // past the idle timeout that follows this request: have it look
        // again.
        if self.pending_since.swap(NONE, Ordering::AcqRel) != NONE {
            self.wake.notify_one();
        }
    }

    fn end(&self) {
        self.idle_since.store(self.now(), Ordering::Release);
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    /// The next time to look, or why the connection must close now.
    fn due(&self, limits: &ConnLimits) -> Result<Instant, Close> {
        let now = Instant::now();
        let unsent = self.unsent_due();
        if unsent.is_some_and(|by| now >= by) {
            return Err(Close::Unread);
        }
        let sooner = |at: Instant| unsent.map_or(at, |by| by.min(at));
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return Ok(sooner(now + limits.header_timeout.min(limits.idle_timeout)));
        }
        let pending = self.pending_since.load(Ordering::Acquire);
        let (at, why) = if pending == NONE {
            (
                self.at(self.idle_since.load(Ordering::Acquire)) + limits.idle_timeout,
                Close::Idle,
            )
        } else {
            (self.at(pending) + limits.header_timeout, Close::Silent)
        };
        if now >= at {
            Err(why)
        } else {
            Ok(sooner(at))
        }
    }
}

/// A response body whose answer counts as not yet sent (on its
/// connection's [`Activity`]) until it ends or is dropped: a peer that
/// never reads an answer (an HTTP/2 stream with no flow-control window)
/// holds it in memory only until the connection's unsent limit, when the
/// watchdog closes the connection and everything it held is freed.
pub(crate) struct Unsent<B> {
    inner: B,
    activity: Arc<Activity>,
    at: Option<u64>,
}

impl<B> Unsent<B> {
    /// `body`, counted on `activity` from now.
    pub(crate) fn new(body: B, activity: Arc<Activity>) -> Self {
        let at = Some(activity.unsent_begin());
        Unsent {
            inner: body,
            activity,
            at,
        }
    }

    fn sent(&mut self) {
        if let Some(at) = self.at.take() {
            self.activity.unsent_end(at);
        }
    }
}

impl<B> Drop for Unsent<B> {
    fn drop(&mut self) {
        self.sent();
    }
}

impl<B> hyper::body::Body for Unsent<B>
where
    B: hyper::body::Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let frame = Pin::new(&mut this.inner).poll_frame(cx);
        if matches!(frame, Poll::Ready(None | Some(Err(_)))) {
            this.sent();
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Why a connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Close {
    /// No complete request (headers) within the header timeout.
    Silent,
    /// Nothing in flight for the idle timeout.
    Idle,
    /// An answer the peer did not read within its limit.
    Unread,
}

impl Close {
    /// Its `reason` label in `partnergate_connections_closed_total`.
    fn label(self) -> &'static str {
        match self {
            Close::Silent => "silent",
            Close::Idle => "idle",
            Close::Unread => "unread",
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Close::Silent => "no complete request headers within the header timeout",
            Close::Idle => "idle longer than the idle timeout",
            Close::Unread => "an answer not read by the peer within the request timeout",
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
    accepted: Accepted,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: activity.clone(),
    });
    let act = activity.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        counted(&act, router.clone().oneshot(req.map(Body::new)))
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .keep_alive(true)
        // Our watchdog keeps the time; this bounds each connection's buffer.
        .header_read_timeout(None)
        .max_buf_size(64 * 1024);
    drive(
        builder.serve_connection(io, service),
        Closing {
            listener: "http",
            goodbye_when_idle: false,
            goodbye: |c| c.graceful_shutdown(),
        },
        &activity,
        limits,
        accepted,
    )
    .await;
}

/// `answer`, with its request marked in flight on `activity` from this
/// call until the answer is ready (or dropped).
pub(crate) fn counted<F: Future>(
    activity: &Arc<Activity>,
    answer: F,
) -> impl Future<Output = F::Output> {
    activity.begin();
    let busy = Busy(activity.clone());
    async move {
        let answer = answer.await;
        drop(busy);
        answer
    }
}

/// How the watchdog closes a connection of one listener.
pub(crate) struct Closing<C> {
    /// The listener's name in `partnergate_connections_closed_total`.
    pub listener: &'static str,
    /// Whether closing an idle connection says goodbye first (HTTP/2's
    /// two-step GOAWAY, so that a request the client sent meanwhile is
    /// still answered) instead of dropping the socket (HTTP/1.1, where an
    /// idle close is the protocol's own race).
    pub goodbye_when_idle: bool,
    /// Stop taking requests and end once those in flight are answered
    /// (hyper's `graceful_shutdown`).
    pub goodbye: fn(Pin<&mut C>),
}

impl<C> Closing<C> {
    /// Count a close by the watchdog (or a goodbye said for it).
    fn count(&self, reason: &'static str) {
        metrics::counter!("partnergate_connections_closed_total",
            "listener" => self.listener, "reason" => reason)
        .increment(1);
    }
}

/// Run `conn` under its watchdog until it ends: closed when silent or idle
/// past `limits` (an HTTP/2 goodbye gets one more header timeout to
/// finish, and more while calls are in flight), drained when the listener
/// stops.
pub(crate) async fn drive<C: Future<Output = Result<(), hyper::Error>>>(
    conn: C,
    closing: Closing<C>,
    activity: &Activity,
    limits: ConnLimits,
    mut accepted: Accepted,
) {
    let mut conn = pin!(conn);
    if *accepted.stop.borrow() {
        return;
    }
    let mut stopping = false;
    let mut said_goodbye = false;
    // The time by which a connection told goodbye while idle must end
    // (pushed back while calls it took meanwhile are still answered).
    let mut goodbye_by: Option<Instant> = None;
    loop {
        let deadline = match (goodbye_by, activity.due(&limits)) {
            (Some(by), _) => by,
            (None, Ok(at)) => at,
            (None, Err(Close::Idle)) if closing.goodbye_when_idle => {
                tracing::debug!(reason = Close::Idle.reason(), "saying goodbye");
                closing.count(Close::Idle.label());
                if !said_goodbye {
                    (closing.goodbye)(conn.as_mut());
                    said_goodbye = true;
                }
                let by = Instant::now() + limits.header_timeout;
                goodbye_by = Some(by);
                by
            }
            (None, Err(why)) => {
                tracing::debug!(reason = why.reason(), "closing connection");
                closing.count(why.label());
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
            changed = accepted.stop.changed(), if !stopping => {
                if changed.is_err() || *accepted.stop.borrow() {
                    stopping = true;
                    // Nothing in flight on HTTP/1.1 (idle, or half-sent
                    // headers): close now; otherwise let the responses go
                    // out first.
                    if !closing.goodbye_when_idle && activity.in_flight.load(Ordering::Acquire) == 0 {
                        return;
                    }
                    if !said_goodbye {
                        (closing.goodbye)(conn.as_mut());
                        said_goodbye = true;
                    }
                }
            }
            () = activity.wake.notified() => {}
            () = tokio::time::sleep_until(deadline) => {
                if goodbye_by.is_some() {
                    // Calls that came before the goodbye finished still get
                    // their answers (each is bounded by the request timeout).
                    if activity.in_flight.load(Ordering::Acquire) > 0 {
                        goodbye_by = Some(Instant::now() + limits.header_timeout);
                        continue;
                    }
                    tracing::debug!("closing connection: the goodbye was not finished in time");
                    closing.count("goodbye_unfinished");
                    return;
                }
            }
        }
    }
}
