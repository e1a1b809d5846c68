//! Cloudflare's response envelopes.

use serde::Serialize;
use serde_json::{Value, json};

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ErrorItem {
    pub code: u32,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<ErrorSource>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ErrorSource {
    pub pointer: String,
}

impl ErrorItem {
    pub fn new(code: u32, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            source: None,
        }
    }

    pub fn at(code: u32, message: impl Into<String>, pointer: &str) -> Self {
        Self {
            source: Some(ErrorSource {
                pointer: pointer.to_owned(),
            }),
            ..Self::new(code, message)
        }
    }
}

pub fn success(result: impl Serialize) -> Value {
    json!({"success": true, "errors": [], "messages": [], "result": result})
}

pub fn failure(errors: &[ErrorItem]) -> Value {
    json!({"success": false, "errors": errors, "messages": [], "result": null})
}
