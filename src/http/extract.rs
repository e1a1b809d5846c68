//! Request pieces read by hand, so every failure becomes a Cloudflare envelope rather than
//! the framework's plain-text rejection.

use axum::body::Body;
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};

use super::error::{ApiError, MAX_BODY_BYTES};
use crate::domain::{Owner, OwnerKind};

/// The `{account_id}` / `{zone_id}` path segment, not yet validated: authentication comes
/// first, then the id (7003), then authorization.
pub struct OwnerSegment(Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for OwnerSegment {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Ok(Self(
            Path::<String>::from_request_parts(parts, state)
                .await
                .ok()
                .map(|p| p.0),
        ))
    }
}

impl OwnerSegment {
    pub fn parse(&self, kind: OwnerKind) -> Result<Owner, ApiError> {
        self.0
            .as_deref()
            .and_then(|s| Owner::parse(kind, s))
            .ok_or(ApiError::MalformedOwnerId(kind.as_str()))
    }
}

/// JSON is the only body type; a missing Content-Type is tolerated (as curl -d without -H).
pub fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let mime = value
        .to_str()
        .ok()
        .and_then(|v| v.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase())
        .ok_or(ApiError::UnsupportedMediaType)?;
    if mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json")) {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType)
    }
}

/// Reads at most `MAX_BODY_BYTES`; a larger body is refused with 413 without reading it all.
pub async fn read_body(headers: &HeaderMap, body: Body) -> Result<axum::body::Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(ApiError::PayloadTooLarge);
    }
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|e| {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if too_large {
                ApiError::PayloadTooLarge
            } else {
                ApiError::Validation(crate::domain::ValidationErrors::single(
                    crate::domain::FieldError::new(1400, "", "the request body could not be read"),
                ))
            }
        })
}
