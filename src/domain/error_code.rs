//! Every error code csrd answers with, in one place: Cloudflare's custom-CSR codes, the
//! gateway codes Cloudflare's v4 API uses on every endpoint, and csrd's own 1422.
//!
//! The HTTP status that goes with a code is the HTTP adapter's business; this is only the
//! vocabulary the domain and the adapters share.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The request is malformed: body not JSON or not an object, a bad optional field, a bad
    /// query parameter or header, a body too large or of the wrong type.
    InvalidRequest = 1400,
    InvalidCountry = 1405,
    InvalidState = 1406,
    InvalidLocality = 1407,
    InvalidOrganization = 1408,
    InvalidCommonName = 1409,
    CommonNameTooLong = 1410,
    /// `sans` missing, empty or not an array.
    MissingSans = 1411,
    InvalidSan = 1412,
    NonAsciiSan = 1413,
    ReservedTld = 1414,
    NoRegistrableDomain = 1415,
    ExampleDomain = 1416,
    UnknownKeyType = 1417,
    MalformedCsrId = 1418,
    CsrNotFound = 1419,
    /// Cloudflare's 409: the custom CSR's key is used by a custom certificate.
    CsrInUse = 1420,
    /// Cloudflare's "Invalid certificate" (custom certificates): a malformed or unknown
    /// custom certificate id.
    InvalidCertificate = 1002,
    /// Cloudflare's "This certificate has already been submitted."
    AlreadySubmitted = 1220,
    /// Cloudflare's custom-hostname codes for an uploaded certificate, used for custom
    /// certificates too: cannot be parsed, empty, not the key's, bad or unknown CSR id.
    CertificateUnparsable = 1426,
    CertificateEmpty = 1427,
    CertificateKeyMismatch = 1429,
    InvalidCustomCsrId = 1430,
    CustomCsrNotFound = 1431,
    /// Cloudflare's "The SSL attribute is invalid" (bundle_method, type, geo_restrictions…).
    InvalidSslAttribute = 1434,
    /// csrd's own (1440–1445): key material offered, a chain over ten certificates, a
    /// self-signed leaf, an expired leaf, a leaf not yet valid, a chain out of order (or a
    /// link whose signature does not verify with the next certificate's key).
    KeyMaterialRefused = 1440,
    ChainTooLong = 1441,
    SelfSignedLeaf = 1442,
    CertificateExpired = 1443,
    CertificateNotYetValid = 1444,
    ChainOutOfOrder = 1445,
    /// csrd's own, in `messages` (not an error): the certificate leaves some of the CSR's
    /// names uncovered.
    HostsNotCovered = 1446,
    /// csrd's own: a certificate cap would be passed (certificates per custom CSR, or bytes of
    /// certificates per tenant; `csrd tenant limits` raises them).
    CertificateQuota = 1447,
    /// csrd's own: checking the request's chains would take more CPU than one request may
    /// (1 ms per chain, plus 50 ms).
    VerificationBudget = 1448,
    /// csrd's own (1460–1463), key delivery: a bad key recipient enrollment (the age
    /// recipient, its name or hosts), a malformed recipient id, an unknown one (or another
    /// tenant's), and a recipient that may not receive (pending approval, or revoked).
    InvalidKeyRecipient = 1460,
    MalformedRecipientId = 1461,
    RecipientNotFound = 1462,
    RecipientNotActive = 1463,
    /// csrd's own: an Idempotency-Key reused with a different request.
    IdempotencyKeyReused = 1422,
    /// Anything the client cannot fix (opaque; the cause is in the log).
    Internal = 1500,
    /// Cloudflare's "Please wait and consider throttling your request speed" (429).
    RateLimited = 971,
    MalformedCredentials = 6003,
    NoRoute = 7000,
    MethodNotAllowed = 7001,
    MalformedObjectId = 7003,
    MissingCredentials = 9106,
    InvalidCredentials = 9109,
    Forbidden = 10000,
}

impl ErrorCode {
    pub const fn as_u32(self) -> u32 {
        self as u32
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_u32())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_cloudflares_numbers() {
        assert_eq!(ErrorCode::InvalidRequest.as_u32(), 1400);
        assert_eq!(ErrorCode::CsrNotFound.as_u32(), 1419);
        assert_eq!(ErrorCode::Internal.to_string(), "1500");
        assert_eq!(ErrorCode::Forbidden.as_u32(), 10000);
    }
}
