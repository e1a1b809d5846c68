//! Recognises private key material pasted where a certificate belongs, in every format a key
//! is commonly kept in, so it can be refused (server) or held back (`csrd batch
//! --certificates`) without ever being echoed, logged or sent:
//!
//! - PEM blocks whose label ends in `PRIVATE KEY` (PKCS#8, encrypted PKCS#8, PKCS#1 `RSA`,
//!   SEC1 `EC`, `DSA`, `OPENSSH`, …) and PGP's `PRIVATE KEY BLOCK`;
//! - PuTTY key files (`PuTTY-User-Key-File-`);
//! - a JSON Web Key holding a private member (`"d"`, with `"kty"`);
//! - bare base64 (with or without line breaks) or raw bytes of a DER PKCS#8 `PrivateKeyInfo`,
//!   `EncryptedPrivateKeyInfo`, PKCS#1 `RSAPrivateKey` or SEC1 `ECPrivateKey`.
//!
//! A false positive only refuses an upload that was not a certificate chain anyway (a chain
//! is PEM `CERTIFICATE` blocks, and no certificate's DER has a private key's shape).

use base64::Engine as _;

/// Whether `bytes` hold private key material in any recognised format.
pub fn holds_private_key(bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(bytes);
    pem_private_key(&text)
        || text.contains("PuTTY-User-Key-File-")
        || jwk_private_key(&text)
        || der_private_key(bytes)
        || base64_runs(&text).any(|der| der_private_key(&der))
}

/// `-----BEGIN … PRIVATE KEY-----` and `-----BEGIN PGP PRIVATE KEY BLOCK-----`.
fn pem_private_key(text: &str) -> bool {
    text.contains("PRIVATE KEY-----") || text.contains("PRIVATE KEY BLOCK-----")
}

/// A JWK (or a JWK set) with a private member: `"d"` beside `"kty"`.
fn jwk_private_key(text: &str) -> bool {
    if !(text.contains("\"kty\"") && text.contains("\"d\"")) {
        return false;
    }
    fn private(v: &serde_json::Value) -> bool {
        match v {
            serde_json::Value::Object(o) => {
                (o.contains_key("kty") && o.contains_key("d")) || o.values().any(private)
            }
            serde_json::Value::Array(a) => a.iter().any(private),
            _ => false,
        }
    }
    serde_json::from_str::<serde_json::Value>(text).is_ok_and(|v| private(&v))
}

/// The decoded bytes of every run of base64 long enough to be a key (the smallest, a P-256
/// SEC1 key, is 121 bytes: 160 characters), line breaks and spaces inside a run allowed. Runs
/// inside PEM certificate blocks are decoded too; they are certificates, not keys.
fn base64_runs(text: &str) -> impl Iterator<Item = Vec<u8>> + '_ {
    const MIN_CHARS: usize = 160;
    // Not `-` or `_` (base64url): PEM's dashes would join a block's body to its header.
    let is_b64 = |c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=');
    let mut runs = Vec::new();
    let mut current = String::new();
    for c in text.chars() {
        if is_b64(c) {
            current.push(c);
        } else if c.is_ascii_whitespace() {
            continue;
        } else {
            if current.len() >= MIN_CHARS {
                runs.push(std::mem::take(&mut current));
            }
            current.clear();
        }
    }
    if current.len() >= MIN_CHARS {
        runs.push(current);
    }
    runs.into_iter().filter_map(|run| {
        let run = run.trim_end_matches('=');
        base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(run)
            .ok()
    })
}

/// DER whose outer shape is a private key's.
pub fn der_private_key(der: &[u8]) -> bool {
    let Some((0x30, body, _)) = tlv(der) else {
        return false;
    };
    let mut fields = Vec::new();
    let mut rest = body;
    while let Some((tag, value, after)) = tlv(rest) {
        fields.push((tag, value));
        rest = after;
        if fields.len() > 10 {
            break;
        }
    }
    let small_int = |f: &(u8, &[u8]), n: u8| f.0 == 0x02 && f.1 == [n];
    match fields.as_slice() {
        // PKCS#8 PrivateKeyInfo / OneAsymmetricKey: version 0 or 1, algorithm, key octets.
        [v, (0x30, _), (0x04, _), ..] if small_int(v, 0) || small_int(v, 1) => true,
        // SEC1 ECPrivateKey: version 1, the private scalar.
        [v, (0x04, scalar), ..] if small_int(v, 1) && (20..=66).contains(&scalar.len()) => true,
        // PKCS#1 RSAPrivateKey: version 0 then eight integers (n, e, d, p, q, dp, dq, qinv).
        [v, ints @ ..]
            if small_int(v, 0) && ints.len() >= 8 && ints.iter().all(|f| f.0 == 0x02) =>
        {
            true
        }
        // EncryptedPrivateKeyInfo: the encryption algorithm (PBES2 and others), the octets.
        [(0x30, alg), (0x04, _)] => tlv(alg).is_some_and(|(tag, oid, _)| {
            // 1.2.840.113549.1.5 (PKCS#5) and 1.2.840.113549.1.12 (PKCS#12 PBE).
            tag == 0x06 && (oid.starts_with(&PKCS5) || oid.starts_with(&PKCS12_PBE))
        }),
        _ => false,
    }
}

const PKCS5: [u8; 8] = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x05];
const PKCS12_PBE: [u8; 8] = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c];

/// One DER tag-length-value: (tag, value, what follows). Definite lengths only.
fn tlv(bytes: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = bytes.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::generate_key;
    use crate::domain::KeyType;

    fn wrap(der: &[u8], width: usize) -> String {
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        b64.as_bytes()
            .chunks(width)
            .map(|l| std::str::from_utf8(l).unwrap())
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn keys_are_recognised_in_every_common_format() {
        for key_type in [KeyType::P256v1, KeyType::Rsa2048] {
            let key = generate_key(key_type).unwrap();
            let der = key.pkcs8_der.expose();
            assert!(holds_private_key(der), "raw DER {key_type:?}");
            assert!(holds_private_key(wrap(der, 64).as_bytes()), "base64 lines");
            assert!(holds_private_key(wrap(der, 100_000).as_bytes()), "one line");
            let pem = format!(
                "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
                wrap(der, 64)
            );
            assert!(holds_private_key(pem.as_bytes()));
        }
        // PKCS#1 and SEC1 shapes (the inner key of the PKCS#8 above).
        let rsa = generate_key(KeyType::Rsa2048).unwrap();
        let pkcs8 = rsa.pkcs8_der.expose();
        let (_, info, _) = tlv(pkcs8).unwrap();
        let (_, _, after_version) = tlv(info).unwrap();
        let (_, _, after_alg) = tlv(after_version).unwrap();
        let (_, pkcs1, _) = tlv(after_alg).unwrap();
        assert!(holds_private_key(wrap(pkcs1, 64).as_bytes()), "PKCS#1");
        let p256 = generate_key(KeyType::P256v1).unwrap();
        let (_, info, _) = tlv(p256.pkcs8_der.expose()).unwrap();
        let (_, _, after_version) = tlv(info).unwrap();
        let (_, _, after_alg) = tlv(after_version).unwrap();
        let (_, sec1, _) = tlv(after_alg).unwrap();
        assert!(der_private_key(sec1), "SEC1");

        for text in [
            "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nlQOYBF...\n-----END PGP PRIVATE KEY BLOCK-----\n",
            "PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\nPrivate-Lines: 1\nAAAA\n",
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----",
            r#"{"kty":"EC","crv":"P-256","x":"a","y":"b","d":"secret"}"#,
            r#"{"keys":[{"kty":"RSA","n":"a","e":"AQAB","d":"secret"}]}"#,
        ] {
            assert!(holds_private_key(text.as_bytes()), "{text}");
        }
    }

    #[test]
    fn certificates_and_public_keys_are_not_keys() {
        let ca = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["a.example.com".to_owned()]).unwrap();
        let cert = params.self_signed(&ca).unwrap();
        assert!(!holds_private_key(cert.pem().as_bytes()));
        assert!(!holds_private_key(cert.der()));
        assert!(!holds_private_key(ca.public_key_pem().as_bytes()));
        assert!(!holds_private_key(
            r#"{"kty":"EC","crv":"P-256","x":"a","y":"b"}"#.as_bytes()
        ));
        assert!(!holds_private_key(b"hello"));
    }
}
