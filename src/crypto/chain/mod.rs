//! What csrd checks in a certificate chain a CA returned for one of its CSRs, before storing
//! it, in two steps so that what costs little is done first:
//!
//! 1. [`parse_chain`] (cheap, microseconds): PEM certificates only (private key material in
//!    any recognised format is refused without echoing it), at most [`MAX_CHAIN`] of them,
//!    leaf first and each one issued by the next by name, a leaf that is not self-named, inside
//!    its validity window, whose SubjectPublicKeyInfo is the CSR's (so the key csrd holds is
//!    the certificate's key), with every stored field bounded and well formed; and for each
//!    link the signature algorithm, which must be one csrd verifies and fit the issuer's key.
//! 2. The links' signatures ([`Link::verify`], up to milliseconds each), which callers run
//!    under a budget and in fair-share slots, and a lone leaf's check that it is not signed by
//!    its own key.
//!
//! The last certificate's own signature is not checked, nor whether it is trusted: that is
//! the TLS client's call, and csrd holds no trust store. Pure CPU code.

mod leaf;
mod links;

use chrono::{DateTime, Utc};
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::{FromDer, X509CertificationRequest};

pub use leaf::uncovered_names;
pub use links::{Link, LinkKey};

/// More than any real chain (leaf, a few intermediates, perhaps a cross-signed root).
pub const MAX_CHAIN: usize = 10;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("the certificate is empty")]
    Empty,
    #[error("the certificate is not a PEM certificate chain")]
    Unparsable,
    /// Private key material. Its bytes are never echoed or logged.
    #[error("the certificate field holds private key material; csrd never accepts key material")]
    PrivateKey,
    #[error("the chain holds more than {MAX_CHAIN} certificates")]
    TooLong,
    #[error("the chain is out of order: certificate {0} did not issue the one before it")]
    OutOfOrder(usize),
    #[error(
        "the chain is broken: certificate {0}'s key does not verify the signature of the one before it"
    )]
    BadSignature(usize),
    #[error(
        "certificate {0}'s signature cannot be verified: csrd does not verify {1} (it verifies RSA PKCS#1 v1.5 and PSS with SHA-256/384/512, ECDSA P-256 and P-384 with SHA-256/384, and Ed25519)"
    )]
    Unverifiable(usize, String),
    #[error("the leaf certificate is self-signed")]
    SelfSigned,
    #[error("the leaf certificate expired at {0}")]
    Expired(DateTime<Utc>),
    #[error("the leaf certificate is not valid before {0}")]
    NotYetValid(DateTime<Utc>),
    #[error("the certificate's public key is not the custom CSR's key")]
    KeyMismatch,
    /// A leaf field csrd would store is out of bounds or malformed.
    #[error("the leaf certificate's {0} is not acceptable")]
    BadField(&'static str),
}

/// What the stored certificate and its API answer show, read from the leaf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafFacts {
    /// The chain as uploaded, normalised to PEM blocks joined by newlines.
    pub chain_pem: String,
    /// SHA-256 of the leaf's DER: the certificate's identity (two uploads of the same bytes
    /// are one certificate).
    pub leaf_sha256: [u8; 32],
    pub hosts: Vec<String>,
    pub issuer: String,
    pub signature: String,
    /// Decimal, as Cloudflare shows serial numbers.
    pub serial_number: String,
    pub not_before: DateTime<Utc>,
    pub expires_on: DateTime<Utc>,
}

/// A chain that passed every cheap check; its signatures are still to be verified.
#[derive(Debug)]
pub struct ParsedChain {
    pub facts: LeafFacts,
    /// Certificate *i* signed by certificate *i + 1*, for each link (index *i*).
    pub links: Vec<(usize, Link)>,
    /// A lone leaf's signature under its own key: it must *not* verify.
    pub self_check: Option<Link>,
}

/// A parsed chain whose links have been handed over to be checked (see
/// [`ParsedChain::split`]): what remains is which links it needs, by key.
#[derive(Debug)]
pub struct PendingChain {
    facts: LeafFacts,
    links: Vec<(usize, LinkKey)>,
    self_check: Option<LinkKey>,
}

/// What one host costs in memory beyond its text: the `String` and its allocation.
const HOST_OVERHEAD: usize = 48;

impl ParsedChain {
    /// About what this chain holds in memory: its PEM, its hosts (each a string of its own:
    /// a leaf of a thousand one-letter names holds many times its bytes), its links.
    pub fn heap_bytes(&self) -> usize {
        let f = &self.facts;
        256 + f.chain_pem.len()
            + f.issuer.len()
            + f.hosts
                .iter()
                .map(|h| h.len() + HOST_OVERHEAD)
                .sum::<usize>()
            + self
                .links
                .iter()
                .map(|(_, l)| l)
                .chain(&self.self_check)
                .map(Link::heap_bytes)
                .sum::<usize>()
    }

    /// Estimated CPU time of every signature check, in microseconds.
    pub fn cost_micros(&self) -> u64 {
        self.links
            .iter()
            .map(|(_, l)| l)
            .chain(&self.self_check)
            .map(|l| u64::from(l.cost_micros))
            .sum()
    }

    /// The chain's links to check (to be pooled with other chains' and checked once each),
    /// and what it needs to be finished with their outcomes.
    pub fn split(self) -> (PendingChain, Vec<Link>) {
        let mut owned = Vec::with_capacity(self.links.len() + 1);
        let mut keys = Vec::with_capacity(self.links.len());
        for (i, link) in self.links {
            keys.push((i, link.key));
            owned.push(link);
        }
        let self_check = self.self_check.map(|link| {
            let key = link.key;
            owned.push(link);
            key
        });
        (
            PendingChain {
                facts: self.facts,
                links: keys,
                self_check,
            },
            owned,
        )
    }

    /// Checks every signature now and returns the facts.
    pub fn finish(self, verify: impl Fn(&Link) -> bool) -> Result<LeafFacts, ChainError> {
        let (pending, links) = self.split();
        let outcomes: std::collections::HashMap<LinkKey, bool> =
            links.iter().map(|l| (l.key, verify(l))).collect();
        pending.finish(|key| outcomes.get(key).copied().unwrap_or(false))
    }
}

impl PendingChain {
    /// The facts, once `verified` says how each of the chain's links came out.
    pub fn finish(self, verified: impl Fn(&LinkKey) -> bool) -> Result<LeafFacts, ChainError> {
        for (i, key) in &self.links {
            if !verified(key) {
                return Err(ChainError::BadSignature(i + 1));
            }
        }
        if self.self_check.as_ref().is_some_and(&verified) {
            return Err(ChainError::SelfSigned);
        }
        Ok(self.facts)
    }
}

/// Checks `pem` (leaf first) against the CSR's SubjectPublicKeyInfo `csr_spki` at `now`,
/// doing only what costs little (no signature is verified).
pub fn parse_chain(
    pem: &str,
    csr_spki: &[u8],
    now: DateTime<Utc>,
) -> Result<ParsedChain, ChainError> {
    let ders = pem_certificates(pem)?;
    let mut certs = Vec::with_capacity(ders.len());
    for der in &ders {
        match X509Certificate::from_der(der) {
            Ok(([], cert)) => certs.push(cert),
            _ => return Err(ChainError::Unparsable),
        }
    }
    for (i, pair) in certs.windows(2).enumerate() {
        if pair[0].issuer().as_raw() != pair[1].subject().as_raw() {
            return Err(ChainError::OutOfOrder(i + 1));
        }
    }
    for (i, cert) in certs.iter().enumerate() {
        links::same_algorithm_inside(cert).map_err(|u| ChainError::Unverifiable(i, u.0))?;
    }
    let leaf = &certs[0];
    if leaf.subject().as_raw() == leaf.issuer().as_raw() {
        return Err(ChainError::SelfSigned);
    }
    let not_before = time(leaf.validity().not_before.timestamp())?;
    let expires_on = time(leaf.validity().not_after.timestamp())?;
    if expires_on <= now {
        return Err(ChainError::Expired(expires_on));
    }
    if not_before > now {
        return Err(ChainError::NotYetValid(not_before));
    }
    if leaf.public_key().raw != csr_spki {
        return Err(ChainError::KeyMismatch);
    }
    let serial_number = leaf::serial(leaf)?;
    let hosts = leaf::hosts(leaf)?;
    let issuer = leaf::issuer(leaf)?;
    links::known_algorithm(&leaf.signature_algorithm)
        .map_err(|u| ChainError::Unverifiable(0, u.0))?;
    let digests: Vec<[u8; 32]> = ders.iter().map(|d| links::digest(d)).collect();
    let mut chain_links = Vec::with_capacity(certs.len().saturating_sub(1));
    for (i, pair) in certs.windows(2).enumerate() {
        let link = links::link(&pair[0], digests[i], pair[1].public_key(), digests[i + 1])
            .map_err(|u| ChainError::Unverifiable(i, u.0))?;
        chain_links.push((i, link));
    }
    // A lone leaf under another name may still be signed by its own key. When its algorithm
    // does not fit its own key, it cannot be.
    let self_check = (certs.len() == 1)
        .then(|| links::link(leaf, digests[0], leaf.public_key(), digests[0]).ok())
        .flatten();
    Ok(ParsedChain {
        facts: LeafFacts {
            chain_pem: ders.iter().map(|der| to_pem(der)).collect(),
            leaf_sha256: digests[0],
            hosts,
            issuer,
            signature: leaf::signature_name(leaf),
            serial_number,
            not_before,
            expires_on,
        },
        links: chain_links,
        self_check,
    })
}

/// The DER of every PEM block, refusing anything that is not a certificate.
fn pem_certificates(pem: &str) -> Result<Vec<Vec<u8>>, ChainError> {
    if pem.trim().is_empty() {
        return Err(ChainError::Empty);
    }
    // Checked before parsing: a key pasted in must be refused as a key even when the rest of
    // the text would not parse.
    if crate::domain::key_material::holds_private_key(pem.as_bytes()) {
        return Err(ChainError::PrivateKey);
    }
    let mut ders = Vec::new();
    for block in x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes()) {
        let block = block.map_err(|_| ChainError::Unparsable)?;
        if block.label != "CERTIFICATE" {
            return Err(ChainError::Unparsable);
        }
        if ders.len() == MAX_CHAIN {
            return Err(ChainError::TooLong);
        }
        ders.push(block.contents);
    }
    if ders.is_empty() {
        return Err(ChainError::Unparsable);
    }
    Ok(ders)
}

impl LeafFacts {
    /// The DER of the chain's last certificate (the one closest to its root).
    pub fn chain_pem_last_der(&self) -> Option<Vec<u8>> {
        x509_parser::pem::Pem::iter_from_buffer(self.chain_pem.as_bytes())
            .filter_map(Result::ok)
            .last()
            .map(|p| p.contents)
    }
}

/// Whether `cert` (DER) is `anchor` (DER), or was issued by it: named by it and signed with
/// its key (a trust anchor an agent is configured with).
pub fn issued_by(cert: &[u8], anchor: &[u8]) -> bool {
    if cert == anchor {
        return true;
    }
    let (Ok(([], cert)), Ok(([], anchor))) = (
        X509Certificate::from_der(cert),
        X509Certificate::from_der(anchor),
    ) else {
        return false;
    };
    cert.issuer().as_raw() == anchor.subject().as_raw()
        && links::link(&cert, [0; 32], anchor.public_key(), [0; 32]).is_ok_and(|l| l.verify())
}

/// The SubjectPublicKeyInfo (DER) of a CSR csrd made.
pub fn csr_public_key(csr_pem: &str) -> Result<Vec<u8>, ChainError> {
    // A stored CSR that does not parse is csrd's bug, not the client's; the caller only
    // ever passes CSRs csrd built, so this is reported as a mismatch rather than a 500.
    let (_, pem) = x509_parser::pem::parse_x509_pem(csr_pem.as_bytes())
        .map_err(|_| ChainError::KeyMismatch)?;
    let (_, csr) =
        X509CertificationRequest::from_der(&pem.contents).map_err(|_| ChainError::KeyMismatch)?;
    Ok(csr.certification_request_info.subject_pki.raw.to_vec())
}

fn time(unix: i64) -> Result<DateTime<Utc>, ChainError> {
    DateTime::from_timestamp(unix, 0).ok_or(ChainError::Unparsable)
}

fn to_pem(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 64);
    out.push_str("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

#[cfg(test)]
mod tests;
