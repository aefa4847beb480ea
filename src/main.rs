//! `poolkeeper`: parse the command line, set up logging, run the command.

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// jemalloc serves the process's allocations. Requests are handled on one thread and their memory
/// often freed on another (a response written by the runtime, a batch's answers sent from the
/// lease desk's thread); glibc's malloc spent about a tenth of the lease bench's time in its arenas
/// and locks, and jemalloc gave that bench about 16% more cycles a second. It also hands freed
/// large blocks back to the OS (each login's argon2 hash allocates about 19 MiB), so `serve` stays
/// near 37 MiB resident at rest (see docs/performance.md). SQLite's C code keeps the C library's
/// malloc.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build();
    match runtime {
        Ok(rt) => rt.block_on(run()),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(2);
        }
    }
}

async fn run() {
    let cli = poolkeeper::cli::Cli::parse();
    let filter = match cli.config() {
        Ok(config) => config.log,
        Err(_) => "info".to_string(),
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(filter)),
        )
        .with_writer(std::io::stderr)
        .init();
    match poolkeeper::cli::run(cli).await {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(2);
        }
    }
}
