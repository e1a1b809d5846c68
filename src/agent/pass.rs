//! One pass of `csrd agent sync`: for each target, take its delivery, check it, install it,
//! check the server's configuration and reload it.
//!
//! Nothing the server sends reaches a path or a command: the target's files and argv are the
//! configuration's. What the server sends is checked before anything is written:
//!
//! - the sealed key opens with the agent's identity and is the leaf's key (the public key
//!   derived from it), whose SubjectPublicKeyInfo digest is the delivered `spki_sha256`;
//! - the chain is in order and each link's signature verifies, the leaf is within its
//!   validity window, and every name it covers is among the target's `names`;
//! - the generation is not lower than the one installed (an old release replayed, or a
//!   rollback, is refused).
//!
//! Then the key (0600) and the chain (0644) are written atomically; the check command runs
//! (its failure puts the previous files back), then the reload command. Key bytes are never
//! logged, and live only in zeroizing buffers.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::Utc;
use serde::Deserialize;
use sha2::Digest as _;
use zeroize::Zeroizing;

use super::config::{AgentConfig, Selector, Target, TokenSource};
use super::files;
use super::state::{Installed, State};
use crate::client::http::{Call, call};
use crate::client::{Api, Budgets};
use crate::domain::KeyType;

/// A line on stdout; a closed stdout (`csrd agent sync | head -1`) is not the agent's failure
/// and must not stop a `--watch` loop.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// One delivery, as the server sends it.
#[derive(Debug, Deserialize)]
struct Delivery {
    custom_csr_id: String,
    #[serde(default)]
    hosts: Vec<String>,
    certificate_id: String,
    spki_sha256: String,
    generation: i64,
    serial_number: String,
    certificate: String,
    sealed_key: String,
}

#[derive(Debug, Deserialize)]
struct Page {
    result: Vec<Delivery>,
    result_info: PageInfo,
}

#[derive(Debug, Deserialize)]
struct PageInfo {
    total_pages: u64,
}

/// How a target ended in a pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A new certificate (or key) was installed and the server reloaded.
    Installed {
        generation: i64,
    },
    /// What is installed is what is delivered.
    Current,
    /// It was installed once and nothing is delivered for it any more (its CSR was deleted,
    /// its certificate expired or no longer fits the recipient): its files are left as
    /// they are.
    Gone,
    Failed(String),
}

/// What a pass did.
#[derive(Debug, Default)]
pub struct Summary {
    pub installed: usize,
    pub current: usize,
    pub failed: usize,
    pub gone: usize,
}

impl Summary {
    /// Whether everything is current (the exit code is 0 then).
    pub fn all_current(&self) -> bool {
        self.failed == 0 && self.gone == 0
    }

    pub fn line(&self) -> String {
        format!(
            "agent: {} targets: {} installed, {} current, {} failed, {} gone",
            self.installed + self.current + self.failed + self.gone,
            self.installed,
            self.current,
            self.failed,
            self.gone
        )
    }
}

/// The agent's connection to csrd and its identity, set up once.
pub struct Agent {
    config: AgentConfig,
    api: Api,
    identity: age::x25519::Identity,
    /// The configured issuers' certificates (DER), when a chain must end at one of them.
    issuers: Option<Vec<Vec<u8>>>,
}

/// Pages of deliveries read for one target, at most.
const MAX_PAGES: u64 = 20;
/// What one page of deliveries may be.
const PAGE_LIMIT: usize = 16 * 1024 * 1024;

impl Agent {
    pub fn new(config: AgentConfig) -> anyhow::Result<Self> {
        let token = match &config.token {
            TokenSource::Inline(t) => t.clone(),
            TokenSource::File(p) => {
                super::config::refuse_readable_by_others(p, "it holds the agent's token")?;
                std::fs::read_to_string(p)
                    .with_context(|| format!("reading the token file {}", p.display()))?
                    .trim()
                    .to_owned()
            }
        };
        let identity = load_identity(&config.identity)?;
        let url = reqwest::Url::parse(&crate::client::api_base(&config.api))
            .with_context(|| format!("api {:?} is not a URL", config.api))?;
        let host = url.host_str().unwrap_or("").trim_matches(['[', ']']);
        let loopback = host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|a| a.is_loopback());
        if url.scheme() != "https" && !(url.scheme() == "http" && loopback) {
            bail!(
                "api must be https (plain http only to this machine): the token would travel in the clear"
            );
        }
        let mut http = reqwest::Client::builder().timeout(Duration::from_secs(60));
        if let Some(ca) = &config.ca_file {
            let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("{} holds no PEM certificates", ca.display()))?;
            http = http.tls_built_in_root_certs(false);
            for cert in certs {
                http = http.add_root_certificate(cert);
            }
        }
        let collection = match config.owner.kind() {
            crate::domain::OwnerKind::Account => "accounts",
            crate::domain::OwnerKind::Zone => "zones",
        };
        let owner_path = format!("{collection}/{}", config.owner.id());
        let api = Api::with_client(
            http.build().context("building the HTTP client")?,
            &config.api,
            token,
            owner_path,
        );
        let issuers = match &config.issuers {
            None => None,
            Some(path) => {
                let pem = std::fs::read(path)
                    .with_context(|| format!("reading the issuers {}", path.display()))?;
                let ders: Vec<Vec<u8>> = x509_parser::pem::Pem::iter_from_buffer(&pem)
                    .filter_map(Result::ok)
                    .filter(|p| p.label == "CERTIFICATE")
                    .map(|p| p.contents)
                    .collect();
                if ders.is_empty() {
                    bail!("{} holds no PEM certificates", path.display());
                }
                Some(ders)
            }
        };
        Ok(Self {
            config,
            api,
            identity,
            issuers,
        })
    }

    /// One pass over every target.
    pub async fn pass(&self) -> anyhow::Result<Summary> {
        let mut state = State::load(&self.config.state)?;
        let mut summary = Summary::default();
        for target in &self.config.targets {
            let label = target.label();
            let outcome = match self.sync_target(target, &mut state).await {
                Ok(o) => o,
                Err(e) => Outcome::Failed(format!("{e:#}")),
            };
            match &outcome {
                Outcome::Installed { generation } => {
                    summary.installed += 1;
                    say!("{label}: installed generation {generation}");
                }
                Outcome::Current => {
                    summary.current += 1;
                    say!("{label}: current");
                }
                Outcome::Gone => {
                    summary.gone += 1;
                    say!(
                        "{label}: gone (nothing is delivered for it now; its files are left as they are)"
                    );
                }
                Outcome::Failed(why) => {
                    summary.failed += 1;
                    say!("{label}: failed: {why}");
                }
            }
            state.save(&self.config.state)?;
        }
        say!("{}", summary.line());
        Ok(summary)
    }

    async fn sync_target(&self, target: &Target, state: &mut State) -> anyhow::Result<Outcome> {
        let label = target.label();
        files::check_target(&target.key)?;
        files::check_target(&target.fullchain)?;
        let Some(delivery) = self.fetch(target).await? else {
            return if state.targets.contains_key(&label) {
                Ok(Outcome::Gone)
            } else {
                bail!(
                    "nothing is delivered for it (is the CSR created with key_delivery \"sealed\", with a current certificate the recipient's hosts cover?)"
                )
            };
        };
        let installed = state.targets.get(&label);
        if let Some(i) = installed
            && delivery.generation < i.generation
        {
            bail!(
                "the delivery's generation {} is lower than the installed {}: refused (an old release, or a certificate rolled back)",
                delivery.generation,
                i.generation
            );
        }
        let (key_pem, chain) = self.verified_key(target, &delivery)?;
        // The chain as csrd re-encoded it from the certificates alone: nothing else the server
        // sent (text between the PEM blocks) reaches the file.
        let chain = chain.as_bytes();
        let previous_key = files::read(&target.key)?;
        let previous_chain = files::read(&target.fullchain)?;
        let on_disk = previous_key.as_deref().map(|k| &k[..]) == Some(&key_pem[..])
            && previous_chain.as_deref().map(|c| &c[..]) == Some(chain);
        let recorded = installed.is_some_and(|i| {
            i.generation == delivery.generation && i.certificate_id == delivery.certificate_id
        });
        if on_disk && recorded {
            return Ok(Outcome::Current);
        }
        if !on_disk {
            files::write_atomic(&target.key, &key_pem, 0o600)?;
            if let Err(e) = files::write_atomic(&target.fullchain, chain, 0o644) {
                // Never a new key beside the old chain: the key goes back too.
                files::restore(&target.key, previous_key.as_deref().map(|v| &v[..]), 0o600)
                    .context("the chain could not be written, nor the previous key put back")?;
                return Err(e.context("the chain could not be written; the previous key is back"));
            }
        }
        if let Some(check) = &target.check
            && let Err(why) = run(check)
        {
            if !on_disk {
                let restored =
                    files::restore(&target.key, previous_key.as_deref().map(|v| &v[..]), 0o600)
                        .and_then(|()| {
                            files::restore(
                                &target.fullchain,
                                previous_chain.as_deref().map(|v| &v[..]),
                                0o644,
                            )
                        });
                if let Err(e) = restored {
                    bail!(
                        "the check failed ({why}) and the previous files could not be put back: {e:#}"
                    );
                }
            }
            bail!("the check failed, the previous files are back: {why}");
        }
        if let Some(reload) = &target.reload {
            run(reload).map_err(|why| anyhow::anyhow!("the reload failed: {why}"))?;
        }
        state.targets.insert(
            label,
            Installed {
                generation: delivery.generation,
                certificate_id: delivery.certificate_id.clone(),
                custom_csr_id: delivery.custom_csr_id.clone(),
                spki_sha256: delivery.spki_sha256.clone(),
                serial_number: delivery.serial_number.clone(),
                installed_at: Utc::now(),
            },
        );
        Ok(Outcome::Installed {
            generation: delivery.generation,
        })
    }

    /// The target's delivery: its CSR's, or the highest generation of those covering its
    /// host; only those are asked for (nothing else is released to this agent).
    async fn fetch(&self, target: &Target) -> anyhow::Result<Option<Delivery>> {
        let query = match &target.selector {
            Selector::Csr(id) => format!("custom_csr_id={id}"),
            Selector::Host(h) => format!("host={h}"),
        };
        let mut best: Option<Delivery> = None;
        let mut page = 1;
        loop {
            let url = self.api.recipients_url(&format!(
                "/{}/deliveries?{query}&per_page=100&page={page}",
                self.config.recipient
            ));
            let answer = call(
                &self.api,
                &Budgets {
                    retry: Duration::from_secs(30),
                    stall: Duration::from_secs(30),
                },
                Call {
                    what: "reading the recipient's deliveries",
                    method: reqwest::Method::GET,
                    url: &url,
                    idempotency_key: None,
                    json_body: None,
                    limit: PAGE_LIMIT,
                },
            )
            .await?;
            if answer.status != 200 {
                bail!(
                    "the API answered {} to reading the deliveries: {}",
                    answer.status,
                    answer.errors()
                );
            }
            let p: Page = answer.parse("reading the deliveries")?;
            for d in p.result {
                // A host target takes only a delivery whose names all fit it: another CSR's
                // certificate that covers this host and more must not block it.
                let fits = matches!(target.selector, Selector::Csr(_))
                    || (!d.hosts.is_empty()
                        && d.hosts.iter().all(|h| {
                            target
                                .names
                                .iter()
                                .any(|n| crate::domain::san::covers(n, h))
                        }));
                if fits && best.as_ref().is_none_or(|b| d.generation > b.generation) {
                    best = Some(d);
                }
            }
            if page >= p.result_info.total_pages.min(MAX_PAGES) {
                return Ok(best);
            }
            page += 1;
        }
    }

    /// The delivery's key, unsealed and checked against its certificate; the PEM to write.
    /// The delivery's key (PEM) and chain (re-encoded), checked.
    fn verified_key(
        &self,
        target: &Target,
        d: &Delivery,
    ) -> anyhow::Result<(Zeroizing<Vec<u8>>, String)> {
        let pem = crate::crypto::seal::open_armored(&self.identity, &d.sealed_key)
            .context("the sealed key does not open with this agent's identity")?;
        let der = crate::crypto::pkcs8_pem::pkcs8_der_from_pem(&pem)
            .context("the sealed key is not a PKCS#8 PEM private key")?;
        let (spki, key_type) = leaf_key(&d.certificate)?;
        if hex::encode(sha2::Sha256::digest(&spki)) != d.spki_sha256 {
            bail!("the leaf's key is not the delivered spki_sha256: refused");
        }
        crate::crypto::key_matches_certificate(key_type, &der, &d.certificate)
            .map_err(|e| anyhow::anyhow!("the key is not the certificate's ({e}): refused"))?;
        let facts = crate::crypto::chain::parse_chain(&d.certificate, &spki, Utc::now())
            .and_then(|p| p.finish(crate::crypto::chain::Link::verify))
            .map_err(|e| anyhow::anyhow!("the chain does not check out: {e}"))?;
        if facts.hosts.is_empty() {
            bail!("the certificate names no host: refused");
        }
        if let Some(anchors) = &self.issuers {
            let last = facts.chain_pem_last_der().context("the chain is empty")?;
            if !anchors
                .iter()
                .any(|a| crate::crypto::chain::issued_by(&last, a))
            {
                bail!("the chain does not end at one of the configured issuers: refused");
            }
        }
        let outside: Vec<&String> = facts
            .hosts
            .iter()
            .filter(|h| {
                !target
                    .names
                    .iter()
                    .any(|n| crate::domain::san::covers(n, h))
            })
            .collect();
        if !outside.is_empty() {
            bail!(
                "the certificate covers names outside the target's: {}",
                outside
                    .iter()
                    .map(|h| h.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        drop(der);
        Ok((pem, facts.chain_pem))
    }
}

/// The leaf's SubjectPublicKeyInfo and its key type.
fn leaf_key(chain: &str) -> anyhow::Result<(Vec<u8>, KeyType)> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(chain.as_bytes())
        .map_err(|_| anyhow::anyhow!("the certificate is not PEM"))?;
    let cert = pem
        .parse_x509()
        .map_err(|_| anyhow::anyhow!("the leaf does not parse"))?;
    let key_type = crate::crypto::verify::key_type_of(cert.public_key())
        .context("the leaf's key is of a type the agent does not install")?;
    Ok((cert.public_key().raw.to_vec(), key_type))
}

/// The age identity in `path` (its `AGE-SECRET-KEY-1…` line; `#` comments allowed), which
/// only its owner may read.
fn load_identity(path: &Path) -> anyhow::Result<age::x25519::Identity> {
    super::config::refuse_readable_by_others(path, "it holds the agent's identity")?;
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("reading the identity {}", path.display()))?,
    );
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("AGE-SECRET-KEY-1"))
        .with_context(|| format!("{} holds no AGE-SECRET-KEY-1 line", path.display()))?;
    line.parse()
        .map_err(|e| anyhow::anyhow!("{}: not an age identity: {e}", path.display()))
}

/// Runs `argv` directly (never through a shell), with no input; its failure with the last
/// line it wrote.
fn run(argv: &[String]) -> Result<(), String> {
    let out = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{:?} did not start: {e}", argv[0]))?;
    if out.status.success() {
        return Ok(());
    }
    let said = String::from_utf8_lossy(&out.stderr);
    let last = said
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    Err(format!(
        "{argv:?} exited with {}: {}",
        out.status,
        last.trim()
    ))
}

/// A fresh identity written to `path` (0600, never over an existing file); its recipient.
pub fn init_identity(path: &Path) -> anyhow::Result<String> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let (secret, recipient) = crate::crypto::seal::new_identity();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| {
            format!(
                "creating {} (an existing identity is never overwritten)",
                path.display()
            )
        })?;
    let text = Zeroizing::new(format!(
        "# created by csrd agent init: {}\n# recipient: {recipient}\n{}\n",
        Utc::now().to_rfc3339(),
        &*secret
    ));
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    Ok(recipient)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_is_written_once_and_privately() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("csrd-agent-init-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir(&dir).unwrap();
        let path = dir.join("identity");
        let recipient = init_identity(&path).unwrap();
        assert!(recipient.starts_with("age1"));
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let identity = load_identity(&path).unwrap();
        assert_eq!(identity.to_public().to_string(), recipient);
        assert!(init_identity(&path).is_err(), "never overwritten");
    }

    #[test]
    fn commands_run_without_a_shell() {
        assert!(run(&["true".into()]).is_ok());
        let e = run(&["sh".into(), "-c".into(), "echo no >&2; exit 3".into()]).unwrap_err();
        assert!(e.contains("no"), "{e}");
        // A shell's syntax is an argument like any other.
        let e = run(&["false; true".into()]).unwrap_err();
        assert!(e.contains("did not start"), "{e}");
    }
}
