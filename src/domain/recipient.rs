//! Key recipients (a csrd extension): where a tenant's sealed keys may be released to. A
//! tenant enrolls one (pending); only an operator, comparing its fingerprint, approves it
//! (active); the tenant or an operator revokes it. Its `hosts` bound what it can ever receive.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::{DnsName, ErrorCode, FieldError, Owner, ValidationErrors};

pub const MAX_RECIPIENT_HOSTS: usize = 100;
const MAX_NAME: usize = 255;

/// The age X25519 recipient's public key, from its Bech32 `age1…` form.
#[derive(Clone, PartialEq, Eq)]
pub struct AgeRecipient {
    text: String,
    public: [u8; 32],
}

impl std::fmt::Debug for AgeRecipient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl AgeRecipient {
    /// `age1` followed by the Bech32 encoding of a 32-byte X25519 public key, lower-case, as
    /// `age-keygen` prints it; anything else is refused (also by the reference parser, which
    /// has the last word).
    pub fn parse(text: &str) -> Option<Self> {
        if text.len() != 62 || text != text.to_ascii_lowercase() {
            return None;
        }
        text.parse::<age::x25519::Recipient>().ok()?;
        let (hrp, data) = bech32::decode(text).ok()?;
        if hrp.as_str() != "age" {
            return None;
        }
        let public: [u8; 32] = data.try_into().ok()?;
        Some(Self {
            text: text.to_owned(),
            public,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The X25519 public key.
    pub fn public_key(&self) -> &[u8; 32] {
        &self.public
    }

    /// SHA-256 of the recipient string, hex: what an operator compares before approving it.
    pub fn fingerprint(&self) -> String {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(self.text.as_bytes()))
    }
}

/// A key recipient's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RecipientId(pub Uuid);

impl RecipientId {
    pub fn new() -> Self {
        Self(super::ids::time_ordered_uuid())
    }

    pub fn parse(s: &str) -> Option<Self> {
        Uuid::try_parse(s).ok().map(Self)
    }
}

impl Default for RecipientId {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for RecipientId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecipientStatus {
    /// Enrolled, waiting for an operator: receives nothing.
    Pending,
    /// Approved by an operator: receives what its hosts cover.
    Active,
    /// Receives nothing, for good.
    Revoked,
}

impl RecipientStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RecipientStatus::Pending => "pending",
            RecipientStatus::Active => "active",
            RecipientStatus::Revoked => "revoked",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Pending, Self::Active, Self::Revoked]
            .into_iter()
            .find(|x| x.as_str() == s)
    }
}

/// A stored key recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecipient {
    pub id: RecipientId,
    pub owner: Owner,
    pub name: String,
    pub recipient: String,
    pub fingerprint: String,
    pub hosts: Vec<String>,
    pub status: RecipientStatus,
    pub created_at: DateTime<Utc>,
}

impl KeyRecipient {
    /// Whether the recipient's hosts cover every one of `names` (a certificate's hosts).
    pub fn covers_all(&self, names: &[String]) -> bool {
        !names.is_empty()
            && names
                .iter()
                .all(|n| self.hosts.iter().any(|h| super::san::covers(h, n)))
    }
}

/// An enrollment that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRecipient {
    pub name: String,
    pub recipient: AgeRecipient,
    /// Lower-case, each once, in the order given.
    pub hosts: Vec<String>,
}

impl NewRecipient {
    /// `{"name": "...", "recipient": "age1…", "hosts": ["tls.example.com", "*.example.net"]}`,
    /// every field error reported at its pointer.
    pub fn parse(body: &[u8]) -> Result<Self, ValidationErrors> {
        let value: Value = super::strict_json::parse(body).map_err(|e| {
            ValidationErrors::single(FieldError::new(
                ErrorCode::InvalidRequest,
                "",
                format!("request body is not valid JSON: {e}"),
            ))
        })?;
        let Value::Object(obj) = value else {
            return Err(ValidationErrors::single(FieldError::new(
                ErrorCode::InvalidRequest,
                "",
                "request body must be a JSON object",
            )));
        };
        let mut errors = Vec::new();
        let name = parse_name(&obj).map_err(|e| errors.push(e)).ok();
        let recipient = parse_recipient(&obj).map_err(|e| errors.push(e)).ok();
        let hosts = parse_hosts(&obj)
            .map_err(|mut e| errors.append(&mut e))
            .ok();
        match (name, recipient, hosts) {
            (Some(name), Some(recipient), Some(hosts)) if errors.is_empty() => Ok(Self {
                name,
                recipient,
                hosts,
            }),
            _ => Err(ValidationErrors(errors)),
        }
    }
}

fn invalid(pointer: &str, message: impl Into<String>) -> FieldError {
    FieldError::new(ErrorCode::InvalidKeyRecipient, pointer, message)
}

fn parse_name(obj: &Map<String, Value>) -> Result<String, FieldError> {
    match obj.get("name") {
        Some(Value::String(s)) => {
            let s = s.trim();
            if s.is_empty() || s.chars().count() > MAX_NAME {
                Err(invalid("/name", "name must be 1 to 255 characters"))
            } else if let Some(c) = super::request::forbidden_char(s) {
                Err(invalid(
                    "/name",
                    format!(
                        "name must not contain control or invisible characters (U+{:04X})",
                        c as u32
                    ),
                ))
            } else {
                Ok(s.to_owned())
            }
        }
        None | Some(Value::Null) => Err(invalid("/name", "name is required")),
        Some(_) => Err(invalid("/name", "name must be a string")),
    }
}

fn parse_recipient(obj: &Map<String, Value>) -> Result<AgeRecipient, FieldError> {
    match obj.get("recipient") {
        Some(Value::String(s)) => AgeRecipient::parse(s).ok_or_else(|| {
            invalid(
                "/recipient",
                format!(
                    "recipient {:?} is not an age X25519 recipient (age1…, as `csrd agent init` \
                     or age-keygen prints it)",
                    super::validation::echo(s)
                ),
            )
        }),
        None | Some(Value::Null) => Err(invalid("/recipient", "recipient is required")),
        Some(_) => Err(invalid("/recipient", "recipient must be a string")),
    }
}

fn parse_hosts(obj: &Map<String, Value>) -> Result<Vec<String>, Vec<FieldError>> {
    let items = match obj.get("hosts") {
        Some(Value::Array(items)) if (1..=MAX_RECIPIENT_HOSTS).contains(&items.len()) => items,
        Some(Value::Array(_)) => {
            return Err(vec![invalid(
                "/hosts",
                format!("hosts must hold 1 to {MAX_RECIPIENT_HOSTS} names"),
            )]);
        }
        None | Some(Value::Null) => return Err(vec![invalid("/hosts", "hosts is required")]),
        Some(_) => return Err(vec![invalid("/hosts", "hosts must be an array of names")]),
    };
    let mut errors = Vec::new();
    let mut hosts: Vec<String> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let pointer = format!("/hosts/{i}");
        let Value::String(s) = item else {
            errors.push(invalid(&pointer, "each host must be a string"));
            continue;
        };
        // A trailing dot is refused, not removed: stored hosts are compared with certificate
        // names as they are.
        if s.ends_with('.') {
            errors.push(invalid(&pointer, "a host must not end with a dot"));
            continue;
        }
        match DnsName::parse(&s.to_ascii_lowercase(), &pointer) {
            Ok(name)
                if name.as_str().starts_with("*.")
                    && psl::domain(name.base().as_bytes()).is_none() =>
            {
                // `*.com` would cover every name under a public suffix: no tenant's hosts.
                errors.push(invalid(
                    &pointer,
                    format!(
                        "{} is a wildcard over a public suffix: a wildcard must be under a registrable domain",
                        name.as_str()
                    ),
                ));
            }
            Ok(name) if !hosts.iter().any(|h| h == name.as_str()) => {
                hosts.push(name.as_str().to_owned())
            }
            Ok(_) => {}
            Err(e) => errors.push(invalid(&pointer, e.message)),
        }
    }
    if errors.is_empty() {
        Ok(hosts)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipient() -> String {
        crate::crypto::seal::new_identity().1
    }

    fn parse(v: Value) -> Result<NewRecipient, ValidationErrors> {
        NewRecipient::parse(v.to_string().as_bytes())
    }

    #[test]
    fn a_good_enrollment_is_normalised() {
        let r = recipient();
        let new = parse(serde_json::json!({
            "name": " web-1 ", "recipient": r,
            "hosts": ["TLS.example.com", "*.example.net", "tls.example.com"]
        }))
        .unwrap();
        assert_eq!(new.name, "web-1");
        assert_eq!(new.recipient.as_str(), r);
        assert_eq!(new.hosts, vec!["tls.example.com", "*.example.net"]);
    }

    #[test]
    fn every_bad_field_is_reported_at_its_pointer() {
        let e = parse(serde_json::json!({
            "name": "", "recipient": "age1nope",
            "hosts": ["ok.example.com", "a b", 3, "x.", "*.com", "*.co.uk", "*.example.co.uk"]
        }))
        .unwrap_err();
        let pointers: Vec<&str> = e.0.iter().map(|e| e.pointer.as_str()).collect();
        assert_eq!(
            pointers,
            [
                "/name",
                "/recipient",
                "/hosts/1",
                "/hosts/2",
                "/hosts/3",
                "/hosts/4",
                "/hosts/5"
            ]
        );
        assert!(e.0.iter().all(|e| e.code == ErrorCode::InvalidKeyRecipient));
        let too_many: Vec<String> = (0..101).map(|i| format!("h{i}.example.com")).collect();
        for hosts in [serde_json::json!([]), serde_json::json!(too_many)] {
            let e =
                parse(serde_json::json!({"name": "n", "recipient": recipient(), "hosts": hosts}))
                    .unwrap_err();
            assert_eq!(e.0[0].pointer, "/hosts");
        }
        assert!(
            parse(serde_json::json!({"name": "a\u{202E}b", "recipient": recipient(), "hosts": ["a.example.com"]}))
                .is_err()
        );
    }

    #[test]
    fn hosts_cover_certificates_a_label_at_a_time() {
        let r = KeyRecipient {
            id: RecipientId::new(),
            owner: Owner::parse(super::super::OwnerKind::Zone, &"a".repeat(32)).unwrap(),
            name: "n".into(),
            recipient: recipient(),
            fingerprint: String::new(),
            hosts: vec!["tls.example.com".into(), "*.example.net".into()],
            status: RecipientStatus::Active,
            created_at: Utc::now(),
        };
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(r.covers_all(&names(&["tls.example.com", "www.example.net"])));
        assert!(r.covers_all(&names(&["*.example.net"])));
        assert!(!r.covers_all(&names(&["tls.example.com", "example.net"])));
        assert!(!r.covers_all(&names(&["a.b.example.net"])));
        assert!(!r.covers_all(&names(&[])));
    }
}
