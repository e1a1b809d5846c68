//! Identifiers: Cloudflare account and zone ids (32 lowercase hex), CSR ids (UUID), owners.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

fn is_cloudflare_id(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

macro_rules! cloudflare_id {
    ($name:ident, $what:literal) => {
        #[doc = concat!("A Cloudflare ", $what, " id: 32 lowercase hex characters.")]
        #[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn parse(s: &str) -> Option<Self> {
                is_cloudflare_id(s).then(|| Self(s.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                Self::parse(&s).ok_or_else(|| format!("malformed {} id", $what))
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

cloudflare_id!(AccountId, "account");
cloudflare_id!(ZoneId, "zone");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OwnerKind {
    Account,
    Zone,
}

impl OwnerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OwnerKind::Account => "account",
            OwnerKind::Zone => "zone",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "account" => Some(OwnerKind::Account),
            "zone" => Some(OwnerKind::Zone),
            _ => None,
        }
    }
}

/// The tenant a CSR belongs to: exactly one account or one zone.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "lowercase")]
pub enum Owner {
    Account(AccountId),
    Zone(ZoneId),
}

impl Owner {
    pub fn parse(kind: OwnerKind, id: &str) -> Option<Self> {
        match kind {
            OwnerKind::Account => AccountId::parse(id).map(Owner::Account),
            OwnerKind::Zone => ZoneId::parse(id).map(Owner::Zone),
        }
    }

    pub fn kind(&self) -> OwnerKind {
        match self {
            Owner::Account(_) => OwnerKind::Account,
            Owner::Zone(_) => OwnerKind::Zone,
        }
    }

    pub fn id(&self) -> &str {
        match self {
            Owner::Account(a) => a.as_str(),
            Owner::Zone(z) => z.as_str(),
        }
    }
}

/// A version-7 UUID: milliseconds since the epoch, then 74 random bits. Ids made one after
/// another sit side by side in a primary key's index instead of landing on a random page each
/// (a random page per insert means more pages dirtied and written to the WAL). The time it
/// reveals is the row's `created_at`, public anyway; the random bits keep ids unguessable.
pub fn time_ordered_uuid() -> Uuid {
    let millis = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or_default();
    let random = *Uuid::new_v4().as_bytes();
    // Bytes 6 and 8 of a v4 UUID hold its version and variant bits: skip them.
    let mut bits = [0u8; 10];
    bits[..6].copy_from_slice(&random[..6]);
    bits[6..].copy_from_slice(&random[10..14]);
    uuid::Builder::from_unix_timestamp_millis(millis, &bits).into_uuid()
}

/// A custom CSR id. The ingress assigns it before publishing, so every retry of one job
/// carries the same id and the worker's insert can be idempotent on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CsrId(pub Uuid);

impl CsrId {
    /// A fresh id, time-ordered ([`time_ordered_uuid`]).
    pub fn new() -> Self {
        Self(time_ordered_uuid())
    }

    /// The id of item `index` of a batch: derived (SHA-256, as a version-8 UUID), so that a
    /// batch published again names the same CSRs without storing an id per item. A batch with
    /// a time-ordered (version-7) id gives its items its 48-bit time prefix, so one batch's rows
    /// land side by side in the primary key's index; a batch from before that (version 4)
    /// keeps the ids it always derived.
    pub fn for_batch_item(batch: Uuid, index: u32) -> Self {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"csrd batch item\0");
        h.update(batch.as_bytes());
        h.update(index.to_be_bytes());
        let digest = h.finalize();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        if batch.get_version_num() == 7 {
            bytes[..6].copy_from_slice(&batch.as_bytes()[..6]);
        }
        Self(uuid::Builder::from_custom_bytes(bytes).into_uuid())
    }

    pub fn parse(s: &str) -> Option<Self> {
        // Only the hyphenated form: it is what we hand out, and ids are at most 36 chars.
        if s.len() != 36 {
            return None;
        }
        Uuid::parse_str(s).ok().map(Self)
    }
}

impl Default for CsrId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for CsrId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn batch_item_ids_are_stable_distinct_and_valid_uuids() {
        let batch = uuid::Uuid::new_v4();
        let a = CsrId::for_batch_item(batch, 0);
        assert_eq!(a, CsrId::for_batch_item(batch, 0));
        assert_ne!(a, CsrId::for_batch_item(batch, 1));
        assert_ne!(a, CsrId::for_batch_item(uuid::Uuid::new_v4(), 0));
        assert_eq!(a.0.get_version_num(), 8);
        let fresh = CsrId::new();
        assert_eq!(fresh.0.get_version_num(), 7);
        assert_ne!(fresh, CsrId::new());
        // A time-ordered batch's items share its time prefix, and stay derived.
        let ordered = time_ordered_uuid();
        let item = CsrId::for_batch_item(ordered, 7);
        assert_eq!(item, CsrId::for_batch_item(ordered, 7));
        assert_eq!(item.0.as_bytes()[..6], ordered.as_bytes()[..6]);
        assert_eq!(item.0.get_version_num(), 8);
        assert_ne!(item, CsrId::for_batch_item(ordered, 8));
        // A batch from before keeps its items' ids (a chunk published again after an upgrade
        // must name the same CSRs).
        let legacy = uuid::Uuid::parse_str("6f1c2a44-8f8e-4a47-9d0c-3b1f5a6e7d21").unwrap();
        assert_eq!(
            CsrId::for_batch_item(legacy, 0).to_string(),
            "28f6e909-bea3-8c2a-a9d5-40ad15d7d107"
        );
        assert_eq!(CsrId::parse(&a.to_string()), Some(a));
    }

    use super::*;

    #[test]
    fn account_id_must_be_32_lowercase_hex() {
        assert!(AccountId::parse("023e105f4ecef8ad9ca31a8372d0c353").is_some());
        assert!(AccountId::parse("023E105F4ECEF8AD9CA31A8372D0C353").is_none());
        assert!(AccountId::parse("023e105f4ecef8ad9ca31a8372d0c35").is_none());
        assert!(AccountId::parse("023e105f4ecef8ad9ca31a8372d0c35g").is_none());
        assert!(AccountId::parse("").is_none());
    }

    #[test]
    fn csr_id_accepts_only_hyphenated_uuids() {
        assert!(CsrId::parse("7b163417-1d2b-4c84-a38a-2fb7a0cd7752").is_some());
        assert!(CsrId::parse("7b1634171d2b4c84a38a2fb7a0cd7752").is_none());
        assert!(CsrId::parse("not-a-uuid").is_none());
    }
}
