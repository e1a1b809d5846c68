//! The one error type of the request cycle, and its mapping to the Cloudflare failure envelope.
//!
//! Policy: client mistakes are typed variants with Cloudflare's status and code; everything
//! the client cannot fix is logged here with its cause and shown only as an opaque 1500
//! (500, or 503 with `Retry-After` when retrying later should help).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::envelope::{ErrorItem, Failure};
use crate::domain::{ErrorCode, ValidationErrors};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid request: {0}")]
    Validation(ValidationErrors),
    #[error("missing authentication headers")]
    MissingCredentials,
    #[error("malformed authentication headers: {0}")]
    MalformedCredentials(&'static str),
    #[error("invalid or expired credentials")]
    InvalidCredentials,
    #[error("not authorized for this resource")]
    Forbidden,
    #[error("malformed {0} identifier")]
    MalformedOwnerId(&'static str),
    #[error("malformed custom CSR id")]
    MalformedCsrId,
    #[error("custom CSR not found")]
    CsrNotFound,
    #[error("Idempotency-Key reused with a different request")]
    IdempotencyKeyReused,
    #[error("no route")]
    NoRoute,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("request body too large")]
    PayloadTooLarge,
    #[error("unsupported content type")]
    UnsupportedMediaType,
    #[error("temporarily unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

pub const MAX_BODY_BYTES: usize = 1024 * 1024;
const RETRY_AFTER_SECS: &str = "1";

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Validation(_)
            | ApiError::MissingCredentials
            | ApiError::MalformedCredentials(_)
            | ApiError::MalformedOwnerId(_)
            | ApiError::MalformedCsrId => StatusCode::BAD_REQUEST,
            ApiError::CsrNotFound => StatusCode::NOT_FOUND,
            ApiError::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::InvalidCredentials | ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::NoRoute => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn items(&self) -> Vec<ErrorItem> {
        match self {
            ApiError::Validation(errors) => errors
                .0
                .iter()
                .map(|e| {
                    if e.pointer.is_empty() {
                        ErrorItem::new(e.code, &e.message)
                    } else {
                        ErrorItem::at(e.code, &e.message, &e.pointer)
                    }
                })
                .collect(),
            ApiError::MissingCredentials => vec![ErrorItem::new(
                ErrorCode::MissingCredentials,
                "Missing X-Auth-Key, X-Auth-Email or Authorization headers",
            )],
            ApiError::MalformedCredentials(what) => vec![ErrorItem::new(
                ErrorCode::MalformedCredentials,
                format!("Invalid request headers: {what}"),
            )],
            ApiError::InvalidCredentials => vec![ErrorItem::new(
                ErrorCode::InvalidCredentials,
                "Invalid access token",
            )],
            ApiError::Forbidden => {
                vec![ErrorItem::new(ErrorCode::Forbidden, "Authentication error")]
            }
            ApiError::MalformedOwnerId(kind) => vec![ErrorItem::new(
                ErrorCode::MalformedObjectId,
                format!(
                    "Could not route to /client/v4, perhaps your object identifier is invalid? (malformed {kind} id)"
                ),
            )],
            ApiError::MalformedCsrId => vec![ErrorItem::new(
                ErrorCode::MalformedCsrId,
                "Invalid custom CSR identifier",
            )],
            ApiError::CsrNotFound => vec![ErrorItem::new(
                ErrorCode::CsrNotFound,
                "Custom CSR not found",
            )],
            ApiError::IdempotencyKeyReused => vec![ErrorItem::new(
                ErrorCode::IdempotencyKeyReused,
                "This Idempotency-Key was already used with a different request body",
            )],
            ApiError::NoRoute => vec![ErrorItem::new(ErrorCode::NoRoute, "No route for that URI")],
            ApiError::MethodNotAllowed => {
                vec![ErrorItem::new(
                    ErrorCode::MethodNotAllowed,
                    "Method not allowed for this route",
                )]
            }
            ApiError::PayloadTooLarge => vec![ErrorItem::new(
                ErrorCode::InvalidRequest,
                format!("request body is larger than {MAX_BODY_BYTES} bytes"),
            )],
            ApiError::UnsupportedMediaType => vec![ErrorItem::new(
                ErrorCode::InvalidRequest,
                "Content-Type must be application/json",
            )],
            ApiError::Unavailable(_) => vec![ErrorItem::new(
                ErrorCode::Internal,
                "Service temporarily unavailable; retry later",
            )],
            ApiError::Internal(_) => vec![ErrorItem::new(ErrorCode::Internal, "Internal error")],
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            ApiError::Internal(cause) => tracing::error!(%cause, "request failed"),
            ApiError::Unavailable(cause) => {
                tracing::warn!(%cause, "request refused: dependency unavailable")
            }
            _ => tracing::debug!(error = %self, "request rejected"),
        }
        let mut response = (self.status(), Json(Failure::new(self.items()))).into_response();
        if matches!(self, ApiError::Unavailable(_)) {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECS),
            );
        }
        response
    }
}

impl From<ValidationErrors> for ApiError {
    fn from(e: ValidationErrors) -> Self {
        ApiError::Validation(e)
    }
}

impl From<crate::db::DbError> for ApiError {
    fn from(e: crate::db::DbError) -> Self {
        if e.is_transient() {
            ApiError::Unavailable(e.to_string())
        } else {
            ApiError::Internal(e.to_string())
        }
    }
}
