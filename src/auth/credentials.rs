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

const MAX_EMAIL_LEN: usize = 254;

/// The shape of a legacy user's email: printable ASCII without spaces, one `@`, a dot in the
/// domain. Checked where an email comes in, from a header or from an operator's command line.
pub fn valid_email(email: &str) -> bool {
    email.len() <= MAX_EMAIL_LEN
        && email.is_ascii()
        && !email.chars().any(|c| c.is_ascii_control() || c == ' ')
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.contains('@')
        })
}

/// Characters at most in an operator-chosen label (a token's name, an operator's name).
pub const MAX_LABEL_CHARS: usize = 100;

/// An operator-chosen label: 1 to [`MAX_LABEL_CHARS`] characters, none of them a control
/// character (a newline or an escape sequence in a name forges or hides lines in whatever
/// prints it: `token list`, `audit`) nor an invisible or bidirectional formatting one.
pub fn valid_label(label: &str) -> Result<(), String> {
    let chars = label.chars().count();
    if chars == 0 || chars > MAX_LABEL_CHARS {
        return Err(format!("must be 1 to {MAX_LABEL_CHARS} characters"));
    }
    match label.chars().find(|&c| c.is_control() || is_format_char(c)) {
        Some(c) => Err(format!(
            "must not contain control or formatting characters (U+{:04X})",
            c as u32
        )),
        None => Ok(()),
    }
}

/// Zero-width, bidirectional and other invisible formatting characters.
pub fn is_format_char(c: char) -> bool {
    matches!(c as u32,
        0x00AD | 0x061C | 0x180E | 0x200B..=0x200F | 0x2028..=0x202E | 0x2060..=0x2064
        | 0x2066..=0x206F | 0xFEFF | 0xFFF9..=0xFFFB)
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

/// The secret text of a token or key: wiped from memory when dropped, stored and compared
/// only as its SHA-256. Reached through the token's or key's `Deref`; each type reveals its own
/// text (`reveal`) under its own clippy rule.
pub struct SecretText(Zeroizing<String>);

impl SecretText {
    pub fn hash(&self) -> [u8; 32] {
        hash_secret(&self.0)
    }

    /// Whether this secret hashes to `stored_hash` (in constant time).
    pub fn matches(&self, stored_hash: &[u8]) -> bool {
        hash_matches(&self.0, stored_hash)
    }
}

/// A bearer token as presented by a client.
pub struct ApiToken(SecretText);

impl std::ops::Deref for ApiToken {
    type Target = SecretText;

    fn deref(&self) -> &SecretText {
        &self.0
    }
}

impl ApiToken {
    pub fn generate() -> Self {
        Self(SecretText(random_string(TOKEN_LEN, TOKEN_ALPHABET)))
    }

    pub fn parse(s: &str) -> Result<Self, CredentialError> {
        if s.len() == TOKEN_LEN && s.bytes().all(|b| TOKEN_ALPHABET.contains(&b)) {
            Ok(Self(SecretText(Zeroizing::new(s.to_owned()))))
        } else {
            Err(CredentialError::MalformedToken)
        }
    }

    /// The public part that finds the token's row.
    pub fn lookup_id(&self) -> &str {
        &self.0.0[..TOKEN_LOOKUP_LEN]
    }

    /// The token itself, for printing once at creation.
    pub fn reveal(&self) -> &str {
        &self.0.0
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiToken({}…[REDACTED])", self.lookup_id())
    }
}

/// A legacy global API key (`X-Auth-Key`).
pub struct ApiKey(SecretText);

impl std::ops::Deref for ApiKey {
    type Target = SecretText;

    fn deref(&self) -> &SecretText {
        &self.0
    }
}

impl ApiKey {
    pub fn generate() -> Self {
        Self(SecretText(random_string(API_KEY_LEN, b"0123456789abcdef")))
    }

    pub fn parse(s: &str) -> Result<Self, CredentialError> {
        if (20..=128).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric()) {
            Ok(Self(SecretText(Zeroizing::new(s.to_owned()))))
        } else {
            Err(CredentialError::MalformedKey)
        }
    }

    /// The key itself, for printing once at creation.
    pub fn reveal(&self) -> &str {
        &self.0.0
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

#[cfg(test)]
mod shape_tests {
    use super::*;

    #[test]
    fn email_shape() {
        assert!(valid_email("user@example.com"));
        assert!(!valid_email("user"));
        assert!(!valid_email("user@localhost"));
        assert!(!valid_email("us er@example.com"));
        assert!(!valid_email("user@example.com\nforged"));
        assert!(!valid_email("us\ter@example.com"));
    }

    #[test]
    fn labels_refuse_control_and_formatting_characters() {
        assert!(valid_label("ci deploy token").is_ok());
        assert!(valid_label("Zürich ops").is_ok());
        for bad in [
            "",
            "a\nb",
            "a\tb",
            "a\u{1b}[2Jb",
            "a\u{202e}b",
            &"x".repeat(101),
        ] {
            assert!(valid_label(bad).is_err(), "{bad:?}");
        }
    }
}
