//! Key-encryption keys (KEKs) from `CSRD_KEKS`: `id:base64key[,id:base64key...]`.
//! The first KEK wraps new data keys; every KEK can unwrap.

use std::fmt;

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

use super::secret::random_array;

pub const KEK_LEN: usize = 32;
const CHECK_AAD: &[u8] = b"csrd kek check v1";
const CHECK_PLAINTEXT: [u8; 32] = [0u8; 32];

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KekId(String);

impl KekId {
    /// 1–64 characters of `[A-Za-z0-9_.-]`: it is stored beside every record.
    pub fn parse(s: &str) -> Option<Self> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        ok.then(|| Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

pub struct Kek {
    id: KekId,
    cipher: Aes256Gcm,
}

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Kek({}, [REDACTED])", self.id.0)
    }
}

impl Kek {
    pub fn new(id: KekId, key: &[u8; KEK_LEN]) -> Self {
        Self {
            id,
            cipher: Aes256Gcm::new(key.into()),
        }
    }

    pub fn id(&self) -> &KekId {
        &self.id
    }

    pub(crate) fn encrypt(&self, nonce: &[u8; 12], plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        self.cipher
            .encrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .expect("AES-GCM encryption of a short buffer cannot fail")
    }

    pub(crate) fn decrypt(
        &self,
        nonce: &[u8],
        ciphertext: &[u8],
        aad: &[u8],
    ) -> Option<Zeroizing<Vec<u8>>> {
        if nonce.len() != 12 {
            return None;
        }
        self.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .ok()
            .map(Zeroizing::new)
    }

    /// A value stored once per KEK id, so that a wrong key under a known id is caught at start-up.
    pub fn check_value(&self) -> (Vec<u8>, Vec<u8>) {
        let nonce = random_array::<12>();
        let ct = self.encrypt(&nonce, &CHECK_PLAINTEXT, &self.check_aad());
        (nonce.to_vec(), ct)
    }

    pub fn verify_check_value(&self, nonce: &[u8], ciphertext: &[u8]) -> bool {
        self.decrypt(nonce, ciphertext, &self.check_aad())
            .is_some_and(|p| p.as_slice() == CHECK_PLAINTEXT)
    }

    fn check_aad(&self) -> Vec<u8> {
        [CHECK_AAD, b"|", self.id.0.as_bytes()].concat()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyringError {
    #[error("CSRD_KEKS is empty")]
    Empty,
    #[error("CSRD_KEKS entry {0} is not of the form id:base64key")]
    Malformed(usize),
    #[error("CSRD_KEKS entry {0} has an invalid id (1-64 of A-Z a-z 0-9 _ . -)")]
    BadId(usize),
    #[error("CSRD_KEKS entry {0}: the key must be 32 bytes of standard base64")]
    BadKey(usize),
    #[error("CSRD_KEKS names the id {0:?} twice")]
    DuplicateId(String),
}

/// All configured KEKs; `active()` is the first.
#[derive(Debug)]
pub struct Keyring {
    keks: Vec<Kek>,
}

impl Keyring {
    pub fn parse(spec: &str) -> Result<Self, KeyringError> {
        let mut keks: Vec<Kek> = Vec::new();
        for (i, entry) in spec
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .enumerate()
        {
            let n = i + 1;
            let (id, b64) = entry.split_once(':').ok_or(KeyringError::Malformed(n))?;
            let id = KekId::parse(id).ok_or(KeyringError::BadId(n))?;
            let key = Zeroizing::new(STANDARD.decode(b64).map_err(|_| KeyringError::BadKey(n))?);
            let key: &[u8; KEK_LEN] = key
                .as_slice()
                .try_into()
                .map_err(|_| KeyringError::BadKey(n))?;
            if keks.iter().any(|k| k.id == id) {
                return Err(KeyringError::DuplicateId(id.0));
            }
            keks.push(Kek::new(id, key));
        }
        if keks.is_empty() {
            return Err(KeyringError::Empty);
        }
        Ok(Self { keks })
    }

    /// The keyring from a `CSRD_KEKS` value held as a secret: the one place it is exposed.
    pub fn from_secret(spec: &secrecy::SecretString) -> Result<Self, KeyringError> {
        #[allow(
            clippy::disallowed_methods,
            reason = "parsing the keyring is what the KEK spec is for; it is not kept"
        )]
        let spec = secrecy::ExposeSecret::expose_secret(spec);
        Self::parse(spec)
    }

    /// A new `id:base64key` entry with a random key, as printed by `csrd kek generate`.
    pub fn generate_entry(id: &KekId) -> Zeroizing<String> {
        let key = Zeroizing::new(random_array::<KEK_LEN>());
        Zeroizing::new(format!("{}:{}", id.0, STANDARD.encode(key.as_slice())))
    }

    pub fn active(&self) -> &Kek {
        &self.keks[0]
    }

    pub fn get(&self, id: &str) -> Option<&Kek> {
        self.keks.iter().find(|k| k.id.0 == id)
    }

    pub fn all(&self) -> &[Kek] {
        &self.keks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_entries_and_uses_the_first_as_active() {
        let a = Keyring::generate_entry(&KekId::parse("k2").unwrap());
        let b = Keyring::generate_entry(&KekId::parse("k1").unwrap());
        let ring = Keyring::parse(&format!("{},{}", a.as_str(), b.as_str())).unwrap();
        assert_eq!(ring.active().id().as_str(), "k2");
        assert!(ring.get("k1").is_some());
        assert!(ring.get("k3").is_none());
    }

    #[test]
    fn rejects_malformed_specs() {
        let good = Keyring::generate_entry(&KekId::parse("k").unwrap());
        assert_eq!(Keyring::parse("").unwrap_err(), KeyringError::Empty);
        assert_eq!(
            Keyring::parse("nokey").unwrap_err(),
            KeyringError::Malformed(1)
        );
        assert_eq!(
            Keyring::parse("k:AAAA").unwrap_err(),
            KeyringError::BadKey(1)
        );
        assert_eq!(
            Keyring::parse("bad id:AAAA").unwrap_err(),
            KeyringError::BadId(1)
        );
        assert!(matches!(
            Keyring::parse(&format!("{},{}", good.as_str(), good.as_str())),
            Err(KeyringError::DuplicateId(_))
        ));
    }

    #[test]
    fn check_value_detects_a_different_key_under_the_same_id() {
        let id = KekId::parse("k").unwrap();
        let right = Kek::new(id.clone(), &[1u8; 32]);
        let wrong = Kek::new(id, &[2u8; 32]);
        let (nonce, ct) = right.check_value();
        assert!(right.verify_check_value(&nonce, &ct));
        assert!(!wrong.verify_check_value(&nonce, &ct));
    }

    #[test]
    fn debug_is_redacted() {
        let kek = Kek::new(KekId::parse("k").unwrap(), &[7u8; 32]);
        assert_eq!(format!("{kek:?}"), "Kek(k, [REDACTED])");
    }
}
