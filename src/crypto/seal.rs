//! Sealing a released private key to an age X25519 recipient: an ASCII-armored age v1 file
//! (<https://age-encryption.org/v1>) that the stock `age -d -i identity` opens.
//!
//! The file is written here, from the primitives the reference implementation uses
//! (x25519-dalek, HKDF-SHA-256, ChaCha20-Poly1305, HMAC-SHA-256), rather than by the `age`
//! crate's writer: that writer copies the plaintext into a chunk buffer it frees without
//! zeroizing, and this plaintext is a private key. Here every secret (the file key, the
//! ephemeral scalar, the derived keys, the plaintext being encrypted) is in a zeroizing
//! buffer, encrypted in place. The tests open what this writes with the `age` crate, and the
//! end-to-end test with the stock CLI.
//!
//! Every file gets a fresh file key and a fresh ephemeral X25519 key, so sealing the same key
//! twice gives two unrelated files. Pure CPU code.

use base64::Engine as _;
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hmac::Mac as _;
use sha2::Sha256;
use zeroize::Zeroizing;

use super::secret::random_array;
use crate::domain::recipient::AgeRecipient;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    /// The recipient is a low-order point: sealing to it would reveal the file key.
    #[error("the recipient's key is not usable")]
    BadRecipient,
    #[error("a sealed key is at most {MAX_PLAINTEXT} bytes")]
    TooLarge,
    #[error("encryption failed")]
    Encrypt,
}

const INTRO: &str = "age-encryption.org/v1\n";
const X25519_INFO: &[u8] = b"age-encryption.org/v1/X25519";
/// age's payload is cut in 64 KiB chunks; a private key is one chunk, the last.
const CHUNK: usize = 64 * 1024;
/// What [`seal_armored`] takes: one chunk (a PEM private key is a few KiB).
pub const MAX_PLAINTEXT: usize = CHUNK;

fn hkdf(ikm: &[u8], salt: &[u8], info: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut out = Zeroizing::new([0u8; 32]);
    hkdf::Hkdf::<Sha256>::new(Some(salt), ikm)
        .expand(info, out.as_mut())
        .unwrap_or_else(|_| unreachable!("32 bytes is a valid HKDF-SHA-256 length"));
    out
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes)
}

/// `plaintext` sealed to `recipient`: an ASCII-armored age file.
pub fn seal_armored(recipient: &AgeRecipient, plaintext: &[u8]) -> Result<String, SealError> {
    if plaintext.len() > MAX_PLAINTEXT {
        return Err(SealError::TooLarge);
    }
    let file_key = Zeroizing::new(random_array::<16>());

    // The recipient stanza: the file key wrapped under X25519(ephemeral, recipient).
    let ephemeral = x25519_dalek::StaticSecret::from(random_array::<32>());
    let share = x25519_dalek::PublicKey::from(&ephemeral);
    let shared = ephemeral.diffie_hellman(&x25519_dalek::PublicKey::from(*recipient.public_key()));
    if !shared.was_contributory() {
        return Err(SealError::BadRecipient);
    }
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(share.as_bytes());
    salt[32..].copy_from_slice(recipient.public_key());
    let wrap_key = hkdf(shared.as_bytes(), &salt, X25519_INFO);
    let mut body = Zeroizing::new(file_key.to_vec());
    ChaCha20Poly1305::new(Key::from_slice(wrap_key.as_ref()))
        .encrypt_in_place(&Nonce::default(), b"", &mut *body)
        .map_err(|_| SealError::Encrypt)?;

    // The header, and its MAC under a key derived from the file key.
    let mut header = String::with_capacity(192);
    header.push_str(INTRO);
    header.push_str("-> X25519 ");
    header.push_str(&b64(share.as_bytes()));
    header.push('\n');
    // 32 bytes are 43 characters: one line, shorter than the 64 that would call for another.
    header.push_str(&b64(&body));
    header.push_str("\n---");
    let mac_key = hkdf(file_key.as_ref(), b"", b"header");
    let mut mac = <hmac::Hmac<Sha256> as hmac::Mac>::new_from_slice(mac_key.as_ref())
        .map_err(|_| SealError::Encrypt)?;
    mac.update(header.as_bytes());
    header.push(' ');
    header.push_str(&b64(&mac.finalize().into_bytes()));
    header.push('\n');

    // The payload: a nonce, then the plaintext as one last STREAM chunk, encrypted in place.
    let nonce = random_array::<16>();
    let payload_key = hkdf(file_key.as_ref(), &nonce, b"payload");
    let mut chunk = Zeroizing::new(Vec::with_capacity(plaintext.len() + 16));
    chunk.extend_from_slice(plaintext);
    let mut chunk_nonce = [0u8; 12];
    chunk_nonce[11] = 1; // counter 0, last chunk
    ChaCha20Poly1305::new(Key::from_slice(payload_key.as_ref()))
        .encrypt_in_place(Nonce::from_slice(&chunk_nonce), b"", &mut *chunk)
        .map_err(|_| SealError::Encrypt)?;

    let mut file = Vec::with_capacity(header.len() + 16 + chunk.len());
    file.extend_from_slice(header.as_bytes());
    file.extend_from_slice(&nonce);
    file.extend_from_slice(&chunk);
    Ok(armor(&file))
}

/// age's ASCII armor: strict PEM, 64 columns, padded base64.
fn armor(file: &[u8]) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(file);
    let mut out = String::with_capacity(encoded.len() + encoded.len() / 64 + 72);
    out.push_str("-----BEGIN AGE ENCRYPTED FILE-----\n");
    for line in encoded.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END AGE ENCRYPTED FILE-----\n");
    out
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("the sealed key could not be opened with this identity: {0}")]
    Decrypt(String),
    #[error("the sealed key is larger than {MAX_PLAINTEXT} bytes")]
    TooLarge,
}

/// Opens an armored age file with `identity` (the agent's side), into a zeroizing buffer that
/// is never reallocated.
pub fn open_armored(
    identity: &age::x25519::Identity,
    armored: &str,
) -> Result<Zeroizing<Vec<u8>>, OpenError> {
    use std::io::Read as _;
    let reader = age::armor::ArmoredReader::new(armored.as_bytes());
    let decryptor =
        age::Decryptor::new_buffered(reader).map_err(|e| OpenError::Decrypt(e.to_string()))?;
    let mut stream = decryptor
        .decrypt(std::iter::once(identity as &dyn age::Identity))
        .map_err(|e| OpenError::Decrypt(e.to_string()))?;
    let mut out = Zeroizing::new(vec![0u8; MAX_PLAINTEXT + 1]);
    let mut filled = 0;
    loop {
        let n = stream
            .read(&mut out[filled..])
            .map_err(|e| OpenError::Decrypt(e.to_string()))?;
        if n == 0 {
            break;
        }
        filled += n;
        if filled > MAX_PLAINTEXT {
            return Err(OpenError::TooLarge);
        }
    }
    out.truncate(filled);
    Ok(out)
}

/// A new age X25519 identity (`AGE-SECRET-KEY-1…`, zeroized when dropped) and its recipient.
pub fn new_identity() -> (Zeroizing<String>, String) {
    use age::secrecy::ExposeSecret as _;
    let identity = age::x25519::Identity::generate();
    #[allow(
        clippy::disallowed_methods,
        reason = "a new agent identity is written once, to the file `csrd agent init` makes"
    )]
    let secret = Zeroizing::new(identity.to_string().expose_secret().to_owned());
    (secret, identity.to_public().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (age::x25519::Identity, AgeRecipient) {
        let identity = age::x25519::Identity::generate();
        let recipient = AgeRecipient::parse(&identity.to_public().to_string()).unwrap();
        (identity, recipient)
    }

    #[test]
    fn the_reference_implementation_opens_what_is_sealed() {
        let (identity, recipient) = pair();
        for plaintext in [
            &b""[..],
            b"-----BEGIN PRIVATE KEY-----\nabc\n",
            &[7u8; 5000],
        ] {
            let armored = seal_armored(&recipient, plaintext).unwrap();
            assert!(armored.starts_with("-----BEGIN AGE ENCRYPTED FILE-----\n"));
            assert!(armored.lines().all(|l| l.len() <= 64));
            let opened = age::decrypt(&identity, armored.as_bytes()).unwrap();
            assert_eq!(opened, plaintext);
            assert_eq!(&*open_armored(&identity, &armored).unwrap(), plaintext);
        }
        assert_eq!(
            seal_armored(&recipient, &vec![0; MAX_PLAINTEXT + 1]),
            Err(SealError::TooLarge)
        );
    }

    #[test]
    fn each_seal_is_fresh_and_only_its_recipient_opens_it() {
        let (identity, recipient) = pair();
        let (other, _) = pair();
        let a = seal_armored(&recipient, b"key").unwrap();
        let b = seal_armored(&recipient, b"key").unwrap();
        assert_ne!(a, b, "a fresh file key and ephemeral share each time");
        assert!(open_armored(&other, &a).is_err());
        assert!(open_armored(&identity, &a).is_ok());
        // A flipped byte anywhere fails the header MAC or the payload tag.
        let mut tampered: Vec<char> = a.chars().collect();
        let at = tampered.len() / 2;
        tampered[at] = if tampered[at] == 'A' { 'B' } else { 'A' };
        let tampered: String = tampered.into_iter().collect();
        assert!(open_armored(&identity, &tampered).is_err());
    }

    #[test]
    fn recipients_are_parsed_strictly() {
        let (_, recipient) = pair();
        let text = recipient.as_str().to_owned();
        assert_eq!(AgeRecipient::parse(&text), Some(recipient.clone()));
        assert_eq!(recipient.fingerprint().len(), 64);
        for bad in [
            text.to_ascii_uppercase(),
            format!(" {text}"),
            text[..61].to_owned(),
            "age1".to_owned(),
            "AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ".into(),
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHsKLqeplhpW+uObz5dvMgjz1OxfM/XXUB+VHtZ6isGN"
                .into(),
        ] {
            assert_eq!(AgeRecipient::parse(&bad), None, "{bad}");
        }
        let (secret, public) = new_identity();
        assert!(secret.starts_with("AGE-SECRET-KEY-1"));
        assert!(AgeRecipient::parse(&public).is_some());
    }
}
