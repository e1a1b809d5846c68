//! One example line per command, shown at the end of its `--help`. Kept in one table so a test
//! can check that every command has one, and that the commands table of the manual
//! (docs/operations.md, "Commands") names exactly the commands clap knows.

use clap::Command;

/// `(command path, example)`; the path is the words after `csrd`.
pub const EXAMPLES: &[(&str, &str)] = &[
    (
        "serve",
        "DATABASE_URL=postgres://postgres@127.0.0.1:5432/csrd csrd serve",
    ),
    ("ingress", "CSRD_LISTEN=0.0.0.0:8080 csrd ingress"),
    ("worker", "CSRD_KEY_POOL_RSA2048=64 csrd worker"),
    (
        "migrate",
        "DATABASE_URL=postgres://postgres@db:5432/csrd csrd migrate",
    ),
    (
        "token",
        "csrd token create --account 023e105f4ecef8ad9ca31a8372d0c353 --permission write",
    ),
    (
        "token create",
        "csrd token create --account 023e105f4ecef8ad9ca31a8372d0c353 --permission write --name ci",
    ),
    ("token list", "csrd token list --json"),
    (
        "token revoke",
        "csrd token revoke 0190c1b2-7a3e-7cc1-9a52-5b2f6e3f4a10",
    ),
    (
        "user",
        "csrd user create --email ops@example.com --account 023e105f4ecef8ad9ca31a8372d0c353",
    ),
    (
        "user create",
        "csrd user create --email ops@example.com --account 023e105f4ecef8ad9ca31a8372d0c353",
    ),
    ("user list", "csrd user list --json"),
    ("user revoke", "csrd user revoke --email ops@example.com"),
    ("kek", "csrd kek generate --id 2026-12"),
    ("kek generate", "csrd kek generate --id 2026-12"),
    (
        "kek rewrap",
        "CSRD_KEKS=2026-12:…,2026-06:… csrd kek rewrap",
    ),
    ("kek status", "csrd kek status"),
    ("keys", "CSRD_KEKS=2026-12:… csrd keys verify --sample 1000"),
    (
        "keys verify",
        "CSRD_KEKS=2026-12:… csrd keys verify --account 023e105f4ecef8ad9ca31a8372d0c353",
    ),
    ("bench", "csrd bench keygen --threads 2 --seconds 10"),
    ("bench keygen", "csrd bench keygen --threads 2 --seconds 10"),
    ("bench verify", "csrd bench verify --seconds 2"),
    ("bench list", "csrd bench list --rows 100000"),
    (
        "bench create",
        "csrd bench create --base-url http://127.0.0.1:8080 --token $TOKEN --account 023e105f4ecef8ad9ca31a8372d0c353 --key-type p256v1 --requests 10000 --concurrency 64",
    ),
    (
        "batch",
        "csrd batch --url http://127.0.0.1:8080 --account 023e105f4ecef8ad9ca31a8372d0c353 --input csrs.jsonl --output out.jsonl",
    ),
    (
        "audit",
        "csrd audit --account 023e105f4ecef8ad9ca31a8372d0c353 --since 2026-12-01T00:00:00Z --action csr",
    ),
    ("certs", "csrd certs expiring --days 30"),
    (
        "certs expiring",
        "csrd certs expiring --days 30 --account 023e105f4ecef8ad9ca31a8372d0c353 --json",
    ),
    ("tenant", "csrd tenant limits show"),
    (
        "tenant limits",
        "csrd tenant limits set --account 023e105f4ecef8ad9ca31a8372d0c353 --weight 4",
    ),
    (
        "tenant limits set",
        "csrd tenant limits set --account 023e105f4ecef8ad9ca31a8372d0c353 --weight 4 --rate 500",
    ),
    ("tenant limits show", "csrd tenant limits show --json"),
    (
        "tenant limits clear",
        "csrd tenant limits clear --account 023e105f4ecef8ad9ca31a8372d0c353",
    ),
    (
        "agent",
        "csrd agent sync --config /etc/csrd/agent.toml --watch 60",
    ),
    (
        "agent init",
        "csrd agent init --identity /etc/csrd/agent.key",
    ),
    (
        "agent sync",
        "csrd agent sync --config /etc/csrd/agent.toml --watch 60",
    ),
    (
        "recipient",
        "csrd recipient list --account 023e105f4ecef8ad9ca31a8372d0c353",
    ),
    (
        "recipient approve",
        "csrd recipient approve 0190c1b2-7a3e-7cc1-9a52-5b2f6e3f4a10 --fingerprint 3f9a0c…",
    ),
    ("recipient list", "csrd recipient list --json"),
    (
        "recipient revoke",
        "csrd recipient revoke 0190c1b2-7a3e-7cc1-9a52-5b2f6e3f4a10",
    ),
];

/// `command` with each subcommand's example at the end of its help.
pub fn with_examples(command: Command) -> Command {
    attach(command, "")
}

fn attach(mut command: Command, path: &str) -> Command {
    if let Some((_, example)) = EXAMPLES.iter().find(|(p, _)| *p == path) {
        command = command.after_help(format!("Example:\n  {example}"));
    }
    let names: Vec<String> = command
        .get_subcommands()
        .map(|s| s.get_name().to_owned())
        .collect();
    for name in names {
        let child = if path.is_empty() {
            name.clone()
        } else {
            format!("{path} {name}")
        };
        command = command.mut_subcommand(&name, |sub| attach(sub, &child));
    }
    command
}

/// Every command path clap knows (without the generated `help`), parents and leaves.
pub fn command_paths(command: &Command) -> Vec<String> {
    fn walk(command: &Command, path: &str, out: &mut Vec<String>) {
        for sub in command.get_subcommands() {
            if sub.get_name() == "help" {
                continue;
            }
            let child = if path.is_empty() {
                sub.get_name().to_owned()
            } else {
                format!("{path} {}", sub.get_name())
            };
            out.push(child.clone());
            walk(sub, &child, out);
        }
    }
    let mut out = Vec::new();
    walk(command, "", &mut out);
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use clap::CommandFactory;

    use super::*;
    use crate::cli::Cli;

    #[test]
    fn every_command_has_an_example_that_clap_accepts() {
        let paths: BTreeSet<String> = command_paths(&Cli::command()).into_iter().collect();
        let with: BTreeSet<String> = EXAMPLES.iter().map(|(p, _)| p.to_string()).collect();
        let missing: Vec<_> = paths.difference(&with).collect();
        let unknown: Vec<_> = with.difference(&paths).collect();
        assert!(
            missing.is_empty(),
            "commands without an example: {missing:?}"
        );
        assert!(unknown.is_empty(), "examples of no command: {unknown:?}");
        for (path, example) in EXAMPLES {
            let words: Vec<&str> = example
                .split_whitespace()
                .skip_while(|w| *w != "csrd")
                .collect();
            assert_eq!(words.first(), Some(&"csrd"), "{path}: {example}");
            // Values written with "…" stand for a secret or a long id: only the command
            // words and flags are checked there.
            if example.contains('…') {
                continue;
            }
            if let Err(e) = with_examples(Cli::command()).try_get_matches_from(&words) {
                panic!("{path}: {example}: {e}");
            }
        }
    }

    #[test]
    fn help_ends_with_the_example() {
        let mut command = with_examples(Cli::command());
        let token = command.find_subcommand_mut("token").unwrap();
        let create = token.find_subcommand_mut("create").unwrap();
        let help = create.render_help().to_string();
        assert!(
            help.trim_end()
                .ends_with("Example:\n  csrd token create --account 023e105f4ecef8ad9ca31a8372d0c353 --permission write --name ci"),
            "{help}"
        );
    }

    /// The manual's commands table (docs/operations.md, "Commands") against clap: each row
    /// names commands by their first words (`csrd token list [--json] / csrd token revoke ID`),
    /// and together the rows name every command clap knows, and no other.
    #[test]
    fn the_manual_names_every_command() {
        let manual = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/operations.md"),
        )
        .unwrap();
        let table: String = manual
            .split("\n## Commands\n")
            .nth(1)
            .expect("a Commands section")
            .split("\n### ")
            .next()
            .unwrap()
            .to_owned();
        let clap_paths: BTreeSet<String> = command_paths(&Cli::command()).into_iter().collect();
        let mut named = BTreeSet::new();
        for row in table.lines().filter(|l| l.starts_with("| `csrd ")) {
            let cell = row.split(" | ").next().unwrap();
            for mention in cell.split("`csrd ").skip(1) {
                // The longest run of leading words that is a command clap knows.
                let words: Vec<&str> = mention
                    .split(|c: char| c == '`' || c.is_whitespace())
                    .take_while(|w| !w.is_empty() && !w.starts_with('-') && !w.starts_with('['))
                    .collect();
                let path = (1..=words.len())
                    .rev()
                    .map(|n| words[..n].join(" "))
                    .find(|p| clap_paths.contains(p))
                    .unwrap_or_else(|| {
                        panic!("the manual names `csrd {mention}`, which clap does not know")
                    });
                named.insert(path);
            }
        }
        // A parent is named when one of its commands is.
        let covered: BTreeSet<String> = clap_paths
            .iter()
            .filter(|p| named.contains(*p) || named.iter().any(|n| n.starts_with(&format!("{p} "))))
            .cloned()
            .collect();
        let missing: Vec<_> = clap_paths.difference(&covered).collect();
        assert!(
            missing.is_empty(),
            "commands the manual's table does not name: {missing:?}"
        );
    }
}
