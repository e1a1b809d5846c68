//! Proof that a stored private key belongs to its CSR: the public key derived from the private
//! key (the P-256 point from the scalar with `p256`; the RSA modulus and exponent with `rsa`)
//! must be the one in the CSR's SubjectPublicKeyInfo. Nothing here signs or decrypts with the
//! key.

use rsa::pkcs8::DecodePrivateKey as _;
use rsa::traits::PublicKeyParts;
use x509_parser::prelude::{FromDer, X509CertificationRequest};
use x509_parser::public_key::PublicKey;

use super::SecretBytes;
use crate::domain::KeyType;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyCheckError {
    #[error("the CSR could not be parsed")]
    Csr,
    #[error("a custom certificate of the CSR could not be parsed")]
    Certificate,
    #[error("the private key is not a {0} PKCS#8 key")]
    PrivateKey(&'static str),
    #[error("the private key does not match the CSR's public key")]
    Mismatch,
}

/// Checks that `pkcs8_der` (a decrypted private key of `key_type`) is the key of `csr_pem`.
pub fn key_matches_csr(
    key_type: KeyType,
    pkcs8_der: &SecretBytes,
    csr_pem: &str,
) -> Result<(), KeyCheckError> {
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(csr_pem.as_bytes()).map_err(|_| KeyCheckError::Csr)?;
    let (_, csr) =
        X509CertificationRequest::from_der(&pem.contents).map_err(|_| KeyCheckError::Csr)?;
    let in_csr = csr
        .certification_request_info
        .subject_pki
        .parsed()
        .map_err(|_| KeyCheckError::Csr)?;
    key_matches_public(key_type, pkcs8_der, in_csr)
}

/// Checks that `pkcs8_der` is the key of the leaf (the first certificate) of `chain_pem`.
pub fn key_matches_certificate(
    key_type: KeyType,
    pkcs8_der: &SecretBytes,
    chain_pem: &str,
) -> Result<(), KeyCheckError> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(chain_pem.as_bytes())
        .map_err(|_| KeyCheckError::Certificate)?;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&pem.contents)
        .map_err(|_| KeyCheckError::Certificate)?;
    let in_cert = cert
        .public_key()
        .parsed()
        .map_err(|_| KeyCheckError::Certificate)?;
    key_matches_public(key_type, pkcs8_der, in_cert)
}

/// The csrd key type a SubjectPublicKeyInfo holds (the curve from its parameters, the RSA
/// size from its modulus), or `None` for any other key.
pub fn key_type_of(spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>) -> Option<KeyType> {
    const P256: &str = "1.2.840.10045.3.1.7";
    const P384: &str = "1.3.132.0.34";
    match spki.parsed().ok()? {
        PublicKey::EC(_) => {
            let curve = spki.algorithm.parameters.as_ref()?.as_oid().ok()?;
            match curve.to_id_string().as_str() {
                P256 => Some(KeyType::P256v1),
                P384 => Some(KeyType::P384),
                _ => None,
            }
        }
        PublicKey::RSA(rsa) => {
            let bits = strip(rsa.modulus).len() * 8;
            KeyType::ALL
                .into_iter()
                .find(|k| k.rsa_bits() == Some(bits))
        }
        _ => None,
    }
}

/// The public half derived from the private key, compared with `public`.
fn key_matches_public(
    key_type: KeyType,
    pkcs8_der: &SecretBytes,
    public_key: PublicKey<'_>,
) -> Result<(), KeyCheckError> {
    let matches = match (key_type, public_key) {
        (KeyType::P256v1, PublicKey::EC(point)) => {
            let secret = p256::SecretKey::from_pkcs8_der(pkcs8_der.expose())
                .map_err(|_| KeyCheckError::PrivateKey("P-256"))?;
            use p256::elliptic_curve::sec1::ToSec1Point;
            let derived = secret.public_key().to_sec1_point(false);
            derived.as_bytes() == point.data()
        }
        (KeyType::P384, PublicKey::EC(point)) => {
            // ring derives the public point from the private scalar (and checks they agree
            // when the PKCS#8 carries the public key too).
            let key = ring::signature::EcdsaKeyPair::from_pkcs8(
                &ring::signature::ECDSA_P384_SHA384_ASN1_SIGNING,
                pkcs8_der.expose(),
                &ring::rand::SystemRandom::new(),
            )
            .map_err(|_| KeyCheckError::PrivateKey("P-384"))?;
            use ring::signature::KeyPair as _;
            key.public_key().as_ref() == point.data()
        }
        (KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096, PublicKey::RSA(public)) => {
            let private = rsa::PrivateKey::from_pkcs8_der(pkcs8_der.expose())
                .map_err(|_| KeyCheckError::PrivateKey("RSA"))?;
            // The primes and exponents must make up the modulus the key claims.
            private
                .validate()
                .map_err(|_| KeyCheckError::PrivateKey("RSA"))?;
            let bits = key_type.rsa_bits().unwrap_or(0);
            private.n().bit_width() as usize == bits
                && strip(&private.n().to_be_bytes()) == strip(public.modulus)
                && strip(&private.e().to_be_bytes()) == strip(public.exponent)
        }
        _ => false,
    };
    if matches {
        Ok(())
    } else {
        Err(KeyCheckError::Mismatch)
    }
}

/// A big-endian integer without its leading zero bytes (DER adds one to keep it positive).
fn strip(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{build_csr, generate_key};
    use crate::domain::CreateCsr;

    fn request(key_type: KeyType) -> CreateCsr {
        let body = serde_json::json!({
            "common_name": "example.com", "country": "US", "state": "California",
            "locality": "San Francisco", "organization": "Example", "sans": ["example.com"],
            "key_type": key_type.as_str(),
        });
        CreateCsr::parse(
            body.to_string().as_bytes(),
            crate::domain::OwnerKind::Account,
            crate::domain::NamePolicy::Permissive,
        )
        .unwrap()
    }

    #[test]
    fn a_key_matches_its_own_csr_and_no_other() {
        for key_type in KeyType::ALL {
            let key = generate_key(key_type).unwrap();
            let other = generate_key(key_type).unwrap();
            let csr = build_csr(&request(key_type), &key).unwrap();
            assert_eq!(key_matches_csr(key_type, &key.pkcs8_der, &csr), Ok(()));
            let (_, pem) = x509_parser::pem::parse_x509_pem(csr.as_bytes()).unwrap();
            let (_, parsed) = X509CertificationRequest::from_der(&pem.contents).unwrap();
            assert_eq!(
                key_type_of(&parsed.certification_request_info.subject_pki),
                Some(key_type)
            );
            assert_eq!(
                key_matches_csr(key_type, &other.pkcs8_der, &csr),
                Err(KeyCheckError::Mismatch)
            );
        }
        let p256 = generate_key(KeyType::P256v1).unwrap();
        let rsa_csr = build_csr(
            &request(KeyType::Rsa2048),
            &generate_key(KeyType::Rsa2048).unwrap(),
        )
        .unwrap();
        assert_eq!(
            key_matches_csr(KeyType::Rsa2048, &p256.pkcs8_der, &rsa_csr),
            Err(KeyCheckError::PrivateKey("RSA"))
        );
        // A key of another size or curve is not the key type's, even of the same family.
        let rsa3072 = generate_key(KeyType::Rsa3072).unwrap();
        assert_eq!(
            key_matches_csr(KeyType::Rsa2048, &rsa3072.pkcs8_der, &rsa_csr),
            Err(KeyCheckError::Mismatch)
        );
        let p384_csr = build_csr(
            &request(KeyType::P384),
            &generate_key(KeyType::P384).unwrap(),
        )
        .unwrap();
        assert_eq!(
            key_matches_csr(KeyType::P384, &p256.pkcs8_der, &p384_csr),
            Err(KeyCheckError::PrivateKey("P-384"))
        );
        assert_eq!(
            key_matches_csr(KeyType::P256v1, &p256.pkcs8_der, "not a CSR"),
            Err(KeyCheckError::Csr)
        );
    }
}
