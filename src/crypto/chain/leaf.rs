//! What csrd reads from a leaf and stores, each field checked as the CSR side checks its own:
//! the CA is not a trusted one (any CA is accepted), so nothing it wrote is taken unchecked.

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use super::ChainError;
use crate::domain::san::DnsName;

/// RFC 5280 4.1.2.2 caps serials at 20 octets; some CAs have been sloppy, so a little more
/// is taken.
const MAX_SERIAL_BYTES: usize = 32;
/// More names than a CSR may carry (150), for CAs that add some.
const MAX_HOSTS: usize = 1000;
const MAX_ISSUER_BYTES: usize = 255;

/// The serial, in decimal as Cloudflare shows it. RFC 5280: a positive INTEGER; its DER must
/// be minimal, so each number has one encoding and one rendering (`FF` is -1, `00 FF` is 255).
pub fn serial(leaf: &X509Certificate<'_>) -> Result<String, ChainError> {
    let raw = leaf.raw_serial();
    let malformed = raw.is_empty()
        || raw.len() > MAX_SERIAL_BYTES
        || raw[0] & 0x80 != 0
        || (raw.len() > 1 && raw[0] == 0 && raw[1] & 0x80 == 0)
        || raw.iter().all(|b| *b == 0);
    if malformed {
        return Err(ChainError::BadField(
            "serial number (a positive DER integer of at most 32 bytes)",
        ));
    }
    Ok(leaf.serial.to_string())
}

/// The leaf's DNS names (lower-case, each once), from its subjectAltName, or its common names
/// when it has no subjectAltName at all. A subjectAltName that does not parse, that is there
/// twice, that names anything but DNS names (an IP address, a URI, an email: a TLS client
/// would take the certificate for those too, and csrd's names are DNS names only), or that
/// names none, is refused rather than read around; every name must be a DNS name as a CSR's
/// SANs are (ASCII letters, digits, hyphens and dots, a leading `*.` at most, no spaces, no
/// invisible characters), and a leaf must name at least one.
pub fn hosts(leaf: &X509Certificate<'_>) -> Result<Vec<String>, ChainError> {
    let bad = || ChainError::BadField("subject alternative names");
    let names: Vec<String> = match leaf.subject_alternative_name().map_err(|_| bad())? {
        Some(ext) => {
            let mut dns = Vec::with_capacity(ext.value.general_names.len());
            for name in &ext.value.general_names {
                match name {
                    GeneralName::DNSName(n) => dns.push(n.to_ascii_lowercase()),
                    _ => return Err(bad()),
                }
            }
            dns
        }
        None => {
            let mut cns = Vec::new();
            for cn in leaf.subject().iter_common_name() {
                cns.push(cn.as_str().map_err(|_| bad())?.to_ascii_lowercase());
            }
            cns
        }
    };
    if names.is_empty() || names.len() > MAX_HOSTS || names.iter().any(|n| !is_dns_name(n)) {
        return Err(bad());
    }
    // Each name once, in the leaf's order: a name a leaf repeats is stored (and counted) once.
    let mut seen = std::collections::HashSet::with_capacity(names.len());
    let mut names = names;
    names.retain(|n| seen.insert(n.clone()));
    // The room the repeats took is given back too (a thousand repeats held 24 KB a leaf).
    names.shrink_to_fit();
    Ok(names)
}

fn is_dns_name(name: &str) -> bool {
    // The parser takes a trailing dot; a stored host must not differ from what was checked.
    !name.ends_with('.') && DnsName::parse(name, "").is_ok()
}

/// The issuer's organisation, else its common name (Cloudflare shows e.g. "GlobalSign"):
/// bounded, not empty, printable (no control or invisible formatting characters).
pub fn issuer(leaf: &X509Certificate<'_>) -> Result<String, ChainError> {
    let name = leaf.issuer();
    let issuer = name
        .iter_organization()
        .chain(name.iter_common_name())
        .find_map(|attr| attr.as_str().ok())
        .unwrap_or_default();
    if issuer.trim().is_empty() || !plain_text(issuer, MAX_ISSUER_BYTES) {
        return Err(ChainError::BadField("issuer"));
    }
    Ok(issuer.to_owned())
}

/// Text csrd stores and shows: bounded, and free of the characters a CSR's names may not
/// hold either: control characters (NUL is refused by Postgres; the rest would forge lines in
/// logs and terminals) and invisible ones (U+200B, U+202E, U+2066…: they make one name look
/// like another).
pub fn plain_text(s: &str, max_bytes: usize) -> bool {
    s.len() <= max_bytes && crate::domain::request::forbidden_char(s).is_none()
}

/// Cloudflare's names for signature algorithms ("SHA256WithRSA", "ECDSAWithSHA256").
pub fn signature_name(leaf: &X509Certificate<'_>) -> String {
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
        .filter(|san| {
            !hosts
                .iter()
                .any(|host| crate::domain::san::covers(host, san))
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn invisible_and_control_characters_are_not_plain_text() {
        for bad in [
            "a\u{202E}b",
            "a\u{200B}",
            "\u{2066}x",
            "a\u{0}b",
            "a\nb",
            "\u{FEFF}",
            "\u{3164}",
            "\u{115F}",
            "\u{FFA0}",
            "\u{2800}",
            "a\u{034F}b",
            "a\u{FE0F}",
        ] {
            assert!(!plain_text(bad, 100), "{bad:?}");
        }
        assert!(plain_text("Let's Encrypt", 100));
        assert!(plain_text("Zertifizierungsstelle Ö", 100));
        assert!(!plain_text(&"a".repeat(101), 100));
    }

    #[test]
    fn hosts_must_be_dns_names() {
        for good in ["a.example.com", "*.example.com", "xn--bcher-kva.example"] {
            assert!(is_dns_name(good), "{good}");
        }
        for bad in [
            "",
            "a b.example.com",
            "a\u{200B}.example.com",
            "a.example.com.",
            "*",
            "a..b",
            "1.2.3.4",
        ] {
            assert!(!is_dns_name(bad), "{bad:?}");
        }
    }
}
