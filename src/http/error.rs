//! The one error type of the request cycle, and its mapping to the Cloudflare failure envelope.
//!
//! Policy: client mistakes are typed variants with Cloudflare's status and code. Everything the
//! client cannot fix carries its cause as a source error; it is logged here, with the whole
//! cause chain, once, and shown to the client only as an opaque 1500 (500, or 503 with
//! `Retry-After` when retrying later should help).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::envelope::{ErrorItem, Failure};
use crate::domain::{ErrorCode, ValidationErrors};
use crate::ingress::{
    AccessError, AuthError, BatchError, CreateError, CredentialsProblem, ServiceError,
};
use crate::log_throttle::LogThrottle;
use crate::queue::{BoxError, PublishError};
use crate::telemetry::ErrorChain;

pub const MAX_BODY_BYTES: usize = 1024 * 1024;
const RETRY_AFTER_SECS: &str = "1";

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
    #[error("the custom CSR's key is used by a custom certificate")]
    CsrInUse,
    /// An edit met others of the same certificate every time it tried.
    #[error("the custom certificate was edited concurrently")]
    CertificateEditConflict,
    /// A certificate upload's `custom_csr_id` names no CSR of the caller's.
    #[error("the custom CSR a certificate names was not found")]
    CertificateCsrNotFound,
    #[error("malformed custom certificate id")]
    MalformedCertificateId,
    #[error("custom certificate not found")]
    CertificateNotFound,
    #[error("the custom CSR this Idempotency-Key created has been deleted")]
    CsrDeleted,
    #[error("malformed key recipient id")]
    MalformedRecipientId,
    #[error("key recipient not found")]
    RecipientNotFound,
    #[error("the key recipient is {0}")]
    RecipientNotActive(&'static str),
    #[error("malformed batch id")]
    MalformedBatchId,
    #[error("batch not found")]
    BatchNotFound,
    #[error("Idempotency-Key reused with a different request")]
    IdempotencyKeyReused,
    #[error("no route")]
    NoRoute,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("request body larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("unsupported content type")]
    UnsupportedMediaType,
    #[error("request body not received in time")]
    BodyTimeout,
    /// Written by the connection layer, not a handler: the head started arriving and did not
    /// finish within the header timeout.
    #[error("request head not received in time")]
    HeadTimeout,
    /// Written by the connection layer: every connection slot is serving a request.
    #[error("every connection slot is serving a request")]
    Overloaded,
    #[error("request URI too long")]
    UriTooLong,
    #[error("malformed request head: {0}")]
    MalformedHead(&'static str),
    #[error("unsupported transfer coding")]
    UnsupportedTransferCoding,
    #[error("request headers too large or too many")]
    HeadersTooLarge,
    #[error("too many requests ({limit})")]
    RateLimited {
        limit: &'static str,
        retry_after_secs: u64,
    },
    #[error("request deadline exceeded")]
    DeadlineExceeded,
    #[error("temporarily unavailable")]
    Unavailable(#[source] BoxError),
    #[error("internal error")]
    Internal(#[source] BoxError),
}

impl ApiError {
    pub fn internal(cause: impl Into<BoxError>) -> Self {
        ApiError::Internal(cause.into())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Validation(_)
            | ApiError::MissingCredentials
            | ApiError::MalformedCredentials(_)
            | ApiError::MalformedOwnerId(_)
            | ApiError::MalformedCsrId
            | ApiError::MalformedCertificateId
            | ApiError::MalformedBatchId
            | ApiError::MalformedRecipientId
            | ApiError::MalformedHead(_) => StatusCode::BAD_REQUEST,
            ApiError::UnsupportedTransferCoding => StatusCode::NOT_IMPLEMENTED,
            ApiError::CsrInUse | ApiError::CertificateEditConflict => StatusCode::CONFLICT,
            ApiError::CsrNotFound
            | ApiError::CsrDeleted
            | ApiError::BatchNotFound
            | ApiError::CertificateCsrNotFound
            | ApiError::CertificateNotFound
            | ApiError::RecipientNotFound => StatusCode::NOT_FOUND,
            ApiError::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::InvalidCredentials
            | ApiError::Forbidden
            | ApiError::RecipientNotActive(_) => StatusCode::FORBIDDEN,
            ApiError::NoRoute => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::BodyTimeout | ApiError::HeadTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::UriTooLong => StatusCode::URI_TOO_LONG,
            ApiError::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) | ApiError::DeadlineExceeded | ApiError::Overloaded => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn items(&self) -> Vec<ErrorItem> {
        use ErrorCode as C;
        let one = |code, message: &str| vec![ErrorItem::new(code, message)];
        match self {
            ApiError::Validation(errors) => errors
                .clone()
                .capped()
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
            ApiError::MissingCredentials => one(
                C::MissingCredentials,
                "Missing X-Auth-Key, X-Auth-Email or Authorization headers",
            ),
            ApiError::MalformedCredentials(what) => one(
                C::MalformedCredentials,
                &format!("Invalid request headers: {what}"),
            ),
            ApiError::InvalidCredentials => one(C::InvalidCredentials, "Invalid access token"),
            ApiError::Forbidden => one(C::Forbidden, "Authentication error"),
            ApiError::MalformedOwnerId(kind) => one(
                C::MalformedObjectId,
                &format!(
                    "Could not route to /client/v4, perhaps your object identifier is invalid? (malformed {kind} id)"
                ),
            ),
            ApiError::MalformedCsrId => one(C::MalformedCsrId, "Invalid custom CSR identifier"),
            ApiError::CsrNotFound => one(C::CsrNotFound, "Custom CSR not found"),
            ApiError::CsrInUse => one(
                C::CsrInUse,
                "The custom CSR's private key is used by a custom certificate. Delete the certificate first.",
            ),
            ApiError::CertificateEditConflict => one(
                C::InvalidRequest,
                "The custom certificate was edited at the same time by another request; send the edit again.",
            ),
            ApiError::CertificateCsrNotFound => vec![ErrorItem::at(
                C::CustomCsrNotFound,
                "The custom CSR was not found.",
                "/custom_csr_id",
            )],
            ApiError::MalformedCertificateId => one(
                C::InvalidCertificate,
                "Invalid custom certificate identifier",
            ),
            ApiError::CertificateNotFound => {
                one(C::InvalidCertificate, "Custom certificate not found")
            }
            ApiError::MalformedRecipientId => {
                one(C::MalformedRecipientId, "Invalid key recipient identifier")
            }
            ApiError::RecipientNotFound => one(C::RecipientNotFound, "Key recipient not found"),
            ApiError::RecipientNotActive(status) => one(
                C::RecipientNotActive,
                if *status == "pending" {
                    "The key recipient is pending: an operator must approve it (csrd recipient approve) before it receives keys"
                } else {
                    "The key recipient is revoked: it receives nothing"
                },
            ),
            ApiError::MalformedBatchId => one(C::MalformedCsrId, "Invalid batch identifier"),
            ApiError::BatchNotFound => one(C::CsrNotFound, "Batch not found"),
            ApiError::CsrDeleted => one(
                C::CsrNotFound,
                "Custom CSR not found: the CSR created with this Idempotency-Key has been deleted",
            ),
            ApiError::IdempotencyKeyReused => one(
                C::IdempotencyKeyReused,
                "This Idempotency-Key was already used with a different request body",
            ),
            ApiError::NoRoute => one(C::NoRoute, "No route for that URI"),
            ApiError::MethodNotAllowed => {
                one(C::MethodNotAllowed, "Method not allowed for this route")
            }
            ApiError::PayloadTooLarge { limit } => one(
                C::InvalidRequest,
                &format!("request body is larger than {limit} bytes"),
            ),
            ApiError::UnsupportedMediaType => {
                one(C::InvalidRequest, "Content-Type must be application/json")
            }
            ApiError::BodyTimeout => one(C::InvalidRequest, "request body not received in time"),
            ApiError::HeadTimeout => one(C::InvalidRequest, "request head not received in time"),
            ApiError::UriTooLong => one(C::InvalidRequest, "request URI too long"),
            ApiError::MalformedHead(why) => one(C::InvalidRequest, why),
            ApiError::UnsupportedTransferCoding => one(
                C::InvalidRequest,
                "Transfer-Encoding other than a single \"chunked\" is not supported",
            ),
            ApiError::HeadersTooLarge => one(
                C::InvalidRequest,
                "request header fields too large, or too many",
            ),
            ApiError::RateLimited { limit, .. } => one(
                C::RateLimited,
                match *limit {
                    "outstanding" => {
                        "Too many items accepted and not yet made for this account or zone; \
                         wait for its batches to finish"
                    }
                    "hourly_quota" => {
                        "The hourly item quota of this account or zone is used up; \
                         retry after the hour"
                    }
                    _ => "Please wait and consider throttling your request speed",
                },
            ),
            ApiError::Unavailable(_) | ApiError::DeadlineExceeded | ApiError::Overloaded => {
                one(C::Internal, "Service temporarily unavailable; retry later")
            }
            ApiError::Internal(_) => one(C::Internal, "Internal error"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            ApiError::Internal(_) => {
                tracing::error!(error = %ErrorChain(&self), "request failed")
            }
            ApiError::Unavailable(_) => {
                // A burst of 503s is one condition: one line a second, with the count.
                static UNAVAILABLE: LogThrottle = LogThrottle::new();
                if let Some(left_out) = UNAVAILABLE.allow() {
                    tracing::warn!(error = %ErrorChain(&self), left_out, "request refused: dependency unavailable");
                }
            }
            ApiError::DeadlineExceeded => {
                static DEADLINE: LogThrottle = LogThrottle::new();
                if let Some(left_out) = DEADLINE.allow() {
                    tracing::warn!(left_out, "request deadline exceeded");
                }
            }
            _ => tracing::debug!(error = %self, "request rejected"),
        }
        let mut response = (self.status(), Json(self.failure())).into_response();
        if let Some(value) = self.retry_after() {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}

impl ApiError {
    /// The failure envelope this error answers with. Every failure csrd sends is built here,
    /// by handlers through `into_response` and by the connection layer (`server::canned`).
    pub fn failure(&self) -> Failure {
        Failure::new(self.items())
    }

    /// The `Retry-After` this error answers with, if any.
    pub fn retry_after(&self) -> Option<HeaderValue> {
        match self {
            ApiError::Unavailable(_) | ApiError::DeadlineExceeded | ApiError::Overloaded => {
                Some(HeaderValue::from_static(RETRY_AFTER_SECS))
            }
            ApiError::RateLimited {
                retry_after_secs, ..
            } => Some(HeaderValue::from(*retry_after_secs)),
            _ => None,
        }
    }
}

impl From<ValidationErrors> for ApiError {
    fn from(e: ValidationErrors) -> Self {
        ApiError::Validation(e)
    }
}

impl From<crate::ingress::Refused> for ApiError {
    fn from(e: crate::ingress::Refused) -> Self {
        crate::metrics::rate_limited(e.limit());
        ApiError::RateLimited {
            limit: e.limit(),
            retry_after_secs: e.retry_after_secs(),
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Unavailable(cause) => ApiError::Unavailable(cause),
            ServiceError::Internal(cause) => ApiError::Internal(cause),
        }
    }
}

/// A job that could not be queued is a 503 (retry: with an Idempotency-Key it is always
/// safe), except one that cannot even be encoded, which is a bug.
impl From<PublishError> for ApiError {
    fn from(e: PublishError) -> Self {
        match e {
            PublishError::Encode(_) => ApiError::Internal(Box::new(e)),
            _ => ApiError::Unavailable(Box::new(e)),
        }
    }
}

impl From<CreateError> for ApiError {
    fn from(e: CreateError) -> Self {
        match e {
            CreateError::IdempotencyKeyReused => ApiError::IdempotencyKeyReused,
            CreateError::Refused(e) => e.into(),
            CreateError::Publish(e) => e.into(),
            CreateError::Service(e) => e.into(),
        }
    }
}

impl From<BatchError> for ApiError {
    fn from(e: BatchError) -> Self {
        match e {
            BatchError::IdempotencyKeyReused => ApiError::IdempotencyKeyReused,
            BatchError::Invalid(e) => e.into(),
            BatchError::Refused(e) => e.into(),
            BatchError::Service(e) => e.into(),
        }
    }
}

impl From<crate::ingress::CertificateError> for ApiError {
    fn from(e: crate::ingress::CertificateError) -> Self {
        use crate::ingress::CertificateError as E;
        match e {
            E::Invalid(e) => e.into(),
            E::CsrNotFound => ApiError::CertificateCsrNotFound,
            E::NotFound => ApiError::CertificateNotFound,
            E::EditConflict => ApiError::CertificateEditConflict,
            E::Refused(e) => e.into(),
            E::Service(e) => e.into(),
        }
    }
}

impl From<crate::ingress::DeliveryError> for ApiError {
    fn from(e: crate::ingress::DeliveryError) -> Self {
        use crate::ingress::DeliveryError as E;
        match e {
            E::TooManyRecipients => {
                ApiError::Validation(ValidationErrors::single(crate::domain::FieldError::new(
                    ErrorCode::InvalidKeyRecipient,
                    "",
                    format!(
                        "a tenant has at most {} key recipients that are not revoked: revoke one first",
                        crate::ingress::deliveries::MAX_RECIPIENTS
                    ),
                )))
            }
            E::NotFound => ApiError::RecipientNotFound,
            E::NotActive(status) => ApiError::RecipientNotActive(status.as_str()),
            E::Refused(e) => e.into(),
            E::Service(e) => e.into(),
        }
    }
}

impl From<AccessError> for ApiError {
    fn from(e: AccessError) -> Self {
        match e {
            AccessError::Credentials(CredentialsProblem::Missing) => ApiError::MissingCredentials,
            AccessError::Credentials(CredentialsProblem::Malformed(why)) => {
                ApiError::MalformedCredentials(why)
            }
            AccessError::Auth(e) => e.into(),
            AccessError::MalformedOwnerId(kind) => ApiError::MalformedOwnerId(kind.as_str()),
            AccessError::Forbidden => ApiError::Forbidden,
            AccessError::Refused(e) => e.into(),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Invalid => ApiError::InvalidCredentials,
            AuthError::TooManyFailures { retry_after } => {
                crate::metrics::rate_limited("auth_failures");
                ApiError::RateLimited {
                    limit: "auth_failures",
                    retry_after_secs: retry_after.as_secs_f64().ceil().max(1.0) as u64,
                }
            }
            AuthError::Service(e) => e.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("connection reset by peer")]
    struct Root;

    #[test]
    fn a_1500_keeps_the_whole_cause_chain_for_the_log_and_shows_none_of_it() {
        let err: ApiError = ServiceError::Internal(Box::new(Root)).into();
        assert_eq!(err.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            ErrorChain(&err).to_string(),
            "internal error: connection reset by peer"
        );
        let shown = serde_json::to_string(&err.items()).unwrap();
        assert!(!shown.contains("connection reset"), "{shown}");
    }

    #[test]
    fn publish_errors_are_503_except_encoding_bugs() {
        assert_eq!(
            ApiError::from(PublishError::Nacked).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        let encode = serde_json::from_str::<u8>("x").unwrap_err();
        assert_eq!(
            ApiError::from(PublishError::Encode(std::sync::Arc::new(encode))).status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
