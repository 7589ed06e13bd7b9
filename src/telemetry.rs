use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Logs go to stderr: JSON lines when `LOG_FORMAT=json`, human-readable otherwise.
/// `RUST_LOG` filters (default `info`). Secrets are never logged: tokens, passwords and
/// connection strings are held in secret types whose Debug output is redacted.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|v| v == "json");
    let registry = tracing_subscriber::registry().with(filter);
    let _ = if json {
        registry
            .with(fmt::layer().json().with_writer(std::io::stderr))
            .try_init()
    } else {
        registry
            .with(fmt::layer().with_writer(std::io::stderr))
            .try_init()
    };
}
