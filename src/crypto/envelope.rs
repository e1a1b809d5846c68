//! Envelope encryption of private keys.
//!
//! Each record gets a fresh random 256-bit data key (DEK), used exactly once to encrypt the
//! PKCS#8 DER with AES-256-GCM; the DEK is wrapped by the active KEK with AES-256-GCM. Both
//! encryptions authenticate associated data binding the ciphertext to its record (format
//! version, purpose, CSR id, owner kind and id, KEK id), so a ciphertext copied to another
//! row, or a row whose bound fields were changed, no longer decrypts.
//!
//! Nonces are random 96-bit values: the DEK encrypts once, so its nonce can never repeat
//! under it; a KEK wraps one DEK per record, far below the 2^32 random-nonce bound.

use super::secret::random_array;
use super::{Keyring, SecretBytes};
use crate::domain::{CsrId, Owner};

pub const ENVELOPE_VERSION: i16 = 1;

/// What is stored for a private key. Contains no plaintext and no key-encryption key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedKey {
    pub version: i16,
    pub kek_id: String,
    pub wrapped_dek: Vec<u8>,
    pub dek_nonce: Vec<u8>,
    pub key_nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("unsupported envelope version {0}")]
    Version(i16),
    #[error("no configured KEK has id {0:?}")]
    UnknownKek(String),
    #[error("the data key could not be unwrapped (wrong KEK or tampered record)")]
    Unwrap,
    #[error("the private key could not be decrypted (tampered record)")]
    Decrypt,
}

/// Length-prefixed fields, so that no two different bindings encode to the same bytes.
fn associated_data(
    purpose: &[u8],
    version: i16,
    csr_id: CsrId,
    owner: &Owner,
    kek_id: &str,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    let mut put = |field: &[u8]| {
        out.extend_from_slice(&(field.len() as u32).to_be_bytes());
        out.extend_from_slice(field);
    };
    put(b"csrd-envelope");
    put(&version.to_be_bytes());
    put(purpose);
    put(csr_id.0.as_bytes());
    put(owner.kind().as_str().as_bytes());
    put(owner.id().as_bytes());
    put(kek_id.as_bytes());
    out
}

pub fn seal(keyring: &Keyring, csr_id: CsrId, owner: &Owner, plaintext: &SecretBytes) -> SealedKey {
    let kek = keyring.active();
    let kek_id = kek.id().as_str();
    let dek = SecretBytes::random(32);
    let cipher = {
        use aes_gcm::{Aes256Gcm, KeyInit};
        Aes256Gcm::new_from_slice(dek.expose()).expect("a DEK is 32 bytes")
    };
    let key_nonce = random_array::<12>();
    let key_aad = associated_data(b"private-key", ENVELOPE_VERSION, csr_id, owner, kek_id);
    let ciphertext = {
        use aes_gcm::aead::{Aead, Payload};
        cipher
            .encrypt(
                (&key_nonce).into(),
                Payload {
                    msg: plaintext.expose(),
                    aad: &key_aad,
                },
            )
            .expect("AES-GCM encryption of a key cannot fail")
    };
    let dek_nonce = random_array::<12>();
    let dek_aad = associated_data(b"data-key", ENVELOPE_VERSION, csr_id, owner, kek_id);
    let wrapped_dek = kek.encrypt(&dek_nonce, dek.expose(), &dek_aad);
    SealedKey {
        version: ENVELOPE_VERSION,
        kek_id: kek_id.to_owned(),
        wrapped_dek,
        dek_nonce: dek_nonce.to_vec(),
        key_nonce: key_nonce.to_vec(),
        ciphertext,
    }
}

pub fn open(
    keyring: &Keyring,
    csr_id: CsrId,
    owner: &Owner,
    sealed: &SealedKey,
) -> Result<SecretBytes, EnvelopeError> {
    use aes_gcm::aead::{Aead, Payload};
    use aes_gcm::{Aes256Gcm, KeyInit, Nonce};

    if sealed.version != ENVELOPE_VERSION {
        return Err(EnvelopeError::Version(sealed.version));
    }
    let kek = keyring
        .get(&sealed.kek_id)
        .ok_or_else(|| EnvelopeError::UnknownKek(sealed.kek_id.clone()))?;
    let dek_aad = associated_data(b"data-key", sealed.version, csr_id, owner, &sealed.kek_id);
    let dek = kek
        .decrypt(&sealed.dek_nonce, &sealed.wrapped_dek, &dek_aad)
        .ok_or(EnvelopeError::Unwrap)?;
    let cipher = Aes256Gcm::new_from_slice(&dek).map_err(|_| EnvelopeError::Unwrap)?;
    if sealed.key_nonce.len() != 12 {
        return Err(EnvelopeError::Decrypt);
    }
    let key_aad = associated_data(
        b"private-key",
        sealed.version,
        csr_id,
        owner,
        &sealed.kek_id,
    );
    cipher
        .decrypt(
            Nonce::from_slice(&sealed.key_nonce),
            Payload {
                msg: &sealed.ciphertext,
                aad: &key_aad,
            },
        )
        .map(SecretBytes::new)
        .map_err(|_| EnvelopeError::Decrypt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AccountId, ZoneId};

    fn ring(entries: &[(&str, u8)]) -> Keyring {
        let spec: Vec<String> = entries
            .iter()
            .map(|(id, b)| {
                use base64::Engine;
                format!(
                    "{id}:{}",
                    base64::engine::general_purpose::STANDARD.encode([*b; 32])
                )
            })
            .collect();
        Keyring::parse(&spec.join(",")).unwrap()
    }

    fn account() -> Owner {
        Owner::Account(AccountId::parse("023e105f4ecef8ad9ca31a8372d0c353").unwrap())
    }

    #[test]
    fn seal_then_open_round_trips_without_storing_plaintext() {
        let keyring = ring(&[("k1", 1)]);
        let id = CsrId::new();
        let secret = SecretBytes::new(b"-- pkcs8 bytes --".repeat(8));
        let sealed = seal(&keyring, id, &account(), &secret);
        assert!(
            !sealed
                .ciphertext
                .windows(16)
                .any(|w| w == b"-- pkcs8 bytes -")
        );
        let opened = open(&keyring, id, &account(), &sealed).unwrap();
        assert_eq!(opened.expose(), secret.expose());
    }

    #[test]
    fn a_ciphertext_bound_to_one_record_fails_for_any_other_binding() {
        let keyring = ring(&[("k1", 1)]);
        let id = CsrId::new();
        let sealed = seal(&keyring, id, &account(), &SecretBytes::new(vec![9; 100]));
        let other_zone = Owner::Zone(ZoneId::parse("023e105f4ecef8ad9ca31a8372d0c353").unwrap());
        assert_eq!(
            open(&keyring, CsrId::new(), &account(), &sealed).unwrap_err(),
            EnvelopeError::Unwrap
        );
        assert_eq!(
            open(&keyring, id, &other_zone, &sealed).unwrap_err(),
            EnvelopeError::Unwrap
        );
        let mut renamed = sealed.clone();
        renamed.kek_id = "k2".into();
        let both = ring(&[("k1", 1), ("k2", 1)]);
        assert_eq!(
            open(&both, id, &account(), &renamed).unwrap_err(),
            EnvelopeError::Unwrap
        );
        let mut flipped = sealed.clone();
        flipped.ciphertext[0] ^= 1;
        assert_eq!(
            open(&keyring, id, &account(), &flipped).unwrap_err(),
            EnvelopeError::Decrypt
        );
    }

    #[test]
    fn old_keks_still_open_after_rotation() {
        let old = ring(&[("k1", 1)]);
        let id = CsrId::new();
        let sealed = seal(&old, id, &account(), &SecretBytes::new(vec![3; 10]));
        let rotated = ring(&[("k2", 2), ("k1", 1)]);
        assert!(open(&rotated, id, &account(), &sealed).is_ok());
        assert_eq!(
            seal(&rotated, id, &account(), &SecretBytes::new(vec![1])).kek_id,
            "k2"
        );
    }
}
