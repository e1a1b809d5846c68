//! Command-line interface: the top-level clap definitions and the dispatcher that hands each
//! subcommand to the module owning it. Subcommand names, flags and output lines are contracts
//! that scripts, the compose file and operators rely on (docs/operations.md, "Commands"): change them only
//! deliberately.

mod agent;
mod audit;
mod batch;
mod bench;
mod certs;
mod credentials;
pub mod examples;
mod kek;
mod keys;
mod recipient;
mod serve;
mod session;
mod tenant;
mod text;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::audit::Actor;
use crate::settings::{DbSettings, OperatorSettings, Settings};
use crate::startup::Role;

#[derive(Debug, Parser)]
#[command(
    name = "csrd",
    version,
    about = "Cloudflare-compatible Custom CSR service"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The command line, parsed by clap with each command's example in its `--help`.
    pub fn parse_with_examples() -> Self {
        let matches = examples::with_examples(Self::command()).get_matches();
        Self::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run ingress and workers in one process (applies migrations first).
    Serve(Settings),
    /// Run the HTTP ingress only.
    Ingress(Settings),
    /// Run the key-generation workers only.
    Worker(Settings),
    /// Apply database migrations.
    Migrate(DbSettings),
    /// Manage API tokens.
    #[command(subcommand)]
    Token(credentials::TokenCommand),
    /// Manage legacy X-Auth-Email / X-Auth-Key users.
    #[command(subcommand)]
    User(credentials::UserCommand),
    /// Manage key-encryption keys.
    #[command(subcommand)]
    Kek(kek::KekCommand),
    /// Check the stored private keys.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Measure key generation and CSR signing speed.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Create a CSR for every line of a JSONL or CSV file through the API, resumably.
    Batch(batch::BatchArgs),
    /// Read the audit log, oldest first: creates, deletes, batch submissions, refused callers,
    /// token, user, KEK and tenant-limit operations.
    Audit(audit::AuditArgs),
    /// Custom certificates: `certs expiring --days 30 [--account|--zone] [--json]`.
    #[command(subcommand)]
    Certs(certs::CertsCommand),
    /// Manage per-tenant limits and fair-share weights.
    #[command(subcommand)]
    Tenant(tenant::TenantCommand),
    /// The TLS host's side of key delivery: init (an identity), sync (install what it receives).
    #[command(subcommand)]
    Agent(agent::AgentCommand),
    /// Key delivery recipients: approve (with the fingerprint), list, revoke.
    #[command(subcommand)]
    Recipient(recipient::RecipientCommand),
}

impl Command {
    /// Whether the command is an operator's, whose events name who ran it; the service's own
    /// processes (and migrations, which their deployments run) are not.
    fn is_operator_command(&self) -> bool {
        !matches!(
            self,
            Command::Serve(_)
                | Command::Ingress(_)
                | Command::Worker(_)
                | Command::Migrate(_)
                | Command::Agent(_)
        )
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    // The operator commands record who ran them: a name that would forge lines in
    // `csrd audit` is refused before anything is done.
    let operator = if cli.command.is_operator_command() {
        Actor::Operator(
            crate::audit::operator_name(&OperatorSettings::from_env())
                .map_err(anyhow::Error::msg)?,
        )
    } else {
        Actor::Anonymous
    };
    match cli.command {
        Command::Serve(settings) => serve::serve(Role::Serve, settings).await,
        Command::Ingress(settings) => serve::serve(Role::Ingress, settings).await,
        Command::Worker(settings) => serve::serve(Role::Worker, settings).await,
        Command::Migrate(db) => serve::migrate(db).await,
        Command::Token(command) => credentials::token(command, &operator).await,
        Command::User(command) => credentials::user(command, &operator).await,
        Command::Kek(command) => kek::run(command, &operator).await,
        Command::Keys(command) => keys::run(command, &operator).await,
        Command::Bench(command) => bench::run(command).await,
        Command::Batch(args) => batch::run(args).await,
        Command::Audit(args) => audit::query(args).await,
        Command::Certs(command) => certs::run(command).await,
        Command::Tenant(command) => tenant::run(command, &operator).await,
        Command::Recipient(command) => recipient::run(command, &operator).await,
        Command::Agent(command) => {
            if agent::run(command).await? {
                Ok(())
            } else {
                // The summary said what failed; the exit code says that something did.
                std::process::exit(1)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_clap_definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    fn command(args: &[&str]) -> Command {
        Cli::try_parse_from(std::iter::once("csrd").chain(args.iter().copied()))
            .unwrap()
            .command
    }

    #[test]
    fn only_the_service_processes_and_migrations_skip_the_operator_check() {
        for service in [["serve"], ["ingress"], ["worker"], ["migrate"]] {
            assert!(!command(&service).is_operator_command(), "{service:?}");
        }
        for operator in [
            &["token", "list"][..],
            &["user", "list"],
            &["kek", "generate"],
            &["audit"],
            &["bench", "keygen"],
        ] {
            assert!(command(operator).is_operator_command(), "{operator:?}");
        }
    }
}
