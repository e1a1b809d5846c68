//! Private key generation: the one place that decides which crate makes keys.
//!
//! RSA keys come from the `rsa` crate (0.10), the fastest keygen measured on our hardware (see
//! docs/performance.md, "Key generation"). RUSTSEC-2023-0071 (Marvin) is a timing side channel in
//! the `rsa` crate's *decryption and signing*; csrd uses `rsa` only to generate the key and does
//! every signature with ring or aws-lc (both constant-time), so the advisory does not reach us.
//! An RSA-2048 CSR is signed by ring (through rcgen), RSA-3072 and RSA-4096 ones by aws-lc, whose
//! AVX-512 modular arithmetic signs with a 4096-bit key in about a third of ring's time: that
//! signature is paid at request time even on a warm key pool.
//! P-256 and P-384 keys come from aws-lc (aws-lc-rs), which also signs their CSRs: ring can
//! only make an EC key as PKCS#8 and sign after parsing it back, which derives the public point
//! a second time, and its P-384 has no assembly. aws-lc makes a P-256 key + CSR in about 0.8×
//! ring's time and a P-384 one in about 0.1× (docs/performance.md, "Key generation"). Every RSA
//! size (2048, 3072, 4096) is made the same way and its CSR signed with SHA-256; P-384's with
//! ECDSA-SHA384.

use std::fmt;

use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1_SIGNING, EcdsaKeyPair, KeyPair as _,
};
use rcgen::{
    KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_RSA_SHA256, PublicKeyData,
    SignatureAlgorithm, SigningKey,
};
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
    #[error("EC key generation failed")]
    Ec,
}

/// A freshly generated private key: its PKCS#8 DER (to be sealed) and a signer for the CSR.
pub struct PrivateKey {
    pub key_type: KeyType,
    pub pkcs8_der: SecretBytes,
    pub signer: Signer,
}

/// What signs a key's CSR: ring (through rcgen) for RSA-2048, aws-lc for the others.
pub enum Signer {
    // Boxed: rcgen's key pair is ten times the size of aws-lc's handle.
    Rsa(Box<KeyPair>),
    LargeRsa(aws_lc_rs::rsa::KeyPair),
    Ec {
        key: EcdsaKeyPair,
        algorithm: &'static SignatureAlgorithm,
    },
}

impl PublicKeyData for Signer {
    fn der_bytes(&self) -> &[u8] {
        match self {
            Signer::Rsa(key) => key.der_bytes(),
            // Both are the PKCS#1 RSAPublicKey, as rcgen's RSA keys give it.
            Signer::LargeRsa(key) => key.public_key().as_ref(),
            Signer::Ec { key, .. } => key.public_key().as_ref(),
        }
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        match self {
            Signer::Rsa(key) => key.algorithm(),
            Signer::LargeRsa(_) => &PKCS_RSA_SHA256,
            Signer::Ec { algorithm, .. } => algorithm,
        }
    }
}

impl SigningKey for Signer {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        match self {
            Signer::Rsa(key) => key.sign(msg),
            Signer::LargeRsa(key) => {
                let mut signature = vec![0; key.public_modulus_len()];
                key.sign(
                    &aws_lc_rs::signature::RSA_PKCS1_SHA256,
                    &aws_lc_rs::rand::SystemRandom::new(),
                    msg,
                    &mut signature,
                )
                .map_err(|_| rcgen::Error::RingUnspecified)?;
                Ok(signature)
            }
            Signer::Ec { key, .. } => key
                .sign(&aws_lc_rs::rand::SystemRandom::new(), msg)
                .map(|signature| signature.as_ref().to_vec())
                .map_err(|_| rcgen::Error::RingUnspecified),
        }
    }
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
        let signer = if bits > 2048 {
            Signer::LargeRsa(
                aws_lc_rs::rsa::KeyPair::from_pkcs8(pkcs8_der.expose())
                    .map_err(|e| KeygenError::Encoding(e.to_string()))?,
            )
        } else {
            Signer::Rsa(Box::new(KeyPair::from_pkcs8_der_and_sign_algo(
                &pkcs8_der.expose().into(),
                &PKCS_RSA_SHA256,
            )?))
        };
        return Ok(PrivateKey {
            key_type,
            pkcs8_der,
            signer,
        });
    }
    let (curve, algorithm) = match key_type {
        KeyType::P384 => (&ECDSA_P384_SHA384_ASN1_SIGNING, &PKCS_ECDSA_P384_SHA384),
        _ => (&ECDSA_P256_SHA256_ASN1_SIGNING, &PKCS_ECDSA_P256_SHA256),
    };
    let key = EcdsaKeyPair::generate(curve).map_err(|_| KeygenError::Ec)?;
    // aws-lc's document wipes itself on drop; the copy is a SecretBytes, which does too.
    let pkcs8 = key.to_pkcs8v1().map_err(|_| KeygenError::Ec)?;
    Ok(PrivateKey {
        key_type,
        pkcs8_der: SecretBytes::new(pkcs8.as_ref().to_vec()),
        signer: Signer::Ec { key, algorithm },
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
            assert_ne!(a.signer.der_bytes(), b.signer.der_bytes());
        }
    }

    /// The sealed PKCS#8 must read back everywhere a key is used: rcgen and ring (the signers),
    /// and its public half must be the signer's.
    #[test]
    fn every_key_reads_back_as_the_signers_pkcs8() {
        for kt in KeyType::ALL {
            let key = generate_key(kt).unwrap();
            let algorithm = key.signer.algorithm();
            let back =
                KeyPair::from_pkcs8_der_and_sign_algo(&key.pkcs8_der.expose().into(), algorithm)
                    .unwrap();
            assert_eq!(back.der_bytes(), key.signer.der_bytes(), "{kt:?}");
        }
    }

    /// Each signer's signature checks out under the public key it reports, with the algorithm
    /// the CSR names (RSA-2048 is ring's, the larger RSA keys and the curves aws-lc's).
    #[test]
    fn every_signature_verifies_under_the_signers_public_key() {
        use aws_lc_rs::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
        for kt in KeyType::ALL {
            let key = generate_key(kt).unwrap();
            let verifier: &dyn VerificationAlgorithm = match kt {
                KeyType::P256v1 => &signature::ECDSA_P256_SHA256_ASN1,
                KeyType::P384 => &signature::ECDSA_P384_SHA384_ASN1,
                _ => &signature::RSA_PKCS1_2048_8192_SHA256,
            };
            let message = b"a certification request's info";
            let signed = key.signer.sign(message).unwrap();
            UnparsedPublicKey::new(verifier, key.signer.der_bytes())
                .verify(message, &signed)
                .unwrap_or_else(|_| panic!("{kt:?}"));
            assert!(
                UnparsedPublicKey::new(verifier, key.signer.der_bytes())
                    .verify(b"another message", &signed)
                    .is_err(),
                "{kt:?}"
            );
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
