//! Validation failures carry the Cloudflare error code and a JSON pointer to the field.

use std::fmt;

use super::ErrorCode;

/// A client's value as an error message may quote it: at most 40 characters, so a megabyte of
/// input is never echoed back.
pub fn echo(value: &str) -> String {
    const MAX: usize = 40;
    if value.chars().count() <= MAX {
        value.to_owned()
    } else {
        let mut short: String = value.chars().take(MAX).collect();
        short.push('…');
        short
    }
}

/// One rejected field: Cloudflare code, human message, JSON pointer (`/sans/3`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub code: ErrorCode,
    pub message: String,
    pub pointer: String,
}

impl FieldError {
    pub fn new(code: ErrorCode, pointer: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            pointer: pointer.into(),
        }
    }
}

/// Every field error found in one request, in field order. Never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationErrors(pub Vec<FieldError>);

impl ValidationErrors {
    pub fn single(error: FieldError) -> Self {
        Self(vec![error])
    }

    pub fn codes(&self) -> Vec<u32> {
        self.0.iter().map(|e| e.code.as_u32()).collect()
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|e| format!("{} ({}): {}", e.pointer, e.code, e.message))
            .collect();
        f.write_str(&parts.join("; "))
    }
}

impl std::error::Error for ValidationErrors {}
