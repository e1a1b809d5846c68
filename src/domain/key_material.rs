//! Recognises private key material pasted where a certificate belongs, in every format a key
//! is commonly kept in, so it can be refused (server) or held back (`csrd batch
//! --certificates`) without ever being echoed, logged or sent:
//!
//! - PEM blocks whose label ends in `PRIVATE KEY` (PKCS#8, encrypted PKCS#8, PKCS#1 `RSA`,
//!   SEC1 `EC`, `DSA`, `OPENSSH`, …) and PGP's `PRIVATE KEY BLOCK`;
//! - PuTTY key files (`PuTTY-User-Key-File-`);
//! - a JSON Web Key holding a private member (`"d"`, with `"kty"`);
//! - `openssl … -text` dumps of a private key (`Private-Key:`, in any case);
//! - a DER PKCS#8 `PrivateKeyInfo`, `EncryptedPrivateKeyInfo`, PKCS#1 `RSAPrivateKey` or SEC1
//!   `ECPrivateKey`, as raw bytes, as base64 (with or without line breaks), as base64url, or
//!   as hex (with or without `:` or blanks between the bytes).
//!
//! Not recognised: a bare private scalar (32 random bytes in hex or base64 look like any
//! digest), and a key deliberately cut up with other characters. A false positive only
//! refuses an upload that was not a certificate chain anyway (a chain is PEM `CERTIFICATE`
//! blocks, and no certificate's DER has a private key's shape).
//!
//! The work is linear in the text: JSON is parsed from at most a few places, within a budget
//! of a few times the text's length; text that would take more is treated as holding a key.

use base64::Engine as _;

/// Whether `bytes` hold private key material in any recognised format.
pub fn holds_private_key(bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(bytes);
    pem_private_key(&text)
        || text.contains("PuTTY-User-Key-File-")
        || openssl_text_dump(&text)
        || jwk_private_key(&text)
        || der_private_key(bytes)
        || base64_candidates(&text).any(|der| der_private_key(&der))
        || base64url_candidates(&text).any(|der| der_private_key(&der))
        || hex_candidates(&text).any(|der| der_private_key(&der))
}

/// `openssl rsa|ec|pkey -text` output: `RSA Private-Key: (2048 bit …`, `Private-Key: (256 bit)`,
/// `ED25519 Private-Key:`, in any case.
fn openssl_text_dump(text: &str) -> bool {
    text.as_bytes()
        .windows(b"private-key:".len())
        .any(|w| w.eq_ignore_ascii_case(b"private-key:"))
}

/// `-----BEGIN … PRIVATE KEY-----` and `-----BEGIN PGP PRIVATE KEY BLOCK-----`.
fn pem_private_key(text: &str) -> bool {
    text.contains("PRIVATE KEY-----") || text.contains("PRIVATE KEY BLOCK-----")
}

/// Whether a JSON value holds key material: a JWK with a private member anywhere in it, or a
/// string that holds a key in any recognised format.
pub fn json_holds_private_key(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Object(o) => {
            (o.contains_key("kty") && o.contains_key("d")) || o.values().any(json_holds_private_key)
        }
        serde_json::Value::Array(a) => a.iter().any(json_holds_private_key),
        serde_json::Value::String(s) => holds_private_key(s.as_bytes()),
        _ => false,
    }
}

/// A JWK (or a JWK set), alone or inside other text, with a private member (`"d"` beside
/// `"kty"`, however their names are escaped).
fn jwk_private_key(text: &str) -> bool {
    jwk_scan(text).0
}

/// [`jwk_private_key`], and the most bytes of JSON it may have read to decide.
fn jwk_scan(text: &str) -> (bool, usize) {
    fn private(v: &serde_json::Value) -> bool {
        match v {
            serde_json::Value::Object(o) => {
                (o.contains_key("kty") && o.contains_key("d")) || o.values().any(private)
            }
            serde_json::Value::Array(a) => a.iter().any(private),
            _ => false,
        }
    }
    // No member can be named `d` without one of these (`\u0064` in any case): nothing to
    // parse.
    let lower = text.to_ascii_lowercase();
    if !lower.contains("\"d\"") && !lower.contains("\\u0064") {
        return (false, 0);
    }
    // Each `{` may start one (a JWK pasted after a certificate); a few are tried, each of
    // which may read the rest of the text. Text whose JSON would take more than the budget to
    // read is not a certificate chain: it is treated as holding a key.
    let budget = json_budget(text.len());
    let mut work = 0;
    for (tried, (at, _)) in text.match_indices('{').enumerate() {
        let rest = text.len() - at;
        if tried == MAX_JSON_STARTS || work + rest > budget {
            return (true, work);
        }
        work += rest;
        let found = serde_json::Deserializer::from_str(&text[at..])
            .into_iter::<serde_json::Value>()
            .next()
            .is_some_and(|v| v.is_ok_and(|v| private(&v)));
        if found {
            return (true, work);
        }
    }
    (false, work)
}

/// Bytes of JSON read for a text of `len` bytes, at most, however many values it holds.
fn json_budget(len: usize) -> usize {
    JSON_WORK_PER_BYTE * len + 4096
}

/// JSON values tried per text (a certificate chain holds none).
const MAX_JSON_STARTS: usize = 16;
/// Bytes of JSON read per byte of text, at most (a few values from the start).
const JSON_WORK_PER_BYTE: usize = 4;

/// The shortest base64 a key can be: an Ed25519 PKCS#8 key is 48 bytes (64 characters); a
/// bare 32-byte scalar in SEC1 form is longer still.
const MIN_B64_CHARS: usize = 60;

/// Words before a key on its line that are skipped to find where it starts ("key MIIE…"): at
/// most this many, each shorter than a line of base64.
const LEADING_WORDS: usize = 3;
const WORD_CHARS: usize = 20;

/// The decoded bytes of every stretch of base64 long enough to be a key. A stretch is a run
/// of base64 characters and whitespace (a key's lines); it is decoded whole, and once more
/// without the few short words it may start with (a word before a key on its line joins the
/// run).
fn base64_candidates(text: &str) -> impl Iterator<Item = Vec<u8>> + '_ {
    // Not `-` or `_` (base64url): PEM's dashes would join a block's body to its header.
    let is_b64 = |c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=');
    let decode = |tokens: &[&str]| -> Option<Vec<u8>> {
        let joined: String = tokens.concat();
        let joined = joined.trim_end_matches('=');
        (joined.len() >= MIN_B64_CHARS)
            .then(|| {
                base64::engine::general_purpose::STANDARD_NO_PAD
                    .decode(joined)
                    .ok()
            })
            .flatten()
    };
    text.split(move |c: char| !(is_b64(c) || c.is_ascii_whitespace()))
        // Too short to hold a key however it is read (looked at before anything is copied).
        .filter(|run| run.len() >= MIN_B64_CHARS)
        .flat_map(move |run| {
            let tokens: Vec<&str> = run.split_ascii_whitespace().collect();
            let words = tokens
                .iter()
                .take(LEADING_WORDS)
                .take_while(|t| t.len() < WORD_CHARS)
                .count();
            let whole = decode(&tokens);
            let after_words = (words > 0 && words < tokens.len())
                .then(|| decode(&tokens[words..]))
                .flatten();
            whole.into_iter().chain(after_words)
        })
}

/// The decoded bytes of every run of base64url long enough to be a key (a JWK's or a URL's
/// form: `-` and `_` for `+` and `/`, on one line). PEM's `-----` armour separates runs, so a
/// block's header never joins its body.
fn base64url_candidates(text: &str) -> impl Iterator<Item = Vec<u8>> + '_ {
    // `=` ends a run: padding, or the `key=` before a value.
    let is_b64url = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_');
    text.split("-----")
        .flat_map(move |part| part.split(move |c: char| !is_b64url(c)))
        .filter(|run| run.len() >= MIN_B64_CHARS && run.contains(['-', '_']))
        .filter_map(|run| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(run)
                .ok()
        })
}

/// The decoded bytes of every run of hex long enough to be a key: digits, optionally with
/// `:` or blanks between bytes, across lines (`openssl asn1parse`, `xxd -p`, a hex column).
fn hex_candidates(text: &str) -> impl Iterator<Item = Vec<u8>> + '_ {
    let is_run = |c: char| c.is_ascii_hexdigit() || c == ':' || c.is_ascii_whitespace();
    text.split(move |c: char| !is_run(c)).filter_map(|run| {
        if run.len() < 2 * MIN_DER_BYTES {
            return None;
        }
        let digits: String = run.chars().filter(char::is_ascii_hexdigit).collect();
        (digits.len() >= 2 * MIN_DER_BYTES && digits.len().is_multiple_of(2))
            .then(|| hex::decode(&digits).ok())
            .flatten()
    })
}

/// The shortest DER private key: an Ed25519 PKCS#8 key is 48 bytes.
const MIN_DER_BYTES: usize = 48;

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
    fn short_keys_escaped_jwks_and_keys_after_a_word_are_found() {
        // Ed25519 PKCS#8 v1 (48 bytes: 64 characters) and a P-256 SEC1 key without its public
        // half (51 bytes), built by hand.
        let mut ed25519 = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        ed25519.extend([0x11; 32]);
        let mut sec1 = vec![0x30, 0x31, 0x02, 0x01, 0x01, 0x04, 0x20];
        sec1.extend([0x22; 32]);
        sec1.extend([
            0xa0, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
        ]);
        for der in [&ed25519, &sec1] {
            let b64 = wrap(der, 1000);
            assert!(holds_private_key(b64.as_bytes()), "{b64}");
            assert!(
                holds_private_key(format!("key {b64}").as_bytes()),
                "after a word"
            );
        }
        let rsa = generate_key(KeyType::Rsa2048).unwrap();
        let lines = wrap(rsa.pkcs8_der.expose(), 64);
        assert!(holds_private_key(format!("key {lines}\n").as_bytes()));
        let escaped = r#"{"kty":"EC","crv":"P-256","x":"a","y":"b","\u0064":"secret"}"#;
        assert!(holds_private_key(escaped.as_bytes()));
        let ca = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["a.example.com".to_owned()])
            .unwrap()
            .self_signed(&ca)
            .unwrap()
            .pem();
        let after = format!(
            "{cert}{}",
            r#"{"kty":"OKP","crv":"Ed25519","x":"a","d":"b"}"#
        );
        assert!(holds_private_key(after.as_bytes()));
    }

    #[test]
    fn hex_base64url_and_openssl_text_dumps_are_keys() {
        for key_type in [KeyType::P256v1, KeyType::Rsa2048] {
            let key = generate_key(key_type).unwrap();
            let der = key.pkcs8_der.expose();
            let hex = hex::encode(der);
            let colons: Vec<String> = der.iter().map(|b| format!("{b:02x}")).collect();
            let url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(der);
            let url = if url.contains(['-', '_']) {
                url
            } else {
                // A key whose base64 has neither character is found by the base64 check.
                assert!(holds_private_key(url.as_bytes()));
                continue;
            };
            for text in [
                hex.clone(),
                hex.to_uppercase(),
                colons.join(":"),
                colons
                    .chunks(15)
                    .map(|l| format!("    {}", l.join(":")))
                    .collect::<Vec<_>>()
                    .join(":\n"),
                format!("key={url}"),
                format!("{url}=="),
            ] {
                assert!(holds_private_key(text.as_bytes()), "{key_type:?}: {text}");
            }
        }
        let dump =
            "Private-Key: (256 bit)\npriv:\n    5f:3a\npub:\n    04:1c\nASN1 OID: prime256v1\n";
        assert!(holds_private_key(dump.as_bytes()));
    }

    #[test]
    fn json_in_a_certificate_field_costs_a_bounded_amount_to_look_at() {
        // 64 KiB of nested or wide JSON, with a "d" to make the look worth it: each of the
        // sixteen starts would otherwise read the rest of the text.
        let wide = format!("{{\"d\":1,{}\"z\":1", "\"a\":{\"b\":1},".repeat(6000));
        let deep = format!("{}\"d\"{}", "{\"a\":".repeat(100), "}".repeat(100)).repeat(300);
        for text in [wide, deep] {
            let (found, work) = jwk_scan(&text);
            assert!(work <= json_budget(text.len()), "{work} for {}", text.len());
            assert!(found, "JSON past the budget is not a certificate chain");
        }
        // Without a "d" member nothing is parsed at all.
        assert_eq!(jwk_scan(&"{\"a\":1}".repeat(10_000)), (false, 0));
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
        // Digests and fingerprints in hex, as bundles print them beside certificates.
        let fingerprint = "SHA256 Fingerprint=".to_owned()
            + &[0xabu8; 32]
                .iter()
                .map(|b| format!("{b:02X}"))
                .collect::<Vec<_>>()
                .join(":");
        assert!(!holds_private_key(
            format!("{fingerprint}\n{}", cert.pem()).as_bytes()
        ));
    }
}
