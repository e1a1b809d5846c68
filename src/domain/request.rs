//! The validated create request. `CreateCsr::parse` is the only way to build one from a body.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::country::parse_country;
use super::{
    DnsName, ErrorCode, FieldError, KeyDelivery, KeyType, NamePolicy, OwnerKind, ValidationErrors,
};

pub const MAX_SANS: usize = 150;
/// X.520 upper bounds (RFC 5280 appendix A): CN, O, OU 64; ST, L 128.
const MAX_COMMON_NAME: usize = 64;
const MAX_ORGANIZATION: usize = 64;
const MAX_ORGANIZATIONAL_UNIT: usize = 64;
const MAX_STATE: usize = 128;
const MAX_LOCALITY: usize = 128;
/// Free-text metadata on account CSRs; bounded so rows and responses stay small.
const MAX_NAME: usize = 255;
const MAX_DESCRIPTION: usize = 1024;

/// The subject distinguished name, in the order it is written: C, ST, L, O, OU, CN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subject {
    pub country: String,
    pub state: String,
    pub locality: String,
    pub organization: String,
    pub organizational_unit: Option<String>,
    pub common_name: String,
}

/// A create request that passed every check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateCsr {
    pub subject: Subject,
    pub sans: Vec<DnsName>,
    pub key_type: KeyType,
    /// Account CSRs only; always `None` for zones (Cloudflare's zone body has neither).
    pub name: Option<String>,
    pub description: Option<String>,
    /// csrd's extension: whether the key may ever leave, sealed. Absent from messages and
    /// records of CSRs whose key never leaves, so those stay as they were.
    #[serde(default, skip_serializing_if = "KeyDelivery::is_none")]
    pub key_delivery: KeyDelivery,
}

impl CreateCsr {
    /// About how many bytes this request takes in a message or a row (its SANs dominate).
    pub fn approx_bytes(&self) -> usize {
        256 + self
            .sans
            .iter()
            .map(|s| s.as_str().len() + 8)
            .sum::<usize>()
            + self.name.as_ref().map_or(0, String::len)
            + self.description.as_ref().map_or(0, String::len)
    }

    /// Parses a JSON body, collecting every field error with its Cloudflare code and pointer.
    pub fn parse(
        body: &[u8],
        owner: OwnerKind,
        policy: NamePolicy,
    ) -> Result<Self, ValidationErrors> {
        let value: Value = super::strict_json::parse(body).map_err(|e| {
            ValidationErrors::single(FieldError::new(
                ErrorCode::InvalidRequest,
                "",
                format!("request body is not valid JSON: {e}"),
            ))
        })?;
        Self::from_value(value, owner, policy)
    }

    /// Validates an already parsed JSON value (one item of a batch). Pointers in the errors are
    /// relative to the value.
    pub fn from_value(
        value: Value,
        owner: OwnerKind,
        policy: NamePolicy,
    ) -> Result<Self, ValidationErrors> {
        let Value::Object(obj) = value else {
            return Err(ValidationErrors::single(FieldError::new(
                ErrorCode::InvalidRequest,
                "",
                "request body must be a JSON object",
            )));
        };
        let mut errors = Vec::new();
        let mut field = |r: Result<String, FieldError>| r.map_err(|e| errors.push(e)).ok();

        let country = field(
            required(&obj, "country", ErrorCode::InvalidCountry, 2).and_then(|c| {
                parse_country(&c).ok_or_else(|| {
                    FieldError::new(
                        ErrorCode::InvalidCountry,
                        "/country",
                        format!(
                            "country {:?} is not an ISO 3166-1 alpha-2 code",
                            super::validation::echo(&c)
                        ),
                    )
                })
            }),
        );
        let state = field(required(&obj, "state", ErrorCode::InvalidState, MAX_STATE));
        let locality = field(required(
            &obj,
            "locality",
            ErrorCode::InvalidLocality,
            MAX_LOCALITY,
        ));
        let organization = field(required(
            &obj,
            "organization",
            ErrorCode::InvalidOrganization,
            MAX_ORGANIZATION,
        ));
        let common_name = match required(
            &obj,
            "common_name",
            ErrorCode::InvalidCommonName,
            usize::MAX,
        ) {
            Ok(cn) if cn.chars().count() > MAX_COMMON_NAME => {
                errors.push(FieldError::new(
                    ErrorCode::CommonNameTooLong,
                    "/common_name",
                    "common_name must be at most 64 characters",
                ));
                None
            }
            r => field(r),
        };
        let organizational_unit = optional(
            &obj,
            "organizational_unit",
            ErrorCode::InvalidRequest,
            MAX_ORGANIZATIONAL_UNIT,
            true,
        )
        .map_err(|e| errors.push(e))
        .ok()
        .flatten();
        let key_type = parse_key_type(&obj).map_err(|e| errors.push(e)).ok();
        let key_delivery = KeyDelivery::parse(&obj).map_err(|e| errors.push(e)).ok();
        let sans = parse_sans(&obj, policy)
            .map_err(|mut e| errors.append(&mut e))
            .ok();
        let (name, description) = match owner {
            OwnerKind::Account => (
                optional(&obj, "name", ErrorCode::InvalidRequest, MAX_NAME, false)
                    .map_err(|e| errors.push(e))
                    .ok()
                    .flatten(),
                optional(
                    &obj,
                    "description",
                    ErrorCode::InvalidRequest,
                    MAX_DESCRIPTION,
                    false,
                )
                .map_err(|e| errors.push(e))
                .ok()
                .flatten(),
            ),
            OwnerKind::Zone => (None, None),
        };

        if !errors.is_empty() {
            return Err(ValidationErrors(errors));
        }
        // Every `None` above pushed an error, so these are all present.
        let (Some(country), Some(state), Some(locality), Some(organization), Some(common_name)) =
            (country, state, locality, organization, common_name)
        else {
            unreachable!("a missing field always records an error")
        };
        Ok(Self {
            subject: Subject {
                country,
                state,
                locality,
                organization,
                organizational_unit,
                common_name,
            },
            sans: sans.unwrap_or_default(),
            key_type: key_type.unwrap_or_default(),
            name,
            description,
            key_delivery: key_delivery.unwrap_or_default(),
        })
    }
}

/// Control characters (CR, LF and TAB included) have no place in a distinguished name nor in
/// a CSR's name or description: a line break in free text forges lines in whatever prints it
/// (a log, a terminal, a CSV export), and NUL cannot be stored in a Postgres text column at
/// all. Rejecting them here keeps all of them out. Neither do characters that
/// change how text *looks* without being seen: bidirectional overrides (an RTL override in O=
/// can make a CSR read as another organisation to whoever reviews it), zero-width and other
/// format characters, line and paragraph separators, noncharacters and private-use code points.
pub fn forbidden_char(s: &str) -> Option<char> {
    s.chars()
        .find(|&c| c.is_control() || is_invisible_or_private(c))
}

/// Unicode general category Cf (format), the other default-ignorable code points (fillers,
/// joiners, variation selectors: drawn as nothing), blank-looking symbols, Zl and Zp (line and
/// paragraph separators), noncharacters, and the private-use areas.
fn is_invisible_or_private(c: char) -> bool {
    let u = c as u32;
    matches!(u,
        // Cf
        0x00AD | 0x0600..=0x0605 | 0x061C | 0x06DD | 0x070F | 0x0890..=0x0891 | 0x08E2
        | 0x180E | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x2064 | 0x2066..=0x206F
        | 0xFEFF | 0xFFF9..=0xFFFB | 0x110BD | 0x110CD | 0x13430..=0x1343F
        | 0x1BCA0..=0x1BCA3 | 0x1D173..=0x1D17A | 0xE0001 | 0xE0020..=0xE007F
        // Default-ignorable beyond Cf: the combining grapheme joiner, Hangul fillers, Khmer
        // inherent vowels, Mongolian variation selectors, variation selectors, tags
        | 0x034F | 0x115F | 0x1160 | 0x17B4 | 0x17B5 | 0x180B..=0x180D | 0x180F | 0x3164
        | 0xFE00..=0xFE0F | 0xFFA0 | 0xFFF0..=0xFFF8 | 0xE0000..=0xE0FFF
        // A symbol drawn as a blank: the Braille pattern with no dots
        | 0x2800
        // Zl, Zp
        | 0x2028 | 0x2029
        // noncharacters
        | 0xFDD0..=0xFDEF
        // private use
        | 0xE000..=0xF8FF | 0xF0000..=0x10FFFF)
        || (u & 0xFFFE) == 0xFFFE
}

fn forbidden_char_error(key: &str, code: ErrorCode, c: char) -> FieldError {
    let what = if c.is_control() {
        "control characters"
    } else {
        "invisible, bidirectional, private-use or noncharacter code points"
    };
    FieldError::new(
        code,
        format!("/{key}"),
        format!("{key} must not contain {what} (U+{:04X})", c as u32),
    )
}

fn required(
    obj: &Map<String, Value>,
    key: &str,
    code: ErrorCode,
    max: usize,
) -> Result<String, FieldError> {
    let pointer = format!("/{key}");
    // Leading and trailing whitespace is trimmed (documented): "  Acme  " is "Acme".
    match obj.get(key).map(|v| (v, v.as_str().map(str::trim))) {
        None | Some((Value::Null, _)) => {
            Err(FieldError::new(code, pointer, format!("{key} is required")))
        }
        Some((_, Some(""))) => Err(FieldError::new(
            code,
            pointer,
            format!("{key} must not be empty"),
        )),
        Some((_, Some(s))) => checked_text(key, code, max, s),
        Some(_) => Err(not_a_string(key, code)),
    }
}

/// A trimmed, non-empty string field within its length and free of forbidden characters.
fn checked_text(key: &str, code: ErrorCode, max: usize, s: &str) -> Result<String, FieldError> {
    if s.chars().count() > max {
        return Err(FieldError::new(
            code,
            format!("/{key}"),
            format!("{key} must be at most {max} characters"),
        ));
    }
    match forbidden_char(s) {
        Some(c) => Err(forbidden_char_error(key, code, c)),
        None => Ok(s.to_owned()),
    }
}

fn not_a_string(key: &str, code: ErrorCode) -> FieldError {
    FieldError::new(code, format!("/{key}"), format!("{key} must be a string"))
}

/// An optional string: absent, null and (for subject fields) empty mean "not given".
fn optional(
    obj: &Map<String, Value>,
    key: &str,
    code: ErrorCode,
    max: usize,
    subject_field: bool,
) -> Result<Option<String>, FieldError> {
    match obj.get(key).map(|v| (v, v.as_str().map(str::trim))) {
        None | Some((Value::Null, _)) => Ok(None),
        Some((_, Some(""))) if subject_field => Ok(None),
        Some((_, Some(s))) => checked_text(key, code, max, s).map(Some),
        Some(_) => Err(not_a_string(key, code)),
    }
}

fn parse_key_type(obj: &Map<String, Value>) -> Result<KeyType, FieldError> {
    match obj.get("key_type") {
        None | Some(Value::Null) => Ok(KeyType::default()),
        Some(Value::String(s)) => KeyType::parse(s).ok_or_else(|| {
            FieldError::new(
                ErrorCode::UnknownKeyType,
                "/key_type",
                format!(
                    "key_type {:?} is not supported; use \"rsa2048\" or \"p256v1\" (or csrd's \
                     \"rsa3072\", \"rsa4096\", \"p384\")",
                    super::validation::echo(s)
                ),
            )
        }),
        Some(_) => Err(FieldError::new(
            ErrorCode::UnknownKeyType,
            "/key_type",
            "key_type must be one of the strings \"rsa2048\", \"p256v1\", \"rsa3072\", \"rsa4096\", \"p384\"",
        )),
    }
}

fn parse_sans(
    obj: &Map<String, Value>,
    policy: NamePolicy,
) -> Result<Vec<DnsName>, Vec<FieldError>> {
    let items = match obj.get("sans") {
        None | Some(Value::Null) => {
            return Err(vec![FieldError::new(
                ErrorCode::MissingSans,
                "/sans",
                "at least one SAN is required",
            )]);
        }
        Some(Value::Array(items)) if items.is_empty() => {
            return Err(vec![FieldError::new(
                ErrorCode::MissingSans,
                "/sans",
                "at least one SAN is required",
            )]);
        }
        Some(Value::Array(items)) if items.len() > MAX_SANS => {
            return Err(vec![FieldError::new(
                ErrorCode::InvalidSan,
                "/sans",
                format!("at most {MAX_SANS} SANs are allowed, got {}", items.len()),
            )]);
        }
        Some(Value::Array(items)) => items,
        Some(_) => {
            return Err(vec![FieldError::new(
                ErrorCode::MissingSans,
                "/sans",
                "sans must be an array of strings",
            )]);
        }
    };
    let mut names: Vec<DnsName> = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let pointer = format!("/sans/{i}");
        let parsed = match item {
            Value::String(s) => DnsName::parse(s, &pointer)
                .and_then(|name| policy.check(&name, &pointer).map(|()| name)),
            _ => Err(FieldError::new(
                ErrorCode::InvalidSan,
                &pointer,
                "each SAN must be a string",
            )),
        };
        match parsed {
            // DNS names are case-insensitive: a name already listed in another case is the same
            // SAN, and is dropped rather than signed twice (the first spelling is kept).
            Ok(name)
                if names
                    .iter()
                    .any(|n| n.as_str().eq_ignore_ascii_case(name.as_str())) => {}
            Ok(name) => names.push(name),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(names)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn example() -> Value {
        json!({
            "common_name": "example.com",
            "country": "US",
            "locality": "San Francisco",
            "organization": "Cloudflare, Inc.",
            "sans": ["example.com", "www.example.com"],
            "state": "California",
            "description": "CSR for example.com wildcard",
            "key_type": "rsa2048",
            "name": "My Custom CSR",
            "organizational_unit": "Engineering"
        })
    }

    fn parse(v: &Value, owner: OwnerKind) -> Result<CreateCsr, ValidationErrors> {
        CreateCsr::parse(v.to_string().as_bytes(), owner, NamePolicy::Permissive)
    }

    #[test]
    fn invisible_bidi_and_private_characters_are_refused_with_the_fields_code() {
        for (key, code) in [
            ("organization", 1408),
            ("common_name", 1409),
            ("state", 1406),
            ("locality", 1407),
        ] {
            for bad in [
                "Cloud\u{202e}flare",
                "Goo\u{200b}gle",
                "\u{feff}Org",
                "a\u{2028}b",
                "a\u{2066}b",
                "a\u{e000}b",
                "a\u{fdd0}b",
                "a\u{ffff}b",
                "\u{3164}",
                "a\u{034f}b",
                "a\u{fe0f}",
                "\u{2800}",
            ] {
                assert_eq!(codes_with(key, json!(bad)), vec![code], "{key} = {bad:?}");
            }
        }
        // Free text too, line breaks and tabs included.
        assert_eq!(codes_with("description", json!("a\u{202e}b")), vec![1400]);
        for key in ["name", "description"] {
            for bad in ["line 1\nline 2", "a\rb", "a\tb", "a\u{1b}[31mb"] {
                assert_eq!(codes_with(key, json!(bad)), vec![1400], "{key} = {bad:?}");
            }
        }
        // Ordinary non-ASCII text is fine.
        let ok = parse(
            &with(
                example(),
                "organization",
                json!("Société Générale — Zürich"),
            ),
            OwnerKind::Account,
        )
        .unwrap();
        assert_eq!(ok.subject.organization, "Société Générale — Zürich");
    }

    fn with(mut v: Value, key: &str, value: Value) -> Value {
        v[key] = value;
        v
    }

    #[test]
    fn surrounding_whitespace_is_trimmed() {
        let r = parse(
            &with(example(), "organization", json!("  Acme  ")),
            OwnerKind::Account,
        )
        .unwrap();
        assert_eq!(r.subject.organization, "Acme");
        let r = parse(
            &with(example(), "organizational_unit", json!("   ")),
            OwnerKind::Account,
        )
        .unwrap();
        assert_eq!(r.subject.organizational_unit, None);
        assert_eq!(codes_with("state", json!("   ")), vec![1406]);
    }

    #[test]
    fn sans_are_deduplicated_case_insensitively_keeping_the_first_spelling() {
        let r = parse(
            &with(
                example(),
                "sans",
                json!([
                    "example.com",
                    "Example.com",
                    "EXAMPLE.COM.",
                    "www.example.com"
                ]),
            ),
            OwnerKind::Account,
        )
        .unwrap();
        let names: Vec<&str> = r.sans.iter().map(DnsName::as_str).collect();
        assert_eq!(names, ["example.com", "www.example.com"]);
    }

    #[test]
    fn repeated_keys_and_long_echoes_are_refused_briefly() {
        let body = br#"{"common_name":"a.io","organization":"A","organization":"B"}"#;
        let e = CreateCsr::parse(body, OwnerKind::Account, NamePolicy::Permissive).unwrap_err();
        assert_eq!(e.codes(), vec![1400]);
        let e = parse(
            &with(example(), "key_type", json!("k".repeat(1_040_000))),
            OwnerKind::Account,
        )
        .unwrap_err();
        assert!(e.0[0].message.len() < 200, "{}", e.0[0].message.len());
    }

    fn codes_with(key: &str, value: Value) -> Vec<u32> {
        let mut body = example();
        body[key] = value;
        parse(&body, OwnerKind::Account).unwrap_err().codes()
    }

    #[test]
    fn cloudflare_example_parses() {
        let csr = parse(&example(), OwnerKind::Account).unwrap();
        assert_eq!(csr.subject.common_name, "example.com");
        assert_eq!(
            csr.subject.organizational_unit.as_deref(),
            Some("Engineering")
        );
        assert_eq!(csr.key_type, KeyType::Rsa2048);
        assert_eq!(csr.name.as_deref(), Some("My Custom CSR"));
        assert_eq!(csr.sans.len(), 2);
    }

    #[test]
    fn zone_requests_drop_name_and_description() {
        let csr = parse(&example(), OwnerKind::Zone).unwrap();
        assert_eq!((csr.name, csr.description), (None, None));
    }

    #[test]
    fn key_type_defaults_to_rsa2048() {
        let mut body = example();
        body.as_object_mut().unwrap().remove("key_type");
        assert_eq!(
            parse(&body, OwnerKind::Zone).unwrap().key_type,
            KeyType::Rsa2048
        );
    }

    #[test]
    fn missing_subject_fields_get_their_codes() {
        for (key, code) in [
            ("country", 1405),
            ("state", 1406),
            ("locality", 1407),
            ("organization", 1408),
            ("common_name", 1409),
        ] {
            assert_eq!(codes_with(key, Value::Null), vec![code], "{key} null");
            assert_eq!(codes_with(key, json!("")), vec![code], "{key} empty");
            assert_eq!(codes_with(key, json!(7)), vec![code], "{key} number");
        }
    }

    #[test]
    fn other_field_errors_get_their_codes_and_pointers() {
        assert_eq!(codes_with("common_name", json!("a".repeat(65))), vec![1410]);
        assert_eq!(codes_with("sans", json!([])), vec![1411]);
        assert_eq!(codes_with("sans", json!("example.com")), vec![1411]);
        assert_eq!(codes_with("sans", json!(vec!["a.com"; 151])), vec![1412]);
        assert_eq!(codes_with("key_type", json!("rsa8192")), vec![1417]);
        assert_eq!(codes_with("country", json!("XX")), vec![1405]);
        assert_eq!(codes_with("name", json!(5)), vec![1400]);
        assert_eq!(codes_with("state", json!("Cali\u{0}fornia")), vec![1406]);
        let mut body = example();
        body["sans"] = json!(["ok.example.com", "10.0.0.1", 5, "bücher.de"]);
        let err = parse(&body, OwnerKind::Account).unwrap_err();
        let found: Vec<(u32, &str)> = err
            .0
            .iter()
            .map(|e| (e.code.as_u32(), e.pointer.as_str()))
            .collect();
        assert_eq!(
            found,
            vec![(1412, "/sans/1"), (1412, "/sans/2"), (1413, "/sans/3")]
        );
    }

    #[test]
    fn non_objects_and_bad_json_are_1400() {
        for body in ["", "[]", "nul", "\"x\"", "{\"a\":"] {
            let err = CreateCsr::parse(body.as_bytes(), OwnerKind::Zone, NamePolicy::Permissive);
            assert_eq!(err.unwrap_err().codes(), vec![1400], "{body}");
        }
    }

    #[test]
    fn all_errors_are_reported_together() {
        let err = parse(&json!({}), OwnerKind::Zone).unwrap_err();
        assert_eq!(err.codes(), vec![1405, 1406, 1407, 1408, 1409, 1411]);
    }
}
