//! A PKCS#8 private key (DER) as PEM, written into zeroizing buffers sized in advance so no
//! reallocation leaves a copy behind.

use base64::Engine as _;
use zeroize::Zeroizing;

use super::SecretBytes;

const BEGIN: &[u8] = b"-----BEGIN PRIVATE KEY-----\n";
const END: &[u8] = b"-----END PRIVATE KEY-----\n";

/// `-----BEGIN PRIVATE KEY-----`, the base64 in 64-column lines, `-----END PRIVATE KEY-----`.
pub fn pkcs8_pem(der: &SecretBytes) -> Zeroizing<Vec<u8>> {
    let engine = base64::engine::general_purpose::STANDARD;
    let encoded_len = base64::encoded_len(der.expose().len(), true).unwrap_or(0);
    let mut encoded = Zeroizing::new(vec![0u8; encoded_len]);
    let written = engine
        .encode_slice(der.expose(), &mut encoded[..])
        .unwrap_or(0);
    let body = &encoded[..written];
    let lines = body.len().div_ceil(64);
    let mut pem = Zeroizing::new(Vec::with_capacity(
        BEGIN.len() + body.len() + lines + END.len(),
    ));
    pem.extend_from_slice(BEGIN);
    for line in body.chunks(64) {
        pem.extend_from_slice(line);
        pem.push(b'\n');
    }
    pem.extend_from_slice(END);
    pem
}

/// The DER of a `-----BEGIN PRIVATE KEY-----` block, decoded into a zeroizing buffer (the
/// agent's side: what it unsealed). `None` when `pem` is not one such block.
pub fn pkcs8_der_from_pem(pem: &[u8]) -> Option<SecretBytes> {
    let text = std::str::from_utf8(pem).ok()?;
    let begin = std::str::from_utf8(BEGIN).ok()?.trim_end();
    let end = std::str::from_utf8(END).ok()?.trim_end();
    let body = text.trim().strip_prefix(begin)?.strip_suffix(end)?;
    let mut b64 = Zeroizing::new(Vec::with_capacity(body.len()));
    b64.extend(body.bytes().filter(|b| !b.is_ascii_whitespace()));
    let mut der = Zeroizing::new(vec![0u8; b64.len() / 4 * 3 + 3]);
    let n = base64::engine::general_purpose::STANDARD
        .decode_slice(&b64[..], &mut der[..])
        .ok()?;
    Some(SecretBytes::new(der[..n].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_becomes_the_pem_openssl_writes() {
        let key = crate::crypto::generate_key(crate::domain::KeyType::P256v1).unwrap();
        let der = key.pkcs8_der;
        let pem = pkcs8_pem(&der);
        let text = std::str::from_utf8(&pem).unwrap();
        assert!(text.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        assert!(text.ends_with("-----END PRIVATE KEY-----\n"));
        assert!(text.lines().all(|l| l.len() <= 64));
        let (_, parsed) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
        assert_eq!(parsed.label, "PRIVATE KEY");
        assert_eq!(parsed.contents, der.expose());
        assert_eq!(pem.capacity(), pem.len(), "sized in advance");
        assert_eq!(pkcs8_der_from_pem(&pem).unwrap().expose(), der.expose());
        assert!(
            pkcs8_der_from_pem(b"-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n")
                .is_none()
        );
    }
}
