//! `csrd agent init|sync`: run on the TLS host (see `crate::agent`).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Write a new age identity (mode 0600; an existing file is never overwritten) and print
    /// its recipient, to enroll as a key recipient.
    ///
    /// Example: csrd agent init --identity /etc/csrd-agent/identity
    Init {
        #[arg(long)]
        identity: PathBuf,
    },
    /// Install the keys and certificates the configuration's targets receive; exit 0 when
    /// every target is current, 1 when anything failed. A summary line ends each pass.
    ///
    /// Example: csrd agent sync --config /etc/csrd-agent/agent.toml --watch 300
    Sync(SyncArgs),
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// The agent's TOML configuration.
    #[arg(long)]
    pub config: PathBuf,
    /// Keep going: a pass every SECS seconds (10 to 86,400).
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(10..=86_400))]
    pub watch: Option<u64>,
}

pub(super) async fn run(command: AgentCommand) -> anyhow::Result<bool> {
    match command {
        AgentCommand::Init { identity } => {
            println!("{}", crate::agent::init_identity(&identity)?);
            Ok(true)
        }
        AgentCommand::Sync(args) => {
            let config = crate::agent::AgentConfig::load(&args.config)?;
            let agent = crate::agent::Agent::new(config)?;
            match args.watch {
                None => Ok(agent.pass().await?.all_current()),
                Some(secs) => loop {
                    if let Err(e) = agent.pass().await {
                        eprintln!("agent: the pass failed: {e:#}");
                    }
                    tokio::time::sleep(Duration::from_secs(secs)).await;
                },
            }
        }
    }
}
