//! What csrd checks in a certificate chain a CA returned for one of its CSRs, before storing
//! it: PEM certificates only (a pasted private key is refused without echoing it), at most
//! [`MAX_CHAIN`] of them, leaf first and each one issued by the next (by name, and by a
//! signature that verifies with the next one's key), a leaf that is not self-signed and is
//! inside its validity window, and a leaf whose SubjectPublicKeyInfo is the one in the CSR (so
//! the key csrd holds is the certificate's key).
//!
//! The last certificate's own signature is not checked, nor whether it is trusted: that is the
//! TLS client's call, and csrd holds no trust store. A link signed with an algorithm ring
//! cannot verify (ECDSA with SHA-512, P-521, DSA) is taken on its names alone. Pure CPU code.

use chrono::{DateTime, Utc};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509CertificationRequest};

/// More than any real chain (leaf, a few intermediates, perhaps a cross-signed root).
pub const MAX_CHAIN: usize = 10;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("the certificate is empty")]
    Empty,
    #[error("the certificate is not a PEM certificate chain")]
    Unparsable,
    /// A PEM block of private key material. Its bytes are never echoed or logged.
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
    #[error("the leaf certificate is self-signed")]
    SelfSigned,
    #[error("the leaf certificate expired at {0}")]
    Expired(DateTime<Utc>),
    #[error("the leaf certificate is not valid before {0}")]
    NotYetValid(DateTime<Utc>),
    #[error("the certificate's public key is not the custom CSR's key")]
    KeyMismatch,
    /// A leaf field csrd would store is out of bounds (RFC 5280 sizes, no control characters).
    #[error("the leaf certificate's {0} is not acceptable (too long, or control characters)")]
    BadField(&'static str),
}

/// What the stored certificate and its API answer show, read from the leaf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafFacts {
    /// The chain as uploaded, normalised to PEM blocks joined by newlines.
    pub chain_pem: String,
    pub hosts: Vec<String>,
    pub issuer: String,
    pub signature: String,
    /// Decimal, as Cloudflare shows serial numbers.
    pub serial_number: String,
    pub not_before: DateTime<Utc>,
    pub expires_on: DateTime<Utc>,
}

/// Checks `pem` (leaf first) against the CSR `csr_pem` at `now`.
pub fn inspect_chain(
    pem: &str,
    csr_pem: &str,
    now: DateTime<Utc>,
) -> Result<LeafFacts, ChainError> {
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
    let leaf = &certs[0];
    if leaf.subject().as_raw() == leaf.issuer().as_raw() {
        return Err(ChainError::SelfSigned);
    }
    for (i, pair) in certs.windows(2).enumerate() {
        if signed_by(&pair[0], Some(pair[1].public_key())) == Signed::No {
            return Err(ChainError::BadSignature(i + 1));
        }
    }
    // A lone leaf under another name may still be signed by its own key.
    if certs.len() == 1 && signed_by(leaf, None) == Signed::Yes {
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
    if leaf.public_key().raw != csr_public_key(csr_pem)?.as_slice() {
        return Err(ChainError::KeyMismatch);
    }
    // The leaf's CA is not a trusted one, so every stored field is bounded here.
    if leaf.raw_serial().len() > MAX_SERIAL_BYTES {
        return Err(ChainError::BadField("serial number"));
    }
    let hosts = hosts(leaf);
    if hosts.len() > MAX_HOSTS || hosts.iter().any(|h| !plain_text(h, 253)) {
        return Err(ChainError::BadField("subject alternative names"));
    }
    let issuer = issuer(leaf);
    if !plain_text(&issuer, 255) {
        return Err(ChainError::BadField("issuer"));
    }
    Ok(LeafFacts {
        chain_pem: ders.iter().map(|der| to_pem(der)).collect(),
        hosts,
        issuer,
        signature: signature_name(leaf),
        serial_number: leaf.serial.to_string(),
        not_before,
        expires_on,
    })
}

#[derive(Debug, PartialEq, Eq)]
enum Signed {
    Yes,
    No,
    /// An algorithm ring does not verify: neither proven nor disproven.
    Unknown,
}

/// Whether `cert`'s signature verifies with `key` (its own key when `None`).
fn signed_by(
    cert: &X509Certificate<'_>,
    key: Option<&x509_parser::x509::SubjectPublicKeyInfo<'_>>,
) -> Signed {
    match cert.verify_signature(key) {
        Ok(()) => Signed::Yes,
        Err(x509_parser::error::X509Error::SignatureUnsupportedAlgorithm) => Signed::Unknown,
        Err(_) => Signed::No,
    }
}

/// RFC 5280 caps serials at 20 octets; some CAs are sloppy, so a little more is taken.
const MAX_SERIAL_BYTES: usize = 32;
/// More names than a CSR may carry (150), for CAs that add some.
const MAX_HOSTS: usize = 1000;

/// Text csrd stores and shows: bounded, and free of control characters (NUL is refused by
/// Postgres; the rest would forge lines in logs and terminals).
pub fn plain_text(s: &str, max_bytes: usize) -> bool {
    s.len() <= max_bytes && !s.chars().any(char::is_control)
}

/// The DER of every PEM block, refusing anything that is not a certificate.
fn pem_certificates(pem: &str) -> Result<Vec<Vec<u8>>, ChainError> {
    if pem.trim().is_empty() {
        return Err(ChainError::Empty);
    }
    // Checked before parsing: a key pasted in must be refused as a key even when the rest of
    // the text would not parse.
    if pem.contains("PRIVATE KEY-----") {
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

/// The leaf's DNS names, or its common name when it has no SAN extension.
fn hosts(leaf: &X509Certificate<'_>) -> Vec<String> {
    let sans: Vec<String> = leaf
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::DNSName(dns) => Some(dns.to_ascii_lowercase()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    if !sans.is_empty() {
        return sans;
    }
    leaf.subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok())
        .map(str::to_ascii_lowercase)
        .collect()
}

/// The issuer's organisation, else its common name (Cloudflare shows e.g. "GlobalSign").
fn issuer(leaf: &X509Certificate<'_>) -> String {
    let name = leaf.issuer();
    name.iter_organization()
        .chain(name.iter_common_name())
        .find_map(|attr| attr.as_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Cloudflare's names for signature algorithms ("SHA256WithRSA", "ECDSAWithSHA256").
fn signature_name(leaf: &X509Certificate<'_>) -> String {
    let oid = leaf.signature_algorithm.algorithm.to_id_string();
    match oid.as_str() {
        "1.2.840.113549.1.1.11" => "SHA256WithRSA",
        "1.2.840.113549.1.1.12" => "SHA384WithRSA",
        "1.2.840.113549.1.1.13" => "SHA512WithRSA",
        "1.2.840.113549.1.1.10" => "SHA256WithRSA-PSS",
        "1.2.840.10045.4.3.2" => "ECDSAWithSHA256",
        "1.2.840.10045.4.3.3" => "ECDSAWithSHA384",
        "1.2.840.10045.4.3.4" => "ECDSAWithSHA512",
        "1.3.101.112" => "Ed25519",
        _ => return oid,
    }
    .to_owned()
}

/// The CSR's names the certificate does not cover (a wildcard covers one label).
pub fn uncovered_names(csr_sans: &[String], hosts: &[String]) -> Vec<String> {
    csr_sans
        .iter()
        .filter(|san| !hosts.iter().any(|host| covers(host, san)))
        .cloned()
        .collect()
}

fn covers(host: &str, name: &str) -> bool {
    let (host, name) = (host.to_ascii_lowercase(), name.to_ascii_lowercase());
    if host == name {
        return true;
    }
    match (host.strip_prefix("*."), name.split_once('.')) {
        (Some(base), Some((label, rest))) => {
            !label.is_empty() && !name.starts_with("*.") && base == rest
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_and_keys_are_refused_without_parsing_further() {
        let now = Utc::now();
        assert_eq!(inspect_chain("  ", "", now), Err(ChainError::Empty));
        assert_eq!(inspect_chain("hello", "", now), Err(ChainError::Unparsable));
        let key = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----\n";
        assert_eq!(inspect_chain(key, "", now), Err(ChainError::PrivateKey));
        let ec = key.replace("PRIVATE KEY", "EC PRIVATE KEY");
        assert_eq!(inspect_chain(&ec, "", now), Err(ChainError::PrivateKey));
        let junk_block = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert_eq!(
            inspect_chain(junk_block, "", now),
            Err(ChainError::Unparsable)
        );
        let long = junk_block.repeat(MAX_CHAIN + 1);
        assert_eq!(inspect_chain(&long, "", now), Err(ChainError::TooLong));
    }

    #[test]
    fn wildcards_cover_one_label() {
        let hosts = vec!["*.example.com".to_owned(), "example.com".to_owned()];
        let sans = [
            "example.com",
            "www.example.com",
            "a.b.example.com",
            "other.net",
        ]
        .map(str::to_owned);
        assert_eq!(
            uncovered_names(&sans, &hosts),
            vec!["a.b.example.com".to_owned(), "other.net".to_owned()]
        );
    }
}
