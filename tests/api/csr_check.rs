//! Parses a returned CSR and checks it the way a CA would.

use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
    OID_PKCS1_SHA256WITHRSA, OID_SIG_ECDSA_WITH_SHA256, OID_SIG_ECDSA_WITH_SHA384,
    OID_X509_COMMON_NAME, OID_X509_COUNTRY_NAME, OID_X509_LOCALITY_NAME,
    OID_X509_ORGANIZATION_NAME, OID_X509_ORGANIZATIONAL_UNIT, OID_X509_STATE_OR_PROVINCE_NAME,
};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;

pub struct ParsedCsr {
    /// (short name, value) in the order they appear in the subject.
    pub subject: Vec<(&'static str, String)>,
    pub sans: Vec<String>,
    pub key_type: &'static str,
    pub rsa_bits: Option<usize>,
    pub rsa_exponent: Option<Vec<u8>>,
    pub spki_der: Vec<u8>,
}

pub fn pem_to_der(pem: &str) -> Vec<u8> {
    use base64::Engine;
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(
        pem.starts_with("-----BEGIN CERTIFICATE REQUEST-----\n"),
        "{pem}"
    );
    assert!(
        pem.trim_end()
            .ends_with("-----END CERTIFICATE REQUEST-----")
    );
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap()
}

/// Parses, verifies the self-signature, and extracts what the tests assert on.
pub fn parse_csr(pem: &str) -> ParsedCsr {
    let der = pem_to_der(pem);
    let (rest, csr) = X509CertificationRequest::from_der(&der).expect("CSR parses");
    assert!(rest.is_empty());
    csr.verify_signature().expect("CSR self-signature verifies");
    let info = &csr.certification_request_info;
    let subject = info
        .subject
        .iter_attributes()
        .map(|attr| {
            let oid = attr.attr_type();
            let name = if *oid == OID_X509_COUNTRY_NAME {
                "C"
            } else if *oid == OID_X509_STATE_OR_PROVINCE_NAME {
                "ST"
            } else if *oid == OID_X509_LOCALITY_NAME {
                "L"
            } else if *oid == OID_X509_ORGANIZATION_NAME {
                "O"
            } else if *oid == OID_X509_ORGANIZATIONAL_UNIT {
                "OU"
            } else if *oid == OID_X509_COMMON_NAME {
                "CN"
            } else {
                panic!("unexpected subject attribute {oid}")
            };
            (name, attr.as_str().unwrap().to_owned())
        })
        .collect();
    let mut sans = Vec::new();
    let mut extension_count = 0;
    for ext in csr.requested_extensions().into_iter().flatten() {
        extension_count += 1;
        match ext {
            ParsedExtension::SubjectAlternativeName(san) => {
                for name in &san.general_names {
                    match name {
                        GeneralName::DNSName(n) => sans.push((*n).to_owned()),
                        other => panic!("unexpected SAN entry {other:?}"),
                    }
                }
            }
            other => panic!("unexpected requested extension {other:?}"),
        }
    }
    assert_eq!(
        extension_count, 1,
        "exactly one requested extension (subjectAltName)"
    );
    let spki = &info.subject_pki;
    let (key_type, rsa_bits, rsa_exponent) = match spki.parsed().unwrap() {
        PublicKey::RSA(rsa) => {
            assert_eq!(spki.algorithm.algorithm, OID_PKCS1_RSAENCRYPTION);
            assert_eq!(csr.signature_algorithm.algorithm, OID_PKCS1_SHA256WITHRSA);
            let key_type = match rsa.key_size() {
                2048 => "rsa2048",
                3072 => "rsa3072",
                4096 => "rsa4096",
                other => panic!("unexpected RSA size {other}"),
            };
            (
                key_type,
                Some(rsa.key_size()),
                Some(
                    rsa.exponent
                        .iter()
                        .copied()
                        .skip_while(|b| *b == 0)
                        .collect(),
                ),
            )
        }
        PublicKey::EC(_) => {
            assert_eq!(spki.algorithm.algorithm, OID_KEY_TYPE_EC_PUBLIC_KEY);
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .unwrap()
                .as_oid()
                .unwrap();
            if curve == OID_EC_P256 {
                assert_eq!(csr.signature_algorithm.algorithm, OID_SIG_ECDSA_WITH_SHA256);
                ("p256v1", None, None)
            } else {
                assert_eq!(curve, OID_NIST_EC_P384, "P-256 or P-384 curve");
                assert_eq!(csr.signature_algorithm.algorithm, OID_SIG_ECDSA_WITH_SHA384);
                ("p384", None, None)
            }
        }
        other => panic!("unexpected key {other:?}"),
    };
    ParsedCsr {
        spki_der: spki.raw.to_vec(),
        subject,
        sans,
        key_type,
        rsa_bits,
        rsa_exponent,
    }
}

/// What `openssl req -noout -text` says of a CSR's key and signature: `(key line, curve
/// line or "", signature algorithm)`, e.g. `("Public-Key: (3072 bit)", "", "sha256WithRSAEncryption")`.
pub fn openssl_key_facts(pem: &str) -> (String, String, String) {
    let path = std::env::temp_dir().join(format!("csrd-test-{}.csr", uuid::Uuid::new_v4()));
    std::fs::write(&path, pem).unwrap();
    let out = std::process::Command::new("openssl")
        .args(["req", "-noout", "-text", "-verify", "-in"])
        .arg(&path)
        .output()
        .expect("openssl is installed");
    let _ = std::fs::remove_file(&path);
    assert!(out.status.success(), "openssl req -verify failed");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = |prefix: &str| {
        text.lines()
            .map(str::trim)
            .find(|l| l.starts_with(prefix))
            .unwrap_or_default()
            .to_owned()
    };
    let signature = line("Signature Algorithm:")
        .trim_start_matches("Signature Algorithm:")
        .trim()
        .to_owned();
    (line("Public-Key:"), line("NIST CURVE:"), signature)
}

/// `openssl req -noout -verify`, the check users run themselves.
pub fn openssl_verifies(pem: &str) -> bool {
    let dir = std::env::temp_dir().join(format!("csrd-test-{}.csr", uuid::Uuid::new_v4()));
    std::fs::write(&dir, pem).unwrap();
    let out = std::process::Command::new("openssl")
        .args(["req", "-noout", "-verify", "-in"])
        .arg(&dir)
        .output()
        .expect("openssl is installed");
    let _ = std::fs::remove_file(&dir);
    out.status.success()
}
