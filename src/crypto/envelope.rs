//! Envelope encryption of private keys.
//!
//! Each record gets a fresh random 256-bit data key (DEK), used exactly once to encrypt the
//! PKCS#8 DER with AES-256-GCM; the DEK is wrapped by the active KEK with AES-256-GCM. Both
//! encryptions authenticate associated data binding the ciphertext to its record (format
//! version, purpose, CSR id, owner kind and id), so a ciphertext copied to another row, or a
//! row whose bound fields were changed, no longer decrypts.
//!
//! Version 2 binds the KEK id only into the wrapped DEK, which is what makes rotation cheap:
//! `rewrap` unwraps the DEK under the old KEK and wraps it under the active one, leaving the
//! key ciphertext untouched (Tink's and Vault transit's two-phase rotation). Version 1 also
//! bound the KEK id into the key ciphertext; such records are still read, and rewrap upgrades
//! them once to version 2, which has to re-encrypt their key under a fresh DEK.
//!
//! Nonces are random 96-bit values: the DEK encrypts once, so its nonce can never repeat
//! under it; a KEK wraps one DEK per record (and per rewrap), and `kek_usage` counts those
//! wraps against NIST SP 800-38D's 2^32 bound (src/custody.rs).

use super::secret::random_array;
use super::{Kek, Keyring, SecretBytes};
use crate::domain::{CsrId, Owner};

pub const ENVELOPE_VERSION: i16 = 2;
/// Records written before KEK rotation existed: the key ciphertext also binds the KEK id.
const LEGACY_VERSION: i16 = 1;

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

/// What the associated data of one encryption binds.
struct Binding<'a> {
    version: i16,
    csr_id: CsrId,
    owner: &'a Owner,
}

impl Binding<'_> {
    /// Length-prefixed fields, so that no two different bindings encode to the same bytes.
    fn encode(&self, purpose: &[u8], kek_id: Option<&str>) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        let mut put = |field: &[u8]| {
            out.extend_from_slice(&(field.len() as u32).to_be_bytes());
            out.extend_from_slice(field);
        };
        put(b"csrd-envelope");
        put(&self.version.to_be_bytes());
        put(purpose);
        put(self.csr_id.0.as_bytes());
        put(self.owner.kind().as_str().as_bytes());
        put(self.owner.id().as_bytes());
        if let Some(kek_id) = kek_id {
            put(kek_id.as_bytes());
        }
        out
    }

    fn data_key(&self, kek_id: &str) -> Vec<u8> {
        self.encode(b"data-key", Some(kek_id))
    }

    /// Version 1 bound the KEK id here too; version 2 leaves it to the wrapped DEK.
    fn private_key(&self, kek_id: &str) -> Vec<u8> {
        let bound_kek = (self.version == LEGACY_VERSION).then_some(kek_id);
        self.encode(b"private-key", bound_kek)
    }
}

fn aes(key: &[u8]) -> Option<aes_gcm::Aes256Gcm> {
    use aes_gcm::KeyInit;
    aes_gcm::Aes256Gcm::new_from_slice(key).ok()
}

fn wrap_dek(kek: &Kek, binding: &Binding, dek: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let nonce = random_array::<12>();
    let wrapped = kek.encrypt(&nonce, dek, &binding.data_key(kek.id().as_str()));
    (wrapped, nonce.to_vec())
}

pub fn seal(keyring: &Keyring, csr_id: CsrId, owner: &Owner, plaintext: &SecretBytes) -> SealedKey {
    use aes_gcm::aead::{Aead, Payload};
    let kek = keyring.active();
    let kek_id = kek.id().as_str();
    let binding = Binding {
        version: ENVELOPE_VERSION,
        csr_id,
        owner,
    };
    let dek = SecretBytes::random(32);
    let key_nonce = random_array::<12>();
    let ciphertext = aes(dek.expose())
        .expect("a DEK is 32 bytes")
        .encrypt(
            (&key_nonce).into(),
            Payload {
                msg: plaintext.expose(),
                aad: &binding.private_key(kek_id),
            },
        )
        .expect("AES-GCM encryption of a key cannot fail");
    let (wrapped_dek, dek_nonce) = wrap_dek(kek, &binding, dek.expose());
    SealedKey {
        version: ENVELOPE_VERSION,
        kek_id: kek_id.to_owned(),
        wrapped_dek,
        dek_nonce,
        key_nonce: key_nonce.to_vec(),
        ciphertext,
    }
}

fn binding<'a>(
    csr_id: CsrId,
    owner: &'a Owner,
    sealed: &SealedKey,
) -> Result<Binding<'a>, EnvelopeError> {
    match sealed.version {
        ENVELOPE_VERSION | LEGACY_VERSION => Ok(Binding {
            version: sealed.version,
            csr_id,
            owner,
        }),
        other => Err(EnvelopeError::Version(other)),
    }
}

/// The record's data key, unwrapped by the KEK its row names.
fn unwrap_dek(
    keyring: &Keyring,
    binding: &Binding,
    sealed: &SealedKey,
) -> Result<SecretBytes, EnvelopeError> {
    let kek = keyring
        .get(&sealed.kek_id)
        .ok_or_else(|| EnvelopeError::UnknownKek(sealed.kek_id.clone()))?;
    let dek = kek
        .decrypt(
            &sealed.dek_nonce,
            &sealed.wrapped_dek,
            &binding.data_key(&sealed.kek_id),
        )
        .ok_or(EnvelopeError::Unwrap)?;
    Ok(SecretBytes::new(dek.to_vec()))
}

pub fn open(
    keyring: &Keyring,
    csr_id: CsrId,
    owner: &Owner,
    sealed: &SealedKey,
) -> Result<SecretBytes, EnvelopeError> {
    use aes_gcm::Nonce;
    use aes_gcm::aead::{Aead, Payload};

    let binding = binding(csr_id, owner, sealed)?;
    let dek = unwrap_dek(keyring, &binding, sealed)?;
    let cipher = aes(dek.expose()).ok_or(EnvelopeError::Unwrap)?;
    if sealed.key_nonce.len() != 12 {
        return Err(EnvelopeError::Decrypt);
    }
    cipher
        .decrypt(
            Nonce::from_slice(&sealed.key_nonce),
            Payload {
                msg: &sealed.ciphertext,
                aad: &binding.private_key(&sealed.kek_id),
            },
        )
        .map(SecretBytes::new)
        .map_err(|_| EnvelopeError::Decrypt)
}

/// The record sealed under the active KEK, or `None` when it already is.
///
/// A version 2 record keeps its key ciphertext and nonce: only the DEK is unwrapped (by the
/// KEK the row names) and wrapped again. A version 1 record is opened and sealed afresh.
/// Either way the result is checked to open before it is returned, so a rewrap can never
/// store something unreadable.
pub fn rewrap(
    keyring: &Keyring,
    csr_id: CsrId,
    owner: &Owner,
    sealed: &SealedKey,
) -> Result<Option<SealedKey>, EnvelopeError> {
    let active = keyring.active();
    if sealed.version == ENVELOPE_VERSION && sealed.kek_id == active.id().as_str() {
        return Ok(None);
    }
    let rewrapped = if sealed.version == ENVELOPE_VERSION {
        let binding = binding(csr_id, owner, sealed)?;
        let dek = unwrap_dek(keyring, &binding, sealed)?;
        let (wrapped_dek, dek_nonce) = wrap_dek(active, &binding, dek.expose());
        SealedKey {
            kek_id: active.id().as_str().to_owned(),
            wrapped_dek,
            dek_nonce,
            ..sealed.clone()
        }
    } else {
        let key = open(keyring, csr_id, owner, sealed)?;
        seal(keyring, csr_id, owner, &key)
    };
    open(keyring, csr_id, owner, &rewrapped)?;
    Ok(Some(rewrapped))
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

    #[test]
    fn rewrap_moves_the_dek_to_the_active_kek_and_keeps_the_key_ciphertext() {
        let old = ring(&[("k1", 1)]);
        let id = CsrId::new();
        let secret = SecretBytes::new(vec![5; 64]);
        let sealed = seal(&old, id, &account(), &secret);
        assert_eq!(rewrap(&old, id, &account(), &sealed).unwrap(), None);

        let rotated = ring(&[("k2", 2), ("k1", 1)]);
        let moved = rewrap(&rotated, id, &account(), &sealed).unwrap().unwrap();
        assert_eq!(moved.kek_id, "k2");
        assert_eq!(moved.ciphertext, sealed.ciphertext);
        assert_eq!(moved.key_nonce, sealed.key_nonce);
        assert_ne!(moved.wrapped_dek, sealed.wrapped_dek);
        let only_new = ring(&[("k2", 2)]);
        assert_eq!(
            open(&only_new, id, &account(), &moved).unwrap().expose(),
            secret.expose()
        );
        assert_eq!(rewrap(&only_new, id, &account(), &moved).unwrap(), None);
        assert_eq!(
            rewrap(&only_new, id, &account(), &sealed).unwrap_err(),
            EnvelopeError::UnknownKek("k1".into())
        );
    }

    /// A version 1 record, sealed as the first release did (KEK id in both bindings).
    fn seal_legacy(keyring: &Keyring, csr_id: CsrId, owner: &Owner, key: &[u8]) -> SealedKey {
        use aes_gcm::aead::{Aead, Payload};
        let kek = keyring.active();
        let binding = Binding {
            version: LEGACY_VERSION,
            csr_id,
            owner,
        };
        let dek = [4u8; 32];
        let key_nonce = [6u8; 12];
        let ciphertext = aes(&dek)
            .unwrap()
            .encrypt(
                (&key_nonce).into(),
                Payload {
                    msg: key,
                    aad: &binding.private_key(kek.id().as_str()),
                },
            )
            .unwrap();
        let (wrapped_dek, dek_nonce) = wrap_dek(kek, &binding, &dek);
        SealedKey {
            version: LEGACY_VERSION,
            kek_id: kek.id().as_str().into(),
            wrapped_dek,
            dek_nonce,
            key_nonce: key_nonce.to_vec(),
            ciphertext,
        }
    }

    #[test]
    fn version_1_records_open_and_rewrap_upgrades_them_to_version_2() {
        let old = ring(&[("k1", 1)]);
        let id = CsrId::new();
        let legacy = seal_legacy(&old, id, &account(), b"legacy key");
        assert_eq!(
            open(&old, id, &account(), &legacy).unwrap().expose(),
            b"legacy key"
        );
        let mut renamed = legacy.clone();
        renamed.version = ENVELOPE_VERSION;
        assert!(open(&old, id, &account(), &renamed).is_err());

        let upgraded = rewrap(&old, id, &account(), &legacy).unwrap().unwrap();
        assert_eq!(upgraded.version, ENVELOPE_VERSION);
        assert_eq!(
            open(&old, id, &account(), &upgraded).unwrap().expose(),
            b"legacy key"
        );
        let mut future = legacy;
        future.version = 3;
        assert_eq!(
            open(&old, id, &account(), &future).unwrap_err(),
            EnvelopeError::Version(3)
        );
    }
}
