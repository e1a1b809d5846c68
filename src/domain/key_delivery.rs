//! Whether a CSR's private key may ever leave csrd (a csrd extension of the create body).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{ErrorCode, FieldError};

/// Fixed when the CSR is created; nothing changes it later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyDelivery {
    /// The key never leaves csrd (Cloudflare's behaviour, and the default).
    #[default]
    None,
    /// The key may be released, sealed to a recipient an operator approved, for a
    /// certificate the recipient's hosts cover.
    Sealed,
}

impl KeyDelivery {
    pub fn is_none(&self) -> bool {
        *self == KeyDelivery::None
    }

    pub fn as_str(self) -> &'static str {
        match self {
            KeyDelivery::None => "none",
            KeyDelivery::Sealed => "sealed",
        }
    }

    /// The value stored in `custom_csrs.key_delivery` (NULL is "none").
    pub fn stored(self) -> Option<&'static str> {
        match self {
            KeyDelivery::None => None,
            KeyDelivery::Sealed => Some("sealed"),
        }
    }

    pub fn from_stored(s: Option<&str>) -> Option<Self> {
        match s {
            None => Some(KeyDelivery::None),
            Some("sealed") => Some(KeyDelivery::Sealed),
            Some(_) => None,
        }
    }

    /// The `key_delivery` member of a create body: absent, null or `"none"` is none.
    pub fn parse(obj: &Map<String, Value>) -> Result<Self, FieldError> {
        match obj.get("key_delivery") {
            None | Some(Value::Null) => Ok(KeyDelivery::None),
            Some(Value::String(s)) if s == "none" => Ok(KeyDelivery::None),
            Some(Value::String(s)) if s == "sealed" => Ok(KeyDelivery::Sealed),
            Some(_) => Err(FieldError::new(
                ErrorCode::InvalidRequest,
                "/key_delivery",
                "key_delivery must be \"none\" (the key never leaves csrd) or \"sealed\" \
                 (it may be released sealed to an approved recipient)",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: Value) -> Result<KeyDelivery, FieldError> {
        KeyDelivery::parse(v.as_object().unwrap())
    }

    #[test]
    fn absent_null_and_none_mean_the_key_never_leaves() {
        for body in [
            serde_json::json!({}),
            serde_json::json!({"key_delivery": null}),
            serde_json::json!({"key_delivery": "none"}),
        ] {
            assert_eq!(parse(body).unwrap(), KeyDelivery::None);
        }
        assert_eq!(
            parse(serde_json::json!({"key_delivery": "sealed"})).unwrap(),
            KeyDelivery::Sealed
        );
    }

    #[test]
    fn anything_else_is_refused_at_its_pointer() {
        for bad in ["Sealed", "plain", "", " sealed"] {
            let e = parse(serde_json::json!({ "key_delivery": bad })).unwrap_err();
            assert_eq!(e.pointer, "/key_delivery");
            assert_eq!(e.code, ErrorCode::InvalidRequest);
        }
        assert!(parse(serde_json::json!({"key_delivery": true})).is_err());
    }

    #[test]
    fn stored_form_round_trips() {
        for d in [KeyDelivery::None, KeyDelivery::Sealed] {
            assert_eq!(KeyDelivery::from_stored(d.stored()), Some(d));
        }
        assert_eq!(KeyDelivery::from_stored(Some("plain")), None);
    }
}
