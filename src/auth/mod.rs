//! Credentials and what they allow: API tokens (Bearer) and legacy global API keys.
//!
//! Secrets are never stored: a token is `<8-char lookup id><32-char secret>`; the lookup id
//! finds the row, and the SHA-256 of the whole token is compared in constant time. A legacy
//! key is found by the user's email and compared the same way.

// Request paths: a panic here would be a 500 (caught) or a dropped task; errors are
// answered in the Cloudflare envelope instead. Tests may unwrap.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod credentials;
pub mod principal;

pub use credentials::{
    ApiKey, ApiToken, CredentialError, Credentials, hash_secret, valid_email, valid_label,
};
pub use principal::{Permission, Principal, Scope};
