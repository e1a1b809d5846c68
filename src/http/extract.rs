//! Request pieces read by hand, so every failure becomes a Cloudflare envelope rather than
//! the framework's plain-text rejection.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};

use super::error::{ApiError, MAX_BODY_BYTES};
use crate::domain::{CsrId, ErrorCode, FieldError, Owner, OwnerKind, ValidationErrors};

/// The path's ids, not yet validated: authentication comes first, then the owner id (7003),
/// then authorization, and only then the CSR id (1418), so a caller without access learns
/// nothing about ids.
pub struct PathIds {
    params: HashMap<String, String>,
}

impl<S: Send + Sync> FromRequestParts<S> for PathIds {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let params = Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map(|p| p.0)
            .unwrap_or_default();
        Ok(Self { params })
    }
}

impl PathIds {
    pub fn owner(&self, kind: OwnerKind) -> Result<Owner, ApiError> {
        let key = match kind {
            OwnerKind::Account => "account_id",
            OwnerKind::Zone => "zone_id",
        };
        self.params
            .get(key)
            .and_then(|s| Owner::parse(kind, s))
            .ok_or(ApiError::MalformedOwnerId(kind.as_str()))
    }

    pub fn csr_id(&self) -> Result<CsrId, ApiError> {
        self.params
            .get("custom_csr_id")
            .and_then(|s| CsrId::parse(s))
            .ok_or(ApiError::MalformedCsrId)
    }
}

/// JSON is the only body type. A missing Content-Type, or curl's default form type, is
/// tolerated: the body must parse as JSON either way.
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
    // `curl -d` without `-H` labels a JSON body as a form; the body still has to parse as JSON.
    let curl_default = mime == "application/x-www-form-urlencoded";
    if mime == "application/json"
        || (mime.starts_with("application/") && mime.ends_with("+json"))
        || curl_default
    {
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
                ApiError::Validation(ValidationErrors::single(FieldError::new(
                    ErrorCode::InvalidRequest,
                    "",
                    "the request body could not be read",
                )))
            }
        })
}

/// The raw query string as decoded pairs.
pub fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    raw.map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}
