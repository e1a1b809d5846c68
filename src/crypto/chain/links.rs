//! The signature of each link of a chain (certificate *i* signed with the key of certificate
//! *i + 1*), checked with ring. Every algorithm is named here: a link whose algorithm is not
//! in [`algorithm`]'s table, or whose algorithm does not fit the issuer's key (an ECDSA
//! signature over an RSA key), cannot be verified and is refused, never taken on its names.
//!
//! Checking is split from parsing so that callers can do every cheap check first, drop the
//! links two items share, bound the work by its estimated cost ([`Link::cost_micros`]), and run
//! it in fair-share slots.

use ring::signature::{self, VerificationAlgorithm};
use sha2::{Digest, Sha256};
use x509_parser::certificate::X509Certificate;
use x509_parser::public_key::PublicKey;
use x509_parser::signature_algorithm::RsaSsaPssParams;
use x509_parser::x509::{AlgorithmIdentifier, SubjectPublicKeyInfo};

/// Which link: the SHA-256 of the signed certificate's DER and of its issuer's. Two items of
/// one request with the same intermediate share that link's check.
pub type LinkKey = ([u8; 32], [u8; 32]);

/// One signature to check, owning what it needs (the certificates it came from are gone).
pub struct Link {
    pub key: LinkKey,
    algorithm: &'static dyn VerificationAlgorithm,
    public_key: Vec<u8>,
    message: Vec<u8>,
    signature: Vec<u8>,
    /// Estimated CPU time to verify it, on the machine csrd was measured on.
    pub cost_micros: u32,
}

impl Link {
    /// What it holds in memory.
    pub fn heap_bytes(&self) -> usize {
        64 + self.public_key.len() + self.message.len() + self.signature.len()
    }

    /// Whether the signature verifies.
    pub fn verify(&self) -> bool {
        signature::UnparsedPublicKey::new(self.algorithm, &self.public_key)
            .verify(&self.message, &self.signature)
            .is_ok()
    }
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("cost_micros", &self.cost_micros)
            .finish_non_exhaustive()
    }
}

pub fn digest(der: &[u8]) -> [u8; 32] {
    Sha256::digest(der).into()
}

/// Why a link cannot be checked: the algorithm, by name or dotted OID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unverifiable(pub String);

/// The check that `cert` (DER digest `cert_digest`) was signed with `issuer`'s key.
pub fn link(
    cert: &X509Certificate<'_>,
    cert_digest: [u8; 32],
    issuer: &SubjectPublicKeyInfo<'_>,
    issuer_digest: [u8; 32],
) -> Result<Link, Unverifiable> {
    same_algorithm_inside(cert)?;
    let (algorithm, cost_micros) = algorithm(&cert.signature_algorithm, issuer)?;
    Ok(Link {
        key: (cert_digest, issuer_digest),
        algorithm,
        public_key: issuer.subject_public_key.data.to_vec(),
        message: cert.tbs_certificate.as_ref().to_vec(),
        signature: cert.signature_value.data.to_vec(),
        cost_micros,
    })
}

/// Whether csrd knows `alg` as a signature algorithm at all (whatever the key), for a leaf
/// that comes alone: its issuer is not there to check it with, but an unknown or broken
/// algorithm (SHA-1, MD5) is still refused.
pub fn known_algorithm(alg: &AlgorithmIdentifier<'_>) -> Result<(), Unverifiable> {
    let oid = alg.algorithm.to_id_string();
    match oid.as_str() {
        RSA_SHA256 | RSA_SHA384 | RSA_SHA512 | ECDSA_SHA256 | ECDSA_SHA384 => Ok(()),
        ED25519 => ed25519_parameters(alg),
        RSA_PSS => pss_hash(alg).map(|_| ()),
        _ => Err(unverifiable(&oid)),
    }
}

/// RFC 8410: Ed25519's AlgorithmIdentifier has no parameters (not even NULL).
fn ed25519_parameters(alg: &AlgorithmIdentifier<'_>) -> Result<(), Unverifiable> {
    match alg.parameters {
        None => Ok(()),
        Some(_) => Err(Unverifiable(
            "Ed25519 with parameters (RFC 8410 allows none)".into(),
        )),
    }
}

/// RFC 5280 4.1.1.2: the algorithm outside the signed part must be the one inside it, or
/// the signature is over a claim the certificate does not make. Checked for every
/// certificate, a lone leaf's too (whose signature csrd cannot check).
pub fn same_algorithm_inside(cert: &X509Certificate<'_>) -> Result<(), Unverifiable> {
    if cert.signature_algorithm == cert.tbs_certificate.signature {
        Ok(())
    } else {
        Err(Unverifiable(
            "a signature algorithm that differs from the one the certificate names inside".into(),
        ))
    }
}

const RSA_KEY: &str = "1.2.840.113549.1.1.1";
const RSA_SHA256: &str = "1.2.840.113549.1.1.11";
const RSA_SHA384: &str = "1.2.840.113549.1.1.12";
const RSA_SHA512: &str = "1.2.840.113549.1.1.13";
const RSA_PSS: &str = "1.2.840.113549.1.1.10";
const EC_KEY: &str = "1.2.840.10045.2.1";
const P256: &str = "1.2.840.10045.3.1.7";
const P384: &str = "1.3.132.0.34";
const ECDSA_SHA256: &str = "1.2.840.10045.4.3.2";
const ECDSA_SHA384: &str = "1.2.840.10045.4.3.3";
const ED25519: &str = "1.3.101.112";
const SHA256: &str = "2.16.840.1.101.3.4.2.1";
const SHA384: &str = "2.16.840.1.101.3.4.2.2";
const SHA512: &str = "2.16.840.1.101.3.4.2.3";
const MGF1: &str = "1.2.840.113549.1.1.8";

/// What csrd's table calls an algorithm it does not verify, for the error message.
fn unverifiable(oid: &str) -> Unverifiable {
    let name = match oid {
        "1.2.840.113549.1.1.5" | "1.3.14.3.2.29" => "RSA with SHA-1 (forgeable)",
        "1.2.840.113549.1.1.4" => "RSA with MD5 (forgeable)",
        "1.2.840.10045.4.1" => "ECDSA with SHA-1 (forgeable)",
        "1.2.840.10045.4.3.4" => "ECDSA with SHA-512",
        "1.2.840.10040.4.3" | "2.16.840.1.101.3.4.3.2" => "DSA",
        "1.3.101.113" => "Ed448",
        other => other,
    };
    Unverifiable(name.to_owned())
}

/// The ring algorithm for a signature of kind `sig` by the key `issuer`, and its estimated
/// cost.
fn algorithm(
    sig: &AlgorithmIdentifier<'_>,
    issuer: &SubjectPublicKeyInfo<'_>,
) -> Result<(&'static dyn VerificationAlgorithm, u32), Unverifiable> {
    let sig_oid = sig.algorithm.to_id_string();
    let key_oid = issuer.algorithm.algorithm.to_id_string();
    let mismatch = || {
        Unverifiable(format!(
            "a {} signature over a key of another type ({})",
            name(&sig_oid),
            key_oid
        ))
    };
    match sig_oid.as_str() {
        RSA_SHA256 | RSA_SHA384 | RSA_SHA512 | RSA_PSS => {
            if key_oid != RSA_KEY {
                return Err(mismatch());
            }
            let cost = rsa_cost(issuer).ok_or_else(mismatch)?;
            let alg: &'static dyn VerificationAlgorithm = match sig_oid.as_str() {
                RSA_SHA256 => &signature::RSA_PKCS1_2048_8192_SHA256,
                RSA_SHA384 => &signature::RSA_PKCS1_2048_8192_SHA384,
                RSA_SHA512 => &signature::RSA_PKCS1_2048_8192_SHA512,
                _ => match pss_hash(sig)? {
                    SHA256 => &signature::RSA_PSS_2048_8192_SHA256,
                    SHA384 => &signature::RSA_PSS_2048_8192_SHA384,
                    _ => &signature::RSA_PSS_2048_8192_SHA512,
                },
            };
            Ok((alg, cost))
        }
        ECDSA_SHA256 | ECDSA_SHA384 => {
            let curve = issuer
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string());
            if key_oid != EC_KEY {
                return Err(mismatch());
            }
            let sha384 = sig_oid == ECDSA_SHA384;
            match (curve.as_deref(), sha384) {
                (Some(P256), false) => Ok((&signature::ECDSA_P256_SHA256_ASN1, COST_P256)),
                (Some(P256), true) => Ok((&signature::ECDSA_P256_SHA384_ASN1, COST_P256)),
                (Some(P384), false) => Ok((&signature::ECDSA_P384_SHA256_ASN1, COST_P384)),
                (Some(P384), true) => Ok((&signature::ECDSA_P384_SHA384_ASN1, COST_P384)),
                (curve, _) => Err(Unverifiable(format!(
                    "ECDSA over the curve {} (csrd verifies P-256 and P-384)",
                    curve.unwrap_or("(none named)")
                ))),
            }
        }
        ED25519 if key_oid == ED25519 => {
            ed25519_parameters(sig)?;
            Ok((&signature::ED25519, COST_ED25519))
        }
        ED25519 => Err(mismatch()),
        other => Err(unverifiable(other)),
    }
}

fn name(sig_oid: &str) -> &str {
    match sig_oid {
        RSA_SHA256 | RSA_SHA384 | RSA_SHA512 | RSA_PSS => "RSA",
        ECDSA_SHA256 | ECDSA_SHA384 => "ECDSA",
        ED25519 => "Ed25519",
        other => other,
    }
}

/// The hash of RSASSA-PSS parameters ring verifies: SHA-256/384/512, MGF1 with the same
/// hash, a salt as long as the hash, trailer 1 (RFC 4055's recommended profile; ring checks
/// the salt length itself).
fn pss_hash(sig: &AlgorithmIdentifier<'_>) -> Result<&'static str, Unverifiable> {
    let bad = || {
        Unverifiable(
            "RSASSA-PSS with parameters other than SHA-256/384/512 and MGF1 of the same hash"
                .into(),
        )
    };
    let params = sig.parameters.as_ref().ok_or_else(bad)?;
    let pss = RsaSsaPssParams::try_from(params).map_err(|_| bad())?;
    let hash = pss.hash_algorithm_oid().to_id_string();
    let mgf = pss.mask_gen_algorithm().map_err(|_| bad())?;
    let (expected_salt, hash) = match hash.as_str() {
        SHA256 => (32, SHA256),
        SHA384 => (48, SHA384),
        SHA512 => (64, SHA512),
        _ => return Err(bad()),
    };
    if mgf.mgf.to_id_string() != MGF1
        || mgf.hash.to_id_string() != hash
        || pss.salt_length() != expected_salt
        || pss.trailer_field() != 1
    {
        return Err(bad());
    }
    Ok(hash)
}

// Verification times of one signature with ring, in microseconds, on csrd's reference
// machine (2 cores; `csrd bench verify`, 2026-12-04: P-256 34, P-384 457, Ed25519 29, RSA-2048
// 15, RSA-3072 33, RSA-4096 58), rounded up: an estimate may err high, never low.
const COST_P256: u32 = 40;
const COST_P384: u32 = 500;
const COST_ED25519: u32 = 35;

/// RSA's cost grows with the square of the modulus, in two parts: a fixed one (setting up the
/// modulus for Montgomery arithmetic) and one per square-and-multiply step of the exponent.
/// Fitted on RSA-8192 with e = 3 (160 µs) and e = 65537 (330 µs), it gives RSA-2048 with 65537
/// 22 µs (measured 15) and RSA-4096 87 µs (measured 58): high, never low. `None` for a key ring
/// does not take (under 2048 or over 8192 bits, an even exponent, or one over 33 bits).
fn rsa_cost(spki: &SubjectPublicKeyInfo<'_>) -> Option<u32> {
    const SETUP_MICROS: f64 = 7.5;
    const STEP_MICROS: f64 = 0.75;
    let Ok(PublicKey::RSA(rsa)) = spki.parsed() else {
        return None;
    };
    let modulus = strip(rsa.modulus);
    let exponent = strip(rsa.exponent);
    let bits = modulus.len() * 8 - modulus.first().map_or(8, |b| b.leading_zeros() as usize);
    if !(2048..=8192).contains(&bits) || exponent.is_empty() || exponent.len() > 5 {
        return None;
    }
    let e = exponent
        .iter()
        .fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    if e < 3 || e % 2 == 0 || e >= 1 << 33 {
        return None;
    }
    let steps = f64::from((64 - e.leading_zeros()) + e.count_ones());
    let size = (bits as f64 / 2048.0).powi(2);
    Some((size * (SETUP_MICROS + STEP_MICROS * steps)).ceil() as u32)
}

fn strip(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::FromDer;

    fn der(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let len = content.len();
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes: Vec<u8> = len
                .to_be_bytes()
                .into_iter()
                .skip_while(|b| *b == 0)
                .collect();
            out.push(0x80 | bytes.len() as u8);
            out.extend(bytes);
        }
        out.extend_from_slice(content);
        out
    }

    /// An RSA SubjectPublicKeyInfo with a `bits`-bit modulus (not a real one: only its size
    /// matters here) and the exponent `e`.
    fn rsa_spki(bits: usize, e: u64) -> Vec<u8> {
        let mut modulus = vec![0x00, 0x80];
        modulus.resize(bits / 8 + 1, 0x01);
        let exponent: Vec<u8> = e
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        let key = der(0x30, &[der(0x02, &modulus), der(0x02, &exponent)].concat());
        let mut bit_string = vec![0x00];
        bit_string.extend(key);
        let algorithm = der(
            0x30,
            &[
                vec![
                    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
                ],
                vec![0x05, 0x00],
            ]
            .concat(),
        );
        der(0x30, &[algorithm, der(0x03, &bit_string)].concat())
    }

    fn cost(bits: usize, e: u64) -> Option<u32> {
        let spki = rsa_spki(bits, e);
        let (_, parsed) = SubjectPublicKeyInfo::from_der(&spki).unwrap();
        rsa_cost(&parsed)
    }

    #[test]
    fn rsa_estimates_are_at_least_what_ring_was_measured_to_take() {
        // Measured on the reference machine (µs): RSA-2048 and 4096 with 65537 (bench
        // verify), RSA-8192 with 3 and with 65537.
        for (bits, e, measured) in [
            (2048, 65537, 15),
            (4096, 65537, 58),
            (8192, 3, 160),
            (8192, 65537, 330),
        ] {
            let estimate = cost(bits, e).unwrap();
            assert!(estimate >= measured, "RSA-{bits} e={e}: {estimate} µs");
        }
        assert!(
            cost(8192, (1 << 33) - 1).unwrap() < 1_000,
            "within a chain's budget"
        );
        for (bits, e) in [(1024, 65537), (2048, 2), (2048, 1 << 33), (16384, 3)] {
            assert_eq!(cost(bits, e), None, "RSA-{bits} e={e} is refused");
        }
    }
}
