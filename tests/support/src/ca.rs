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
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "csrd test CA");
        params
            .distinguished_name
            .push(DnType::CommonName, "csrd test CA root");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.not_before = date_time_ymd(2024, 1, 1);
        params.not_after = date_time_ymd(2099, 1, 1);
        let pem = params.self_signed(&key).unwrap().pem();
        Self {
            issuer: Issuer::new(params, key),
            pem,
        }
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
