//! Custom certificates: what a client uploads against one of its custom CSRs (Cloudflare's
//! `custom_certificates` with `custom_csr_id`), validated once at the edge, and what is kept.
//!
//! csrd never accepts key material: the key is the CSR's, so `custom_csr_id` is required and
//! `private_key` is refused. Fields that mean nothing here (`geo_restrictions`, `policy`,
//! `deploy`, `type`) are validated as Cloudflare validates them and stored or ignored; the
//! docs/certificates.md says which.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::{CsrId, ErrorCode, FieldError, Owner, ValidationErrors};

/// The largest certificate field accepted: ten certificates of 6 KB is far above real chains.
pub const MAX_CERTIFICATE_BYTES: usize = 64 * 1024;
const MAX_POLICY: usize = 1024;

/// A custom certificate's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CertificateId(pub Uuid);

impl CertificateId {
    pub fn new() -> Self {
        Self(super::ids::time_ordered_uuid())
    }

    /// Cloudflare's ids are 32 hex digits; csrd's are UUIDs, accepted with or without dashes.
    pub fn parse(s: &str) -> Option<Self> {
        Uuid::try_parse(s).ok().map(Self)
    }
}

impl Default for CertificateId {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for CertificateId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

pub const BUNDLE_METHODS: [&str; 3] = ["ubiquitous", "optimal", "force"];
pub const SNI_CUSTOM: &str = "sni_custom";
pub const CERT_TYPES: [&str; 2] = ["legacy_custom", SNI_CUSTOM];
pub const GEO_LABELS: [&str; 3] = ["us", "eu", "highest_security"];
const DEPLOY: [&str; 2] = ["staging", "production"];

/// A validated upload (POST).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadCertificate {
    pub certificate: String,
    pub custom_csr_id: CsrId,
    pub bundle_method: String,
    pub cert_type: String,
    pub geo_label: Option<String>,
    pub policy: Option<String>,
}

/// A validated edit (PATCH): what is given replaces what is stored. The restrictions are
/// tri-state: absent keeps them, `null` clears them (`Some(None)`), a value replaces them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EditCertificate {
    pub certificate: Option<String>,
    pub custom_csr_id: Option<CsrId>,
    pub bundle_method: Option<String>,
    pub geo_label: Option<Option<String>>,
    pub policy: Option<Option<String>>,
}

impl EditCertificate {
    /// Whether the certificate or the CSR it is checked against changes (a new check).
    pub fn rechecks(&self) -> bool {
        self.certificate.is_some() || self.custom_csr_id.is_some()
    }
}

/// A stored custom certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomCertificate {
    pub id: CertificateId,
    pub owner: Owner,
    pub custom_csr_id: CsrId,
    pub certificate: String,
    /// SHA-256 of the leaf's DER: the certificate's identity (the same bytes sent again are
    /// the same certificate).
    pub leaf_sha256: [u8; 32],
    pub hosts: Vec<String>,
    pub issuer: String,
    pub signature: String,
    pub serial_number: String,
    pub bundle_method: String,
    pub cert_type: String,
    pub geo_label: Option<String>,
    pub policy: Option<String>,
    pub priority: i32,
    pub not_before: DateTime<Utc>,
    pub expires_on: DateTime<Utc>,
    pub uploaded_on: DateTime<Utc>,
    pub modified_on: DateTime<Utc>,
}

impl CustomCertificate {
    /// What the certificate counts for against its tenant's stored bytes: its chain, its
    /// hosts and its policy (as `csrd_certificate_bytes` counts it in Postgres).
    pub fn stored_bytes(&self) -> i64 {
        let bytes = self.certificate.len()
            + self.hosts.iter().map(String::len).sum::<usize>()
            + self.policy.as_ref().map_or(0, String::len);
        i64::try_from(bytes).unwrap_or(i64::MAX)
    }

    /// Cloudflare's status: `active`, or `expired` once past `expires_on`.
    pub fn status(&self, now: DateTime<Utc>) -> &'static str {
        if self.expires_on <= now {
            "expired"
        } else {
            "active"
        }
    }
}

impl UploadCertificate {
    pub fn parse(body: &[u8]) -> Result<Self, ValidationErrors> {
        Self::from_value(parse_object(body)?)
    }

    /// Validates one upload (a body, or one item of a bulk upload); pointers are relative.
    pub fn from_value(value: Value) -> Result<Self, ValidationErrors> {
        let obj = object(value)?;
        let mut errors = Vec::new();
        refuse_key_material(&obj, &mut errors);
        let certificate = certificate_field(&obj, true, &mut errors);
        let custom_csr_id = csr_id_field(&obj, true, &mut errors);
        let bundle_method = enum_field(&obj, "bundle_method", &BUNDLE_METHODS, &mut errors);
        let cert_type = enum_field(&obj, "type", &CERT_TYPES, &mut errors);
        let _ = enum_field(&obj, "deploy", &DEPLOY, &mut errors);
        let geo_label = geo_field(&obj, &mut errors);
        let policy = policy_field(&obj, &mut errors);
        match (certificate, custom_csr_id) {
            (Some(certificate), Some(custom_csr_id)) if errors.is_empty() => Ok(Self {
                certificate,
                custom_csr_id,
                bundle_method: bundle_method.unwrap_or_else(|| "ubiquitous".to_owned()),
                cert_type: cert_type.unwrap_or_else(|| "legacy_custom".to_owned()),
                geo_label,
                policy,
            }),
            _ => Err(ValidationErrors(errors)),
        }
    }
}

/// The most certificates one bulk upload takes.
pub const MAX_BULK: usize = 10_000;

/// Raw JSON bytes of one bulk item, at most: a certificate at its limit with its line breaks
/// escaped, a policy at its limit escaped, and the other fields.
pub const MAX_BULK_ITEM_BYTES: usize = 96 * 1024;

/// A bulk upload's body, `{"items": [{custom_csr_id, certificate, …}, …]}`, read item by item
/// (see [`super::item_stream`]): every item valid, or every error, each with its
/// `/items/N/…` pointer. `checkpoint` is called between items.
pub fn parse_bulk(
    body: &[u8],
    checkpoint: impl FnMut(),
) -> Result<Vec<UploadCertificate>, ValidationErrors> {
    super::item_stream::parse_items(
        body,
        super::item_stream::ItemRules {
            max_items: MAX_BULK,
            max_item_bytes: MAX_BULK_ITEM_BYTES,
            what: "certificates",
        },
        UploadCertificate::from_value,
        checkpoint,
    )
}

impl EditCertificate {
    pub fn parse(body: &[u8]) -> Result<Self, ValidationErrors> {
        // Cloudflare's SDKs send a body on every PATCH; an empty one edits nothing.
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self::default());
        }
        let obj = object(parse_object(body)?)?;
        let mut errors = Vec::new();
        refuse_key_material(&obj, &mut errors);
        if obj.contains_key("type") {
            errors.push(FieldError::new(
                ErrorCode::InvalidRequest,
                "/type",
                "type is set when a certificate is uploaded and cannot be edited",
            ));
        }
        let edit = Self {
            certificate: certificate_field(&obj, false, &mut errors),
            custom_csr_id: csr_id_field(&obj, false, &mut errors),
            bundle_method: enum_field(&obj, "bundle_method", &BUNDLE_METHODS, &mut errors),
            geo_label: clearable(&obj, &["geo_restrictions"], geo_field(&obj, &mut errors)),
            policy: clearable(
                &obj,
                &["policy", "policy_restrictions"],
                policy_field(&obj, &mut errors),
            ),
        };
        let _ = enum_field(&obj, "deploy", &DEPLOY, &mut errors);
        if errors.is_empty() {
            Ok(edit)
        } else {
            Err(ValidationErrors(errors))
        }
    }
}

fn parse_object(body: &[u8]) -> Result<Value, ValidationErrors> {
    super::strict_json::parse(body).map_err(|e| {
        ValidationErrors::single(FieldError::new(
            ErrorCode::InvalidRequest,
            "",
            format!("request body is not valid JSON: {e}"),
        ))
    })
}

fn object(value: Value) -> Result<Map<String, Value>, ValidationErrors> {
    match value {
        Value::Object(obj) => Ok(obj),
        _ => Err(ValidationErrors::single(FieldError::new(
            ErrorCode::InvalidRequest,
            "",
            "request body must be a JSON object",
        ))),
    }
}

/// `private_key` (and the keyless server, which would hold the key elsewhere) are refused:
/// the key of a certificate uploaded here is the custom CSR's, and it never travels.
fn refuse_key_material(obj: &Map<String, Value>, errors: &mut Vec<FieldError>) {
    for field in ["private_key", "keyless_server"] {
        if obj.get(field).is_some_and(|v| !v.is_null()) {
            errors.push(FieldError::new(
                ErrorCode::KeyMaterialRefused,
                format!("/{field}"),
                format!(
                    "{field} is refused: csrd never accepts key material; reference the key with custom_csr_id"
                ),
            ));
        }
    }
}

fn certificate_field(
    obj: &Map<String, Value>,
    required: bool,
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    match obj.get("certificate") {
        None | Some(Value::Null) if required => {
            errors.push(FieldError::new(
                ErrorCode::CertificateEmpty,
                "/certificate",
                "certificate is required",
            ));
            None
        }
        None | Some(Value::Null) => None,
        Some(Value::String(pem)) if pem.len() > MAX_CERTIFICATE_BYTES => {
            errors.push(FieldError::new(
                ErrorCode::ChainTooLong,
                "/certificate",
                format!("certificate is longer than {MAX_CERTIFICATE_BYTES} bytes"),
            ));
            None
        }
        Some(Value::String(pem)) if pem.trim().is_empty() => {
            errors.push(FieldError::new(
                ErrorCode::CertificateEmpty,
                "/certificate",
                "The certificate that you uploaded is empty.",
            ));
            None
        }
        Some(Value::String(pem)) => Some(pem.clone()),
        Some(_) => {
            errors.push(FieldError::new(
                ErrorCode::CertificateUnparsable,
                "/certificate",
                "certificate must be a string holding a PEM certificate chain",
            ));
            None
        }
    }
}

fn csr_id_field(
    obj: &Map<String, Value>,
    required: bool,
    errors: &mut Vec<FieldError>,
) -> Option<CsrId> {
    match obj.get("custom_csr_id") {
        None | Some(Value::Null) if required => {
            errors.push(FieldError::new(
                ErrorCode::InvalidCustomCsrId,
                "/custom_csr_id",
                "custom_csr_id is required: csrd holds the key of the custom CSR the certificate was issued for",
            ));
            None
        }
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => CsrId::parse(s).or_else(|| {
            errors.push(FieldError::new(
                ErrorCode::InvalidCustomCsrId,
                "/custom_csr_id",
                "The custom CSR ID is invalid.",
            ));
            None
        }),
        Some(_) => {
            errors.push(FieldError::new(
                ErrorCode::InvalidCustomCsrId,
                "/custom_csr_id",
                "The custom CSR ID is invalid.",
            ));
            None
        }
    }
}

fn enum_field(
    obj: &Map<String, Value>,
    field: &str,
    allowed: &[&str],
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    match obj.get(field) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if allowed.contains(&s.as_str()) => Some(s.clone()),
        Some(_) => {
            errors.push(FieldError::new(
                ErrorCode::InvalidSslAttribute,
                format!("/{field}"),
                format!("{field} must be one of {}", allowed.join(", ")),
            ));
            None
        }
    }
}

/// An edit's tri-state for a field that may be cleared: absent (`None`), `null` under the first
/// of `keys` present (`Some(None)`), or the parsed value.
fn clearable(
    obj: &Map<String, Value>,
    keys: &[&str],
    parsed: Option<String>,
) -> Option<Option<String>> {
    match keys.iter().find_map(|k| obj.get(*k)) {
        None => None,
        Some(Value::Null) => Some(None),
        Some(_) => parsed.map(Some),
    }
}

fn geo_field(obj: &Map<String, Value>, errors: &mut Vec<FieldError>) -> Option<String> {
    match obj.get("geo_restrictions") {
        None | Some(Value::Null) => None,
        Some(Value::Object(geo)) => enum_field(geo, "label", &GEO_LABELS, errors),
        Some(_) => {
            errors.push(FieldError::new(
                ErrorCode::InvalidSslAttribute,
                "/geo_restrictions",
                "geo_restrictions must be an object with a label",
            ));
            None
        }
    }
}

fn policy_field(obj: &Map<String, Value>, errors: &mut Vec<FieldError>) -> Option<String> {
    match obj.get("policy").or_else(|| obj.get("policy_restrictions")) {
        None | Some(Value::Null) => None,
        Some(Value::String(p))
            if p.contains("PRIVATE KEY")
                || super::key_material::holds_private_key(p.as_bytes()) =>
        {
            errors.push(FieldError::new(
                ErrorCode::KeyMaterialRefused,
                "/policy",
                "policy holds private key material; csrd never accepts key material",
            ));
            None
        }
        Some(Value::String(p))
            if p.len() <= MAX_POLICY && super::request::forbidden_char(p).is_none() =>
        {
            Some(p.clone())
        }
        Some(_) => {
            errors.push(FieldError::new(
                ErrorCode::InvalidSslAttribute,
                "/policy",
                format!(
                    "policy must be a string of at most {MAX_POLICY} bytes, without control or invisible characters"
                ),
            ));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(body: &str) -> Vec<u32> {
        UploadCertificate::parse(body.as_bytes())
            .unwrap_err()
            .codes()
    }

    #[test]
    fn key_material_is_refused_with_its_pointer_and_without_echo() {
        let body = r#"{"certificate":"x","custom_csr_id":"7b163417-1d2b-4c84-a38a-2fb7a0cd7752","private_key":"-----BEGIN PRIVATE KEY-----SECRET"}"#;
        let errors = UploadCertificate::parse(body.as_bytes()).unwrap_err();
        assert_eq!(errors.codes(), vec![1440]);
        assert_eq!(errors.0[0].pointer, "/private_key");
        assert!(!errors.0[0].message.contains("SECRET"));
    }

    #[test]
    fn custom_csr_id_and_certificate_are_required() {
        assert_eq!(codes("{}"), vec![1427, 1430]);
        assert_eq!(
            codes(r#"{"certificate":"x","custom_csr_id":"nope","bundle_method":"fast"}"#),
            vec![1430, 1434]
        );
    }

    #[test]
    fn defaults_are_cloudflares() {
        let body = r#"{"certificate":"pem","custom_csr_id":"7b163417-1d2b-4c84-a38a-2fb7a0cd7752","geo_restrictions":{"label":"eu"}}"#;
        let upload = UploadCertificate::parse(body.as_bytes()).unwrap();
        assert_eq!(upload.bundle_method, "ubiquitous");
        assert_eq!(upload.cert_type, "legacy_custom");
        assert_eq!(upload.geo_label.as_deref(), Some("eu"));
    }

    #[test]
    fn an_edit_may_not_change_the_type() {
        let errors = EditCertificate::parse(br#"{"type":"sni_custom"}"#).unwrap_err();
        assert_eq!(errors.0[0].pointer, "/type");
        assert_eq!(
            EditCertificate::parse(b"").unwrap(),
            EditCertificate::default()
        );
    }

    #[test]
    fn an_edit_keeps_clears_or_replaces_the_restrictions() {
        let kept = EditCertificate::parse(br#"{"bundle_method":"force"}"#).unwrap();
        assert_eq!((kept.geo_label, kept.policy), (None, None));
        let cleared =
            EditCertificate::parse(br#"{"geo_restrictions":null,"policy":null}"#).unwrap();
        assert_eq!(
            (cleared.geo_label, cleared.policy),
            (Some(None), Some(None))
        );
        let set = EditCertificate::parse(
            br#"{"geo_restrictions":{"label":"us"},"policy_restrictions":"allow: US"}"#,
        )
        .unwrap();
        assert_eq!(set.geo_label, Some(Some("us".to_string())));
        assert_eq!(set.policy, Some(Some("allow: US".to_string())));
    }
}
