//! Building and signing the PKCS#10 request.

use rcgen::{CertificateParams, DistinguishedName, DnType, DnValue, SanType};

use super::PrivateKey;
use crate::domain::{CreateCsr, Subject};

#[derive(Debug, thiserror::Error)]
pub enum CsrError {
    #[error("CSR field rejected by the encoder: {0}")]
    Encoding(#[from] rcgen::Error),
}

/// Signs a CSR for `request` with `key`: subject C, ST, L, O, [OU,] CN in that order, and a
/// subjectAltName of exactly the requested dNSNames in the extensionRequest attribute.
pub fn build_csr(request: &CreateCsr, key: &PrivateKey) -> Result<String, CsrError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(&request.subject)?;
    params.subject_alt_names = request
        .sans
        .iter()
        .map(|n| Ok(SanType::DnsName(n.as_str().try_into()?)))
        .collect::<Result<_, rcgen::Error>>()?;
    let csr = params.serialize_request(&key.signer)?;
    Ok(csr.pem()?)
}

fn distinguished_name(s: &Subject) -> Result<DistinguishedName, rcgen::Error> {
    let mut dn = DistinguishedName::new();
    // RFC 5280: countryName is a PrintableString; the rest are UTF8String.
    dn.push(
        DnType::CountryName,
        DnValue::PrintableString(s.country.as_str().try_into()?),
    );
    dn.push(DnType::StateOrProvinceName, s.state.as_str());
    dn.push(DnType::LocalityName, s.locality.as_str());
    dn.push(DnType::OrganizationName, s.organization.as_str());
    if let Some(ou) = &s.organizational_unit {
        dn.push(DnType::OrganizationalUnitName, ou.as_str());
    }
    dn.push(DnType::CommonName, s.common_name.as_str());
    Ok(dn)
}
