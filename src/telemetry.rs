use std::io::IsTerminal;

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Lines queued for the log writer thread before new ones are dropped.
const LOG_QUEUE_LINES: usize = 64 * 1024;

/// Logs go to stderr, one event per line: JSON lines when `LOG_FORMAT=json`,
/// human-readable otherwise (colored only when stderr is a terminal).
/// `RUST_LOG` filters (default `info`). Secrets are never logged: tokens, passwords and
/// connection strings are held in secret types whose Debug output is redacted.
///
/// Lines are formatted on the request's thread but written by a dedicated thread, so a
/// slow log reader (a full pipe) never blocks the async runtime; past
/// `LOG_QUEUE_LINES` queued lines, new lines are dropped rather than stall requests.
/// Keep the returned guard alive until exit: dropping it flushes the queue.
pub fn init() -> WorkerGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|v| v == "json");
    let (writer, guard) = NonBlockingBuilder::default()
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .lossy(true)
        .thread_name("palisade-log")
        .finish(std::io::stderr());
    let registry = tracing_subscriber::registry().with(filter);
    let _ = if json {
        registry
            .with(fmt::layer().json().with_writer(writer))
            .try_init()
    } else {
        registry
            .with(
                fmt::layer()
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_writer(writer),
            )
            .try_init()
    };
    guard
}
