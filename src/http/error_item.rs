//! One item of an envelope's `errors` or `messages`: a Cloudflare code, a message and, for a
//! field, where it is. Used by the envelopes and inside results (a batch entry's errors).

use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::ErrorCode;

/// One error or message item.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, ToSchema)]
pub struct ErrorItem {
    #[schema(minimum = 1000)]
    pub code: u32,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<ErrorSource>,
}

/// Where the error is: a JSON pointer into the body, or a query parameter.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, ToSchema)]
pub struct ErrorSource {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pointer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameter: Option<String>,
}

impl ErrorItem {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code: code.as_u32(),
            message: message.into(),
            source: None,
        }
    }

    /// `where_` is a JSON pointer (`/sans/3`), or `?name` for a query parameter.
    pub fn at(code: ErrorCode, message: impl Into<String>, where_: &str) -> Self {
        let source = match where_.strip_prefix('?') {
            Some(parameter) => ErrorSource {
                pointer: None,
                parameter: Some(parameter.to_owned()),
            },
            None => ErrorSource {
                pointer: Some(where_.to_owned()),
                parameter: None,
            },
        };
        Self {
            source: Some(source),
            ..Self::new(code, message)
        }
    }
}
