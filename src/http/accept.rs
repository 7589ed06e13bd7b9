//! The API's listener: TCP_NODELAY on every connection, and a cap on the connections
//! held open at once.
//!
//! Every open connection costs memory (its task, hyper's buffers, a socket), whether it
//! carries requests or idles on keep-alive; without a cap, a flood of connections grows
//! the process until it dies. At the cap (`MAX_CONNECTIONS`) a new connection is
//! answered at once with a `503` problem (`too_many_connections`, `Retry-After: 1`,
//! `Connection: close`) and closed, so a client learns why, and the connections already
//! held are served as before. Those refusals are themselves bounded: beyond
//! [`REFUSING_AT_ONCE`] in progress a connection is closed without an answer.
//!
//! Accept errors are absorbed here rather than returned: poem's accept loop retries at
//! once on an error, so a process out of file descriptors (EMFILE) would spin a core.
//! Here it pauses [`EXHAUSTED_PAUSE`] and logs, at most once a second.

use std::{
    io,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use poem::{
    http::uri::Scheme,
    listener::Acceptor,
    web::{LocalAddr, RemoteAddr},
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::TcpStream,
    sync::{OwnedSemaphorePermit, Semaphore},
};

use crate::http::problem::{ApiError, PROBLEM_CONTENT_TYPE, problem_json};

/// Refusals answered at once; a flood beyond this is closed without an answer.
pub const REFUSING_AT_ONCE: usize = 256;
/// How long one refusal may take (write the answer, read what the client sent).
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(2);
/// The pause after an accept failed for lack of descriptors or memory.
const EXHAUSTED_PAUSE: Duration = Duration::from_millis(100);

/// Connections open now, across every [`Limited`] listener of the process (for metrics).
static OPEN: AtomicUsize = AtomicUsize::new(0);

/// Connections open now.
pub fn open_connections() -> usize {
    OPEN.load(Ordering::Relaxed)
}

/// An acceptor of TCP connections that sets TCP_NODELAY and holds at most `max` open.
///
/// TCP_NODELAY: a streamed answer is many small writes (the head, then each server-sent
/// event); with Nagle's algorithm on, a write waits for the ACK of the one before, which
/// a client delays up to 40 ms -- the assistant's first token arrived ~40 ms after the
/// handler returned (benches/README-performance.md, issue 15).
pub struct Limited<A> {
    inner: A,
    max: usize,
    permits: Arc<Semaphore>,
    refusing: Arc<Semaphore>,
    refusal: Arc<[u8]>,
    last_warning: Mutex<Option<Instant>>,
}

impl<A> Limited<A> {
    pub fn new(inner: A, max: usize) -> Self {
        let max = max.max(1);
        Self {
            inner,
            max,
            permits: Arc::new(Semaphore::new(max)),
            refusing: Arc::new(Semaphore::new(REFUSING_AT_ONCE)),
            refusal: refusal(max).into(),
            last_warning: Mutex::new(None),
        }
    }

    /// Logs `message` unless something was logged in the last second.
    fn warn(&self, message: &str, err: &dyn std::fmt::Display) {
        let mut last = self.last_warning.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if last.is_none_or(|at| now.duration_since(at) >= Duration::from_secs(1)) {
            *last = Some(now);
            tracing::warn!(error = %err, max_connections = self.max, "{message}");
        }
    }

    /// Answers `io` with the 503 and closes it, in its own task; or just closes it when
    /// [`REFUSING_AT_ONCE`] refusals are already in progress.
    fn refuse(&self, mut io: TcpStream) {
        crate::metrics::connection_refused();
        self.warn(
            "connection refused: MAX_CONNECTIONS are open",
            &"at the connection limit",
        );
        let Ok(slot) = Arc::clone(&self.refusing).try_acquire_owned() else {
            return;
        };
        let refusal = Arc::clone(&self.refusal);
        tokio::spawn(async move {
            let _slot = slot;
            let _ = tokio::time::timeout(REFUSAL_TIMEOUT, async move {
                io.write_all(&refusal).await?;
                io.shutdown().await?;
                // Read what the client sent before closing: closing a socket with unread
                // input resets it, and the client may lose the answer.
                let mut buf = [0u8; 4096];
                let mut read = 0;
                while read < 64 * 1024 {
                    match io.read(&mut buf).await? {
                        0 => break,
                        n => read += n,
                    }
                }
                Ok::<_, io::Error>(())
            })
            .await;
        });
    }
}

/// The whole HTTP/1.1 answer to a connection over the cap.
fn refusal(max: usize) -> Vec<u8> {
    let body = problem_json(
        &ApiError::unavailable(
            format!(
                "the server holds its maximum of {max} open connections (MAX_CONNECTIONS); \
                 retry shortly, or reuse a connection you hold"
            ),
            1,
        )
        .with_code("too_many_connections")
        .into_problem(),
    );
    let mut answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\n\
         content-type: {PROBLEM_CONTENT_TYPE}\r\n\
         retry-after: 1\r\n\
         connection: close\r\n\
         content-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    answer.extend_from_slice(&body);
    answer
}

/// Accept errors that say the process is out of something, not that one connection
/// failed: retrying at once would spin.
fn exhausted(err: &io::Error) -> bool {
    use rustix::io::Errno;
    Errno::from_io_error(err).is_some_and(|e| {
        matches!(
            e,
            Errno::MFILE | Errno::NFILE | Errno::NOBUFS | Errno::NOMEM
        )
    })
}

impl<A: Acceptor<Io = TcpStream>> Acceptor for Limited<A> {
    type Io = Connection;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.inner.local_addr()
    }

    async fn accept(&mut self) -> io::Result<(Self::Io, LocalAddr, RemoteAddr, Scheme)> {
        loop {
            match self.inner.accept().await {
                Ok((io, local, remote, scheme)) => {
                    let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() else {
                        self.refuse(io);
                        continue;
                    };
                    if let Err(err) = io.set_nodelay(true) {
                        tracing::debug!(error = %err, "TCP_NODELAY not set");
                    }
                    OPEN.fetch_add(1, Ordering::Relaxed);
                    return Ok((
                        Connection {
                            io,
                            _permit: permit,
                        },
                        local,
                        remote,
                        scheme,
                    ));
                }
                Err(err) if exhausted(&err) => {
                    self.warn("accepting a connection failed; pausing", &err);
                    tokio::time::sleep(EXHAUSTED_PAUSE).await;
                }
                // One connection failed before it was accepted (reset, aborted): next.
                Err(err) => tracing::debug!(error = %err, "accept failed"),
            }
        }
    }
}

/// An accepted connection; its slot under the cap is released when it is dropped.
pub struct Connection {
    io: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Connection {
    fn drop(&mut self) {
        OPEN.fetch_sub(1, Ordering::Relaxed);
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Raises this process's soft limit on open files to its hard limit, and returns the
/// soft limit in force (None when unlimited or unreadable).
fn raise_open_files_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let below = match (limit.current, limit.maximum) {
        (Some(current), Some(maximum)) => current < maximum,
        (Some(_), None) => true,
        (None, _) => false,
    };
    if below {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            return limit.maximum;
        }
    }
    limit.current
}

/// Descriptors kept for everything but API connections: the database pools, the object
/// store, the LLM and Stripe clients, the embedded cluster's sockets, files.
const RESERVED_FILES: u64 = 512;

/// The connection cap in force: `requested`, lowered to fit the open-files limit (after
/// raising it to the hard limit), so the cap refuses a flood before accept() runs out of
/// descriptors.
pub fn connection_budget(requested: usize) -> usize {
    let Some(files) = raise_open_files_limit() else {
        return requested;
    };
    let fits = usize::try_from(files.saturating_sub(RESERVED_FILES))
        .unwrap_or(usize::MAX)
        .max(1);
    if fits < requested {
        tracing::warn!(
            requested,
            open_files_limit = files,
            max_connections = fits,
            "MAX_CONNECTIONS lowered to fit the open-files limit (raise it with ulimit -n)"
        );
        fits
    } else {
        requested
    }
}
