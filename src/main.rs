//! The `csrd` binary: parse the command line, set up logging and tracing, run.
#![forbid(unsafe_code)]

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    csrd::telemetry::init();
    let result = csrd::cli::run(csrd::cli::Cli::parse()).await;
    csrd::telemetry::shutdown();
    result
}
