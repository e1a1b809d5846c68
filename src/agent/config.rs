//! The agent's configuration file (TOML). Everything the agent writes to and runs comes from
//! here, never from the server: target paths, names and commands are the operator's.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::domain::{CsrId, Owner, OwnerKind, RecipientId};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    /// The API base URL (`https://csrd.example.com`, with or without `/client/v4`).
    api: String,
    /// PEM CA certificates to trust for the API (instead of the public roots).
    ca_file: Option<PathBuf>,
    /// PEM CA certificates a delivered chain must end at (be one of, or be issued by): a
    /// server answering as the API cannot hand over a key with a chain of its own making.
    issuers: Option<PathBuf>,
    /// A `key-delivery` token, or the file holding it.
    token: Option<String>,
    token_file: Option<PathBuf>,
    /// The age identity `csrd agent init` wrote.
    identity: PathBuf,
    /// The tenant: one of these.
    account: Option<String>,
    zone: Option<String>,
    recipient_id: String,
    /// Where the agent remembers what it installed (default: beside this file).
    state: Option<PathBuf>,
    #[serde(default, rename = "target")]
    targets: Vec<TargetFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetFile {
    custom_csr_id: Option<String>,
    host: Option<String>,
    /// Every name a certificate installed here may cover (a wildcard covers one label).
    /// Default: the target's `host`.
    names: Option<Vec<String>>,
    key: PathBuf,
    fullchain: PathBuf,
    check: Option<Vec<String>>,
    reload: Option<Vec<String>>,
}

/// The configuration, checked.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub api: String,
    pub ca_file: Option<PathBuf>,
    pub issuers: Option<PathBuf>,
    pub token: TokenSource,
    pub identity: PathBuf,
    pub owner: Owner,
    pub recipient: RecipientId,
    pub state: PathBuf,
    pub targets: Vec<Target>,
}

#[derive(Clone)]
pub enum TokenSource {
    Inline(String),
    File(PathBuf),
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenSource::Inline(_) => f.write_str("Inline([REDACTED])"),
            TokenSource::File(p) => write!(f, "File({p:?})"),
        }
    }
}

/// Which delivery a target takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    Csr(CsrId),
    /// The delivery whose certificate covers this host (the highest generation if several).
    Host(String),
}

#[derive(Debug, Clone)]
pub struct Target {
    pub selector: Selector,
    pub names: Vec<String>,
    pub key: PathBuf,
    pub fullchain: PathBuf,
    pub check: Option<Vec<String>>,
    pub reload: Option<Vec<String>>,
}

impl Target {
    /// How the summary and the log name it.
    pub fn label(&self) -> String {
        match &self.selector {
            Selector::Csr(id) => format!("csr {id}"),
            Selector::Host(h) => format!("host {h}"),
        }
    }
}

impl AgentConfig {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the agent configuration {}", path.display()))?;
        let file: File = toml::from_str(&text)
            .with_context(|| format!("the agent configuration {}", path.display()))?;
        let token = match (file.token, file.token_file) {
            (Some(t), None) => {
                refuse_readable_by_others(path, "it holds a token (or use token_file)")?;
                TokenSource::Inline(t.trim().to_owned())
            }
            (None, Some(p)) => TokenSource::File(p),
            _ => bail!("give one of token and token_file"),
        };
        let owner = match (file.account, file.zone) {
            (Some(a), None) => Owner::parse(OwnerKind::Account, &a).context("malformed account")?,
            (None, Some(z)) => Owner::parse(OwnerKind::Zone, &z).context("malformed zone")?,
            _ => bail!("give one of account and zone"),
        };
        let recipient =
            RecipientId::parse(&file.recipient_id).context("recipient_id is not a UUID")?;
        if file.targets.is_empty() {
            bail!("no [[target]]: nothing to install");
        }
        let targets = file
            .targets
            .into_iter()
            .enumerate()
            .map(|(i, t)| target(t).with_context(|| format!("target {}", i + 1)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let state = file
            .state
            .unwrap_or_else(|| path.with_extension("state.json"));
        Ok(Self {
            api: file.api,
            ca_file: file.ca_file,
            issuers: file.issuers,
            token,
            identity: file.identity,
            owner,
            recipient,
            state,
            targets,
        })
    }
}

fn target(t: TargetFile) -> anyhow::Result<Target> {
    let selector = match (t.custom_csr_id, t.host) {
        (Some(id), None) => Selector::Csr(CsrId::parse(&id).context("malformed custom_csr_id")?),
        (None, Some(host)) => Selector::Host(host.to_ascii_lowercase()),
        _ => bail!("give one of custom_csr_id and host"),
    };
    let names = match (t.names, &selector) {
        (Some(names), _) => names.into_iter().map(|n| n.to_ascii_lowercase()).collect(),
        (None, Selector::Host(h)) => vec![h.clone()],
        (None, Selector::Csr(_)) => bail!("a target by custom_csr_id needs names"),
    };
    if names.is_empty() {
        bail!("names is empty");
    }
    for name in &names {
        crate::domain::DnsName::parse(name, "")
            .map_err(|e| anyhow::anyhow!("names: {}", e.message))?;
    }
    for (what, argv) in [("check", &t.check), ("reload", &t.reload)] {
        if argv
            .as_ref()
            .is_some_and(|a| a.is_empty() || a[0].is_empty())
        {
            bail!("{what} must name a program: [\"nginx\", \"-t\"]");
        }
    }
    if t.key == t.fullchain {
        bail!("key and fullchain are the same path");
    }
    for p in [&t.key, &t.fullchain] {
        if !p.is_absolute() {
            bail!("{} is not an absolute path", p.display());
        }
    }
    Ok(Target {
        selector,
        names,
        key: t.key,
        fullchain: t.fullchain,
        check: t.check,
        reload: t.reload,
    })
}

/// Refuses a file that others than its owner may read (it holds a secret).
pub fn refuse_readable_by_others(path: &Path, why: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        bail!(
            "{} may be read by others (mode {:o}): {why}; chmod 600 it",
            path.display(),
            mode & 0o777
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> anyhow::Result<AgentConfig> {
        let dir = tempdir();
        let path = dir.join("agent.toml");
        std::fs::write(&path, text).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        AgentConfig::load(&path)
    }

    pub(crate) fn tempdir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("csrd-agent-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    const HEAD: &str = r#"
        api = "https://csrd.example.com"
        token_file = "/etc/csrd-agent/token"
        identity = "/etc/csrd-agent/identity"
        zone = "9a7806061c88ada191ed06f989cc3dac"
        recipient_id = "01938f2a-7c1e-7d4b-9a51-2f6a1c2d3e4f"
    "#;

    #[test]
    fn a_target_by_host_defaults_its_names() {
        let c = load(&format!(
            "{HEAD}\n[[target]]\nhost = \"Shop.Example.com\"\nkey = \"/tls/k\"\nfullchain = \"/tls/c\"\ncheck = [\"nginx\", \"-t\"]\n"
        ))
        .unwrap();
        assert_eq!(c.targets[0].names, ["shop.example.com"]);
        assert_eq!(
            c.targets[0].selector,
            Selector::Host("shop.example.com".into())
        );
        assert!(c.state.to_string_lossy().ends_with("agent.state.json"));
    }

    #[test]
    fn mistakes_are_refused_with_their_place() {
        for (target, why) in [
            (
                "host = \"a.example.com\"\nkey = \"k\"\nfullchain = \"/c\"",
                "absolute",
            ),
            (
                "custom_csr_id = \"01938f2a-7c1e-7d4b-9a51-2f6a1c2d3e4f\"\nkey = \"/k\"\nfullchain = \"/c\"",
                "needs names",
            ),
            (
                "host = \"a.example.com\"\nkey = \"/k\"\nfullchain = \"/k\"",
                "same path",
            ),
            (
                "host = \"a.example.com\"\nkey = \"/k\"\nfullchain = \"/c\"\nreload = []",
                "program",
            ),
            (
                "host = \"a.example.com\"\nkey = \"/k\"\nfullchain = \"/c\"\nshell = \"x\"",
                "unknown field",
            ),
        ] {
            let e = format!(
                "{:#}",
                load(&format!("{HEAD}\n[[target]]\n{target}\n")).unwrap_err()
            );
            assert!(e.contains(why), "{why}: {e}");
        }
        let inline = HEAD.replace("token_file = \"/etc/csrd-agent/token\"", "token = \"t\"");
        let dir = tempdir();
        let path = dir.join("agent.toml");
        std::fs::write(
            &path,
            format!(
                "{inline}\n[[target]]\nhost = \"a.example.com\"\nkey = \"/k\"\nfullchain = \"/c\"\n"
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = format!("{:#}", AgentConfig::load(&path).unwrap_err());
        assert!(e.contains("may be read by others"), "{e}");
    }
}
