use std::process::ExitCode;

/// mimalloc instead of glibc malloc: a request allocates in many small pieces across
/// worker threads, where glibc's arenas cost ~15% of the server's CPU under load
/// (benches/README-performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The commands, their usage text and exit statuses: `palisade::cli`.
fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    palisade::cli::run(&args)
}
