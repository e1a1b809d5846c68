//! Private key generation: the one place that decides which crate makes keys.
//!
//! RSA-2048 comes from the `rsa` crate (0.10), the fastest keygen measured on our hardware (see
//! docs/performance.md, "Key generation"). RUSTSEC-2023-0071 (Marvin) is a timing side channel in
//! the `rsa` crate's *decryption and signing*; csrd uses `rsa` only to generate the key and does
//! every signature with ring (constant-time) through rcgen, so the advisory does not reach us.
//! P-256 and P-384 keys come from ring through rcgen. Every RSA size (2048, 3072, 4096) is made the
//! same way and its CSR signed with SHA-256; P-384's with ECDSA-SHA384.

use std::fmt;

use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_RSA_SHA256};
use rsa::pkcs8::EncodePrivateKey;

use super::SecretBytes;
use crate::domain::KeyType;

#[derive(Debug, thiserror::Error)]
pub enum KeygenError {
    #[error("RSA key generation failed: {0}")]
    Rsa(String),
    #[error("key encoding failed: {0}")]
    Encoding(String),
    #[error("the generated key was refused by the signer: {0}")]
    Signer(#[from] rcgen::Error),
}

/// A freshly generated private key: its PKCS#8 DER (to be sealed) and a signer for the CSR.
pub struct PrivateKey {
    pub key_type: KeyType,
    pub pkcs8_der: SecretBytes,
    pub signer: KeyPair,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey")
            .field("key_type", &self.key_type)
            .field("pkcs8_der", &self.pkcs8_der)
            .finish_non_exhaustive()
    }
}

/// Generates a new key of the requested type. CPU-bound: RSA takes tens of milliseconds.
pub fn generate_key(key_type: KeyType) -> Result<PrivateKey, KeygenError> {
    if let Some(bits) = key_type.rsa_bits() {
        let key = rsa::PrivateKey::new(&mut getrandom::SysRng, bits)
            .map_err(|e| KeygenError::Rsa(e.to_string()))?;
        let der = key
            .to_pkcs8_der()
            .map_err(|e| KeygenError::Encoding(e.to_string()))?;
        let pkcs8_der = SecretBytes::new(der.as_bytes().to_vec());
        let signer =
            KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8_der.expose().into(), &PKCS_RSA_SHA256)?;
        return Ok(PrivateKey {
            key_type,
            pkcs8_der,
            signer,
        });
    }
    let algorithm = match key_type {
        KeyType::P384 => &PKCS_ECDSA_P384_SHA384,
        _ => &PKCS_ECDSA_P256_SHA256,
    };
    let signer = KeyPair::generate_for(algorithm)?;
    let pkcs8_der = SecretBytes::new(signer.serialize_der());
    Ok(PrivateKey {
        key_type,
        pkcs8_der,
        signer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_call_makes_a_fresh_key() {
        for kt in KeyType::ALL {
            let a = generate_key(kt).unwrap();
            let b = generate_key(kt).unwrap();
            assert_ne!(a.pkcs8_der.expose(), b.pkcs8_der.expose(), "{kt:?}");
            assert_ne!(a.signer.public_key_raw(), b.signer.public_key_raw());
        }
    }

    #[test]
    fn debug_does_not_leak_key_bytes() {
        let key = generate_key(KeyType::P256v1).unwrap();
        let shown = format!("{key:?}");
        assert!(
            shown.contains("REDACTED") && !shown.contains("signer"),
            "{shown}"
        );
    }
}
