//! A local test CA that signs csrd's CSRs, as a customer's CA would.

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType, IsCa, Issuer,
    KeyPair, SanType, date_time_ymd,
};

pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pub pem: String,
}

impl TestCa {
    pub fn new() -> Self {
        Self::named("csrd test CA root", KeyPair::generate().unwrap())
    }

    /// A self-signed root named `name` (O "csrd test CA"), holding `key`.
    pub fn named(name: &str, key: KeyPair) -> Self {
        let params = ca_params(name);
        let pem = params.self_signed(&key).unwrap().pem();
        Self {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    /// A root holding an RSA-2048 key (made by csrd's own key generation).
    pub fn rsa(name: &str) -> Self {
        Self::named(name, rsa_key())
    }

    /// An intermediate CA named `name` holding `key`, issued by this one (its `pem` is its own
    /// certificate only).
    pub fn issue_ca(&self, name: &str, key: KeyPair) -> Self {
        let params = ca_params(name);
        let pem = params.signed_by(&key, &self.issuer).unwrap().pem();
        Self {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    /// The leaf for `csr_pem` with this serial, valid between the two years.
    pub fn sign_serial_between(
        &self,
        csr_pem: &str,
        serial: Vec<u8>,
        from_year: i32,
        to_year: i32,
    ) -> String {
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem).unwrap();
        csr.params.not_before = date_time_ymd(from_year, 1, 1);
        csr.params.not_after = date_time_ymd(to_year, 1, 1);
        csr.params.serial_number = Some(rcgen::SerialNumber::from(serial));
        csr.signed_by(&self.issuer).unwrap().pem()
    }

    /// The leaf for `csr_pem` (its subject, SANs and key), valid between the two years.
    pub fn sign_between(&self, csr_pem: &str, from_year: i32, to_year: i32) -> String {
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem).unwrap();
        csr.params.not_before = date_time_ymd(from_year, 1, 1);
        csr.params.not_after = date_time_ymd(to_year, 1, 1);
        csr.params.serial_number = Some(random_serial());
        csr.signed_by(&self.issuer).unwrap().pem()
    }

    /// The leaf for `csr_pem` with this serial number (valid 2024–2090).
    pub fn sign_with_serial(&self, csr_pem: &str, serial: Vec<u8>) -> String {
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem).unwrap();
        csr.params.not_before = date_time_ymd(2024, 1, 1);
        csr.params.not_after = date_time_ymd(2090, 1, 1);
        csr.params.serial_number = Some(rcgen::SerialNumber::from(serial));
        csr.signed_by(&self.issuer).unwrap().pem()
    }

    /// The leaf for `csr_pem`, valid from 2024 to the given day (year, month, day).
    pub fn sign_until(&self, csr_pem: &str, (y, m, d): (i32, u8, u8)) -> String {
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem).unwrap();
        csr.params.not_before = date_time_ymd(2024, 1, 1);
        csr.params.not_after = date_time_ymd(y, m, d);
        csr.params.serial_number = Some(random_serial());
        csr.signed_by(&self.issuer).unwrap().pem()
    }

    /// A leaf for the CSR's key with other names than it asked for (valid 2024–2090).
    pub fn sign_names(&self, csr_pem: &str, names: &[&str]) -> String {
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem).unwrap();
        csr.params.subject_alt_names = names
            .iter()
            .map(|n| SanType::DnsName((*n).try_into().unwrap()))
            .collect();
        csr.params.not_before = date_time_ymd(2024, 1, 1);
        csr.params.not_after = date_time_ymd(2090, 1, 1);
        csr.params.serial_number = Some(random_serial());
        csr.signed_by(&self.issuer).unwrap().pem()
    }

    /// The chain a CA returns: the leaf (valid 2024–2090), then the CA's certificate.
    pub fn sign(&self, csr_pem: &str) -> String {
        format!("{}{}", self.sign_between(csr_pem, 2024, 2090), self.pem)
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "csrd test CA");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.not_before = date_time_ymd(2024, 1, 1);
    params.not_after = date_time_ymd(2099, 1, 1);
    params
}

/// An RSA-2048 key pair, from csrd's key generation (rcgen makes no RSA keys).
pub fn rsa_key() -> KeyPair {
    let key = csrd::crypto::generate_key(csrd::domain::KeyType::Rsa2048).unwrap();
    KeyPair::try_from(key.pkcs8_der.expose()).unwrap()
}

/// A P-384 key pair.
pub fn p384_key() -> KeyPair {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap()
}

/// `pem` (one certificate) with every occurrence of `from` in its DER replaced by `to`, of the
/// same length (no DER length moves): a certificate made to claim what it does not.
pub fn patched_pem(pem: &str, from: &[u8], to: &[u8]) -> String {
    assert_eq!(from.len(), to.len());
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
    let mut der = block.contents;
    let mut i = 0;
    let mut found = false;
    while i + from.len() <= der.len() {
        if &der[i..i + from.len()] == from {
            der[i..i + from.len()].copy_from_slice(to);
            found = true;
            i += from.len();
        } else {
            i += 1;
        }
    }
    assert!(found, "pattern not found");
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|l| std::str::from_utf8(l).unwrap())
        .collect();
    format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        lines.join("\n")
    )
}

/// A random serial, as a real CA gives each certificate (rcgen's default derives it from the
/// key, which would make two certificates for one key look like one).
fn random_serial() -> rcgen::SerialNumber {
    rcgen::SerialNumber::from(uuid::Uuid::new_v4().as_bytes()[..15].to_vec())
}

/// A self-signed certificate for the key `csr_pem` does not hold: what a client who skipped
/// the CA would upload.
pub fn self_signed(name: &str) -> String {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.self_signed(&key).unwrap().pem()
}

/// A leaf signed by its own key but naming another issuer: self-signed in all but name.
pub fn self_signed_under_another_name(name: &str) -> String {
    let key = KeyPair::generate().unwrap();
    let same_key = KeyPair::from_pem(&key.serialize_pem()).unwrap();
    let mut issuer_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    issuer_params
        .distinguished_name
        .push(DnType::CommonName, "a CA in name only");
    let issuer = Issuer::new(issuer_params, same_key);
    let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.signed_by(&key, &issuer).unwrap().pem()
}
