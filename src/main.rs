//! The `csrd` binary: parse the command line, set up logging and tracing, run.
#![forbid(unsafe_code)]

/// jemalloc rather than glibc's malloc: under 10,000 concurrent creates glibc kept the peak
/// (412 MB) after the load; jemalloc returns it (docs/operations.md, "Memory"). Its settings
/// are in `.cargo/config.toml`.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    csrd::telemetry::init();
    let result = csrd::cli::run(csrd::cli::Cli::parse_with_examples()).await;
    csrd::telemetry::shutdown();
    result
}
