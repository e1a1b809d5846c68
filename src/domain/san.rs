//! Subject Alternative Names: DNS names only, checked the way Cloudflare documents (1412/1413).
//!
//! Wildcards: `*` is accepted as the whole leftmost label (`*.shop.example.org`), because
//! public CAs issue wildcard certificates and CSR users ask for them. A `*` anywhere else
//! (`foo*.example.org`, `a.*.example.org`) is a special character and rejected with 1412.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use super::{ErrorCode, FieldError};

/// A DNS name is at most 253 characters in its text form (RFC 1035's 255 octets on the wire,
/// less the length octets), after the optional trailing dot is removed.
const MAX_SAN_LEN: usize = 253;
const MAX_LABEL_LEN: usize = 63;

/// A syntactically valid DNS name for a SAN, possibly with a leading `*.` wildcard label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DnsName(String);

/// Deserialising (from a job message) re-checks the syntax: no unchecked name gets signed.
impl TryFrom<String> for DnsName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s, "").map_err(|e| e.message)
    }
}

impl From<DnsName> for String {
    fn from(n: DnsName) -> String {
        n.0
    }
}

impl DnsName {
    /// Validates one SAN; `pointer` names it in the error (`/sans/3`). A fully qualified name's
    /// trailing dot is removed (`example.com.` is `example.com`).
    pub fn parse(s: &str, pointer: &str) -> Result<Self, FieldError> {
        let invalid = |why: &str| {
            FieldError::new(
                ErrorCode::InvalidSan,
                pointer,
                format!("invalid SAN {:?}: {why}", super::validation::echo(s)),
            )
        };
        let s = s.strip_suffix('.').unwrap_or(s);
        if !s.is_ascii() {
            return Err(FieldError::new(
                ErrorCode::NonAsciiSan,
                pointer,
                "SANs must be ASCII; encode internationalised names as punycode (xn--)",
            ));
        }
        if s.is_empty() {
            return Err(invalid("empty"));
        }
        if s.len() > MAX_SAN_LEN {
            return Err(invalid("must be at most 253 characters"));
        }
        if s.parse::<Ipv4Addr>().is_ok() || s.parse::<Ipv6Addr>().is_ok() || s.contains(':') {
            return Err(invalid("IP addresses are not allowed"));
        }
        let host = s.strip_prefix("*.").unwrap_or(s);
        if let Some(c) = host
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '.'))
        {
            return Err(invalid(&format!("character {c:?} is not allowed")));
        }
        for label in host.split('.') {
            if label.is_empty() {
                return Err(invalid("empty label"));
            }
            if label.len() > MAX_LABEL_LEN {
                return Err(invalid("a label is longer than 63 characters"));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(invalid("a label starts or ends with '-'"));
            }
        }
        let tld = host.rsplit('.').next().unwrap_or(host);
        if looks_numeric(tld) {
            return Err(invalid(
                "the top-level label is numeric, so the name reads as an IP address (IP addresses are not allowed)",
            ));
        }
        if has_invalid_idna_label(host) {
            return Err(FieldError::new(
                ErrorCode::NonAsciiSan,
                pointer,
                format!(
                    "invalid SAN {:?}: an xn-- label is not valid punycode for an internationalised name",
                    super::validation::echo(s)
                ),
            ));
        }
        Ok(Self(s.to_owned()))
    }

    /// A name read back from storage, where only validated names are ever written.
    pub fn from_stored(s: String) -> Self {
        Self(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name without a leading wildcard label.
    pub fn base(&self) -> &str {
        self.0.strip_prefix("*.").unwrap_or(&self.0)
    }
}

/// Whether a certificate (or a key recipient) for `host` covers the name `name`: the same name
/// (case aside), or `host` is a wildcard and `name` is one label more, not itself a wildcard
/// (`*.example.com` covers `www.example.com`, not `a.b.example.com` nor `example.com`).
pub fn covers(host: &str, name: &str) -> bool {
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

/// Whether a final label makes the whole name parse as an IPv4 address in the WHATWG URL
/// host parser (and in `inet_aton`), which browsers and many tools use: all decimal digits
/// (`1.2.3.4`, `example.123`), or `0x` followed by hex digits (`0x7f.0x1` is 127.0.0.1).
fn looks_numeric(label: &str) -> bool {
    let hex = label
        .strip_prefix("0x")
        .or_else(|| label.strip_prefix("0X"));
    match hex {
        Some(digits) => digits.bytes().all(|b| b.is_ascii_hexdigit()),
        None => label.bytes().all(|b| b.is_ascii_digit()),
    }
}

/// An `xn--` label must decode (punycode) to a valid internationalised label under UTS #46;
/// `xn--zz` does not, and no CA would issue for it. Names without `xn--` skip the check.
fn has_invalid_idna_label(host: &str) -> bool {
    let has_ace = host
        .split('.')
        .any(|label| label.len() >= 4 && label[..4].eq_ignore_ascii_case("xn--"));
    has_ace && idna::domain_to_unicode(host).1.is_err()
}

impl fmt::Display for DnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(s: &str) -> Option<u32> {
        DnsName::parse(s, "/sans/0").err().map(|e| e.code.as_u32())
    }

    #[test]
    fn accepts_ordinary_names_and_a_leftmost_wildcard() {
        for ok in [
            "example.com",
            "www.example.com",
            "xn--bcher-kva.example",
            "a-b.c-d.io",
            "*.shop.acme-widgets.io",
            "intranet",
            "1.example.com",
        ] {
            assert_eq!(code(ok), None, "{ok}");
        }
    }

    #[test]
    fn rejects_ip_addresses_and_special_characters_with_1412() {
        for bad in [
            "192.0.2.1",
            "::1",
            "2001:db8::1",
            "1.2.3.4.5",
            "exa mple.com",
            "exa_mple.com",
            "example.com/",
            "a@b.com",
            "foo*.example.com",
            "a.*.example.com",
            "*",
            "*.",
            "-a.example.com",
            "a-.example.com",
            "a..example.com",
            ".example.com",
            "example.com..",
            ".",
            "",
        ] {
            assert_eq!(code(bad), Some(1412), "{bad:?}");
        }
    }

    #[test]
    fn rejects_long_names_and_labels_with_1412() {
        let label63 = "a".repeat(63);
        assert_eq!(code(&format!("{label63}.com")), None);
        assert_eq!(code(&format!("a{label63}.com")), Some(1412));
        let long = format!("{label63}.{label63}.{label63}.{}.com", "a".repeat(57));
        assert_eq!(long.len(), 253);
        assert_eq!(code(&long), None);
        assert_eq!(
            code(&format!("{long}.")),
            None,
            "a trailing dot is not counted"
        );
        assert_eq!(code(&format!("a{long}")), Some(1412), "254 characters");
    }

    #[test]
    fn a_trailing_dot_is_removed_and_long_names_are_not_echoed_whole() {
        assert_eq!(
            DnsName::parse("www.example.com.", "").unwrap().as_str(),
            "www.example.com"
        );
        let e = DnsName::parse(&format!("{}!", "a".repeat(5000)), "").unwrap_err();
        assert!(e.message.len() < 200, "{}", e.message);
    }

    #[test]
    fn rejects_non_ascii_and_invalid_punycode_with_1413() {
        assert_eq!(code("bücher.example"), Some(1413));
        for bad in [
            "xn--zz.com",
            "www.xn--zz.example",
            "xn--a.example",
            "XN--ZZ.com",
        ] {
            assert_eq!(code(bad), Some(1413), "{bad}");
        }
        for ok in [
            "xn--bcher-kva.example",
            "*.xn--bcher-kva.example",
            "xn--80ak6aa92e.com",
        ] {
            assert_eq!(code(ok), None, "{ok}");
        }
    }

    #[test]
    fn rejects_names_that_read_as_ip_addresses_with_1412() {
        for bad in ["0x7f.0x1", "a.0x1", "example.0X7F", "host.0x", "a.0123"] {
            assert_eq!(code(bad), Some(1412), "{bad}");
        }
        for ok in ["0x7f.example", "a.0xg", "example.x0", "0x.com"] {
            assert_eq!(code(ok), None, "{ok}");
        }
    }
}
