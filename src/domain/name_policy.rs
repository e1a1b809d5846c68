//! Optional Cloudflare reserved-name rules (1414, 1415, 1416), selected by `CSRD_NAME_POLICY`.
//!
//! Off by default: a private CA or a test environment legitimately asks for `*.internal` or
//! `example.com`. `cloudflare` applies Cloudflare's public-CA rules on top of the syntax checks.

use super::{DnsName, ErrorCode, FieldError};

const RESERVED_TLDS: [&str; 4] = ["test", "example", "invalid", "localhost"];
const EXAMPLE_DOMAINS: [&str; 3] = ["example.com", "example.net", "example.org"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NamePolicy {
    /// Syntax checks only (1412, 1413).
    #[default]
    Permissive,
    /// Syntax checks plus Cloudflare's reserved-name rules.
    Cloudflare,
}

impl NamePolicy {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "permissive" => Some(Self::Permissive),
            "cloudflare" => Some(Self::Cloudflare),
            _ => None,
        }
    }

    pub fn check(self, name: &DnsName, pointer: &str) -> Result<(), FieldError> {
        if self == Self::Permissive {
            return Ok(());
        }
        let host = name.base().to_ascii_lowercase();
        let tld = host.rsplit('.').next().unwrap_or(&host);
        if RESERVED_TLDS.contains(&tld) {
            return Err(FieldError::new(
                ErrorCode::ReservedTld,
                pointer,
                format!("SAN {name} uses the reserved top-level domain .{tld}"),
            ));
        }
        if EXAMPLE_DOMAINS
            .iter()
            .any(|d| host == *d || host.ends_with(&format!(".{d}")))
        {
            return Err(FieldError::new(
                ErrorCode::ExampleDomain,
                pointer,
                format!("SAN {name} is under a reserved example domain"),
            ));
        }
        if psl::domain(host.as_bytes()).is_none_or(|d| !d.suffix().is_known()) {
            return Err(FieldError::new(
                ErrorCode::NoRegistrableDomain,
                pointer,
                format!("SAN {name} has no registrable domain under the public suffix list"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(policy: NamePolicy, s: &str) -> Option<u32> {
        let name = DnsName::parse(s, "/sans/0").unwrap();
        policy
            .check(&name, "/sans/0")
            .err()
            .map(|e| e.code.as_u32())
    }

    #[test]
    fn permissive_accepts_everything_syntactically_valid() {
        for s in ["example.com", "foo.test", "co.uk", "intranet"] {
            assert_eq!(code(NamePolicy::Permissive, s), None);
        }
    }

    #[test]
    fn cloudflare_policy_applies_reserved_name_rules() {
        let p = NamePolicy::Cloudflare;
        assert_eq!(code(p, "shop.acme-widgets.io"), None);
        assert_eq!(code(p, "*.shop.acme-widgets.co.uk"), None);
        assert_eq!(code(p, "foo.test"), Some(1414));
        assert_eq!(code(p, "localhost"), Some(1414));
        assert_eq!(code(p, "www.example.com"), Some(1416));
        assert_eq!(code(p, "example.org"), Some(1416));
        assert_eq!(code(p, "co.uk"), Some(1415));
        assert_eq!(code(p, "*.co.uk"), Some(1415));
        assert_eq!(code(p, "intranet"), Some(1415));
        assert_eq!(code(p, "foo.notarealtld"), Some(1415));
    }
}
