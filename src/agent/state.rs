//! What the agent installed, per target, kept between passes: a delivery of a lower
//! generation than the one installed is refused (an old release replayed, or a certificate
//! the tenant rolled back), and a target installed once whose delivery stops is reported gone.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    /// By target label (`csr <id>` or `host <name>`).
    #[serde(default)]
    pub targets: BTreeMap<String, Installed>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Installed {
    pub generation: i64,
    pub certificate_id: String,
    pub custom_csr_id: String,
    pub spki_sha256: String,
    pub serial_number: String,
    pub installed_at: chrono::DateTime<chrono::Utc>,
}

impl State {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("the agent state {} is not readable", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let bytes = serde_json::to_vec_pretty(self)?;
        super::files::write_atomic(path, &bytes, 0o600)
    }
}
