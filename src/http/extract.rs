//! Request pieces, read so that every failure becomes a Cloudflare envelope rather than the
//! framework's plain-text rejection.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};

use super::error::ApiError;
use super::server::{BodyDeadline, PeerAddr};
use crate::domain::{
    CsrId, ErrorCode, FieldError, IdempotencyKey, Owner, OwnerKind, ValidationErrors,
};
use crate::fairshare::{CpuSlots, Lane};
use crate::ingress::Refused;
use crate::ingress::limits::{BatchAdmission, BodyReservation};

/// The path's ids, not yet validated: authentication comes first, then the owner id (7003),
/// then authorization, and only then the CSR id (1418), so a caller without access learns
/// nothing about ids.
pub struct PathIds {
    params: HashMap<String, String>,
    /// The client's address (limits on failed authentication are kept per address too).
    peer: Option<std::net::IpAddr>,
}

impl<S: Send + Sync> FromRequestParts<S> for PathIds {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let params = Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map(|p| p.0)
            .unwrap_or_default();
        let peer = parts.extensions.get::<PeerAddr>().map(|p| p.0.ip());
        Ok(Self { params, peer })
    }
}

impl PathIds {
    /// The owner the path names (its `zone_id` or `account_id`), or the kind whose id does not
    /// parse.
    pub fn owner(&self) -> Result<Owner, OwnerKind> {
        let (kind, id) = match self.params.get("zone_id") {
            Some(id) => (OwnerKind::Zone, Some(id)),
            None => (OwnerKind::Account, self.params.get("account_id")),
        };
        id.and_then(|id| Owner::parse(kind, id)).ok_or(kind)
    }

    pub fn peer(&self) -> Option<std::net::IpAddr> {
        self.peer
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    pub fn csr_id(&self) -> Result<CsrId, ApiError> {
        self.params
            .get("custom_csr_id")
            .and_then(|s| CsrId::parse(s))
            .ok_or(ApiError::MalformedCsrId)
    }
}

/// A JSON request body of at most [`MAX_BODY_BYTES`](super::error::MAX_BODY_BYTES), read only
/// after the caller has been authenticated and authorised (so a caller without access learns
/// nothing from body errors either), its bytes reserved in `reservation` as they arrive. JSON
/// is the only body type; a missing Content-Type, or curl's default form type, is tolerated:
/// the body must parse as JSON either way. Over the limit is the envelope's 413.
///
/// The bytes are parsed by `CreateCsr::parse` (or the certificate parsers), not by axum's
/// `Json` extractor: Cloudflare answers with one code per field (1405–1417, each with a JSON
/// pointer), all of them at once, which a typed serde extraction cannot report; and `Json`
/// refuses curl's form content type.
pub async fn json_body(
    request: Request,
    reservation: &mut BodyReservation,
) -> Result<Bytes, ApiError> {
    read_reserving(request, super::error::MAX_BODY_BYTES, reservation).await
}

/// A JSON request body of at most `limit` bytes, for the routes whose bodies are larger than
/// a single request's (a batch, a bulk upload), reserved in the submission's admission.
pub async fn json_body_reserving(
    request: Request,
    limit: usize,
    admission: &mut BatchAdmission,
) -> Result<Bytes, ApiError> {
    read_reserving(request, limit, &mut admission.body).await
}

/// Reads a JSON body of at most `limit` bytes, reserving its memory as it arrives; reading
/// stops (429) if the reservation is stopped to make room for another tenant.
async fn read_reserving(
    request: Request,
    limit: usize,
    reservation: &mut BodyReservation,
) -> Result<Bytes, ApiError> {
    use http_body_util::BodyExt as _;
    require_json(request.headers())?;
    refuse_declared_over(&request, limit)?;
    let deadline = body_deadline(&request);
    let stop = reservation.stop_token();
    // Room for what the client declares (the pages are only touched as bytes arrive), so the
    // buffer is not copied as it grows.
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = request.into_body();
    let mut read = Vec::with_capacity(declared.min(limit));
    let reading = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                unread_body(
                    std::error::Error::source(&e)
                        .is_some_and(|s| s.is::<http_body_util::LengthLimitError>()),
                    limit,
                )
            })?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if read.len() + data.len() > limit {
                return Err(ApiError::PayloadTooLarge { limit });
            }
            reservation
                .reserve_for_body(read.len() + data.len())
                .await?;
            read.extend_from_slice(&data);
        }
        reservation.body_read();
        Ok::<_, ApiError>(())
    };
    tokio::select! {
        done = within(deadline, reading) => done??,
        () = stop.cancelled() => return Err(Refused::BatchMemory.into()),
    }
    Ok(Bytes::from(read))
}

/// Bodies larger than this are parsed in the tenant's turn on the CPU slots rather than on
/// the async threads: a create or an upload is a few KiB; a megabyte of JSON is milliseconds.
const PARSE_INLINE_BYTES: usize = 16 * 1024;

/// `parse(body)`, inline when the body is small, else on the blocking pool in one of `owner`'s
/// fair turns on the CPU slots (charged what it took), so a flood of large bodies cannot take
/// the async threads another tenant's requests run on.
pub async fn parse_body<T: Send + 'static>(
    cpu: &CpuSlots,
    owner: &Owner,
    body: Bytes,
    parse: impl FnOnce(&[u8]) -> T + Send + 'static,
) -> Result<T, ApiError> {
    if body.len() <= PARSE_INLINE_BYTES {
        return Ok(parse(&body));
    }
    // About 10 ns a byte (strict JSON into a tree).
    let estimate = std::time::Duration::from_nanos(body.len() as u64 * 10);
    let (parsed, _) = cpu
        .run(owner, Lane::Interactive, estimate, move || parse(&body))
        .await
        .map_err(ApiError::internal)?;
    Ok(parsed)
}

/// 413 at once for a body whose declared length is over `limit`, without waiting for it.
fn refuse_declared_over(request: &Request, limit: usize) -> Result<(), ApiError> {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n > limit as u64 => Err(ApiError::PayloadTooLarge { limit }),
        _ => Ok(()),
    }
}

/// The connection layer's deadline for this request's body (none outside the server, e.g. in
/// router tests).
fn body_deadline(request: &Request) -> Option<tokio::time::Instant> {
    request
        .extensions()
        .get::<BodyDeadline>()
        .map(|deadline| deadline.0)
}

/// A body read that must end by `deadline`: a client sending slowly, or announcing more bytes
/// than it sends, gets 408 instead of holding the request open.
async fn within<T>(
    deadline: Option<tokio::time::Instant>,
    read: impl Future<Output = T>,
) -> Result<T, ApiError> {
    match deadline {
        Some(at) => tokio::time::timeout_at(at, read)
            .await
            .map_err(|_| ApiError::BodyTimeout),
        None => Ok(read.await),
    }
}

/// Why a body was not read: too large (413), or cut short or broken (400).
fn unread_body(too_large: bool, limit: usize) -> ApiError {
    if too_large {
        ApiError::PayloadTooLarge { limit }
    } else {
        ApiError::Validation(ValidationErrors::single(FieldError::new(
            ErrorCode::InvalidRequest,
            "",
            "the request body could not be read",
        )))
    }
}

fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
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

/// The `Idempotency-Key` header, if sent.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<IdempotencyKey>, ApiError> {
    if headers.get_all("idempotency-key").iter().nth(1).is_some() {
        return Err(ApiError::Validation(ValidationErrors::single(
            FieldError::new(
                ErrorCode::InvalidRequest,
                "",
                "Idempotency-Key was sent more than once",
            ),
        )));
    }
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let parsed = value
        .to_str()
        .map_err(|_| {
            FieldError::new(
                ErrorCode::InvalidRequest,
                "",
                "Idempotency-Key must be 1-255 visible ASCII characters",
            )
        })
        .and_then(IdempotencyKey::parse);
    parsed
        .map(Some)
        .map_err(|e| ApiError::Validation(ValidationErrors::single(e)))
}

/// The raw query string as decoded pairs.
pub fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    raw.map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}
