//! Generating, parsing and checking secrets.

use std::fmt;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::crypto::secret::random_array;

const TOKEN_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
pub const TOKEN_LEN: usize = 40;
pub const TOKEN_LOOKUP_LEN: usize = 8;
/// Cloudflare global API keys are 37 lowercase hex characters.
pub const API_KEY_LEN: usize = 37;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CredentialError {
    #[error("malformed API token")]
    MalformedToken,
    #[error("malformed API key")]
    MalformedKey,
}

pub fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Constant-time equality of a presented secret's hash with the stored one.
pub fn hash_matches(secret: &str, stored_hash: &[u8]) -> bool {
    hash_secret(secret).ct_eq(stored_hash).into()
}

fn random_string(len: usize, alphabet: &[u8]) -> Zeroizing<String> {
    // 256 % 62 != 0, so reject bytes past the largest multiple to keep the draw uniform.
    let limit = 256 - (256 % alphabet.len());
    let mut out = Zeroizing::new(String::with_capacity(len));
    while out.len() < len {
        for b in random_array::<64>() {
            if (b as usize) < limit && out.len() < len {
                out.push(alphabet[b as usize % alphabet.len()] as char);
            }
        }
    }
    out
}

/// What a client presented to prove who it is, parsed (not yet checked).
#[derive(Debug)]
pub enum Credentials {
    /// `Authorization: Bearer <token>`.
    Token(ApiToken),
    /// `X-Auth-Email` + `X-Auth-Key`; the email lower-cased.
    Legacy { email: String, key: ApiKey },
}

/// A bearer token as presented by a client.
pub struct ApiToken(Zeroizing<String>);

impl ApiToken {
    pub fn generate() -> Self {
        Self(random_string(TOKEN_LEN, TOKEN_ALPHABET))
    }

    pub fn parse(s: &str) -> Result<Self, CredentialError> {
        if s.len() == TOKEN_LEN && s.bytes().all(|b| TOKEN_ALPHABET.contains(&b)) {
            Ok(Self(Zeroizing::new(s.to_owned())))
        } else {
            Err(CredentialError::MalformedToken)
        }
    }

    /// The public part that finds the token's row.
    pub fn lookup_id(&self) -> &str {
        &self.0[..TOKEN_LOOKUP_LEN]
    }

    pub fn hash(&self) -> [u8; 32] {
        hash_secret(&self.0)
    }

    pub fn matches(&self, stored_hash: &[u8]) -> bool {
        hash_matches(&self.0, stored_hash)
    }

    /// The token itself, for printing once at creation.
    pub fn reveal(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiToken({}…[REDACTED])", self.lookup_id())
    }
}

/// A legacy global API key (`X-Auth-Key`).
pub struct ApiKey(Zeroizing<String>);

impl ApiKey {
    pub fn generate() -> Self {
        Self(random_string(API_KEY_LEN, b"0123456789abcdef"))
    }

    pub fn parse(s: &str) -> Result<Self, CredentialError> {
        if (20..=128).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric()) {
            Ok(Self(Zeroizing::new(s.to_owned())))
        } else {
            Err(CredentialError::MalformedKey)
        }
    }

    pub fn hash(&self) -> [u8; 32] {
        hash_secret(&self.0)
    }

    pub fn matches(&self, stored_hash: &[u8]) -> bool {
        hash_matches(&self.0, stored_hash)
    }

    pub fn reveal(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey([REDACTED])")
    }
}

#[cfg(test)]
#[allow(
    clippy::disallowed_methods,
    reason = "tests reveal throw-away credentials"
)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_parse_and_match_only_their_own_hash() {
        let t = ApiToken::generate();
        assert_eq!(t.reveal().len(), TOKEN_LEN);
        let parsed = ApiToken::parse(t.reveal()).unwrap();
        assert!(parsed.matches(&t.hash()));
        assert!(!ApiToken::generate().matches(&t.hash()));
        assert_ne!(ApiToken::generate().reveal(), t.reveal());
    }

    #[test]
    fn malformed_tokens_are_refused() {
        assert!(ApiToken::parse("short").is_err());
        assert!(ApiToken::parse(&format!("{}!", "a".repeat(39))).is_err());
    }

    #[test]
    fn keys_are_37_hex_and_redacted() {
        let k = ApiKey::generate();
        assert_eq!(k.reveal().len(), 37);
        assert!(k.reveal().bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(format!("{k:?}"), "ApiKey([REDACTED])");
    }
}
