//! Key custody: key generation, CSR signing, and the envelope that seals private keys.
//!
//! Pure CPU code with no I/O; callers run it on the blocking pool.

pub mod chain;
pub mod csr;
pub mod envelope;
pub mod keygen;
pub mod keyring;
pub mod pkcs8_pem;
pub mod seal;
pub mod secret;
pub mod verify;

pub use csr::{CsrError, build_csr};
pub use envelope::{EnvelopeError, SealedKey, open, rewrap, seal};
pub use keygen::{KeygenError, PrivateKey, generate_key};
pub use keyring::{Kek, KekId, Keyring, KeyringError};
pub use secret::SecretBytes;
pub use verify::{KeyCheckError, key_matches_certificate, key_matches_csr};
