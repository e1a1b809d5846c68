//! What the `/client/v4/{accounts|zones}/{id}/custom_csrs[/{custom_csr_id}]` operations do
//! (`routes` holds their annotated entry points).
//!
//! Every operation runs the same gate in the same order: authenticate (9106/6003/9109), parse
//! the owner id (7003), authorize against that owner (10000), and only then look at the CSR id
//! or the body. A caller without access never learns whether an id exists; a caller with
//! access sees another tenant's id exactly like an unknown one (404/1419).

use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use tokio::time::Instant;

use super::auth::authenticate;
use super::envelope::{CsrCollection, CsrIdOnly, CsrPending, CsrSingle, IdOnly, ResultInfo};
use super::extract::{PathIds, query_pairs, read_body, require_json};
use super::result::{CsrResult, PendingResult};
use super::{ApiError, AppState};
use crate::amqp::{CreateJob, PublishError, messages::JOB_VERSION};
use crate::auth::Permission;
use crate::db::{DbError, csrs, jobs};
use crate::domain::{
    CreateCsr, CsrId, ErrorCode, FieldError, ListQuery, Owner, OwnerKind, ValidationErrors,
};

/// While waiting for the completion event, Postgres is checked this often, so a lost event
/// delays an answer by at most this much.
const DB_POLL_INTERVAL: Duration = Duration::from_secs(2);

/// Authenticates, parses the owner and checks the permission on it.
async fn gate(
    app: &AppState,
    kind: OwnerKind,
    ids: &PathIds,
    headers: &HeaderMap,
    needed: Permission,
) -> Result<Owner, ApiError> {
    let principal = authenticate(headers, &app.pool).await?;
    let owner = ids.owner(kind)?;
    if !principal.may(&owner, needed) {
        tracing::debug!(principal = %principal.label, owner = owner.id(), "forbidden");
        return Err(ApiError::Forbidden);
    }
    Ok(owner)
}

async fn client(app: &AppState) -> Result<deadpool_postgres::Object, ApiError> {
    Ok(app.pool.get().await.map_err(DbError::from)?)
}

// ---- create ---------------------------------------------------------------------------

pub(super) async fn create(
    app: AppState,
    kind: OwnerKind,
    ids: PathIds,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let owner = gate(&app, kind, &ids, &headers, Permission::Write).await?;
    let idempotency_key = idempotency_key(&headers)?;
    require_json(&headers)?;
    let body = read_body(&headers, body).await?;
    let request = CreateCsr::parse(&body, kind, app.name_policy)?;

    let mut job = CreateJob {
        version: JOB_VERSION,
        id: CsrId::new(),
        owner,
        request,
        created_at: now_micros(),
        reply_to: app.submitter.instance().to_owned(),
    };
    let mut publish = true;
    let mut replayed = false;
    if let Some(key) = &idempotency_key {
        let hash = request_hash(&job.request)?;
        let claimed =
            jobs::claim_idempotency_key(&**client(&app).await?, &job.owner, key, &hash, &job)
                .await?;
        if let Some(record) = claimed {
            if record.request_hash != hash {
                return Err(ApiError::IdempotencyKeyReused);
            }
            // The same request again: it means the same CSR.
            replayed = true;
            job = CreateJob {
                reply_to: app.submitter.instance().to_owned(),
                ..record.job
            };
            if let Some(done) = settled(&app, &job, replayed).await? {
                return Ok(done);
            }
            // Not finished. Publish again unless the broker is known to have the job (the
            // first attempt failed, died, or is still publishing); a duplicate is harmless,
            // the worker being idempotent on the id. A job the broker confirmed long ago with
            // no outcome yet is published again too, as a last resort.
            publish = !record.published || record.age_secs > REPUBLISH_STALE_SECS;
        }
    }

    let mut waiter = if publish {
        let submitted = app.submitter.submit(&job).await;
        if let Some(key) = &idempotency_key {
            let client = client(&app).await?;
            match &submitted {
                Ok(_) => jobs::mark_published(&**client, &job.owner, key).await?,
                // Certainly not in the broker: free the key so a retry starts afresh. If it may
                // be there, keep the claim, so a retry republishes this very job.
                Err(e) if !replayed && e.certainly_not_delivered() => {
                    jobs::release_claim(&**client, &job.owner, key, job.id).await?
                }
                Err(_) => {}
            }
        }
        let waiter = submitted.map_err(|e| match e {
            PublishError::Encode(e) => ApiError::Internal(e.to_string()),
            other => ApiError::Unavailable(other.to_string()),
        })?;
        tracing::info!(csr_id = %job.id, key_type = job.request.key_type.as_str(), "create accepted");
        waiter
    } else {
        app.submitter.waiters().register(job.id)
    };

    let deadline = Instant::now() + app.create_wait;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            break;
        }
        // Woken by the event or by the poll interval: either way Postgres has the answer.
        let _ = waiter.next(remaining.min(DB_POLL_INTERVAL)).await;
        match settled(&app, &job, replayed).await {
            Ok(Some(done)) => return Ok(done),
            Ok(None) => {}
            // The job is accepted already: a database outage now means "not yet", answered
            // with 202 and the id at the end of the budget, never a 503 that invites a
            // second create.
            Err(ApiError::Unavailable(reason)) => tracing::debug!(%reason, "still waiting"),
            Err(e) => return Err(e),
        }
    }
    tracing::warn!(csr_id = %job.id, "create still pending when the wait budget ran out");
    let pending = PendingResult::new(job.id, &job.owner, job.request.key_type, job.created_at);
    Ok((StatusCode::ACCEPTED, Json(CsrPending::new(pending))).into_response())
}

/// A confirmed job with no outcome after this long is published again on retry.
const REPUBLISH_STALE_SECS: f64 = 300.0;

/// The final answer for this job if there is one yet: 201 with the CSR, or 1500 if the job
/// ended in the dead-letter queue.
async fn settled(
    app: &AppState,
    job: &CreateJob,
    replayed: bool,
) -> Result<Option<Response>, ApiError> {
    let client = client(app).await?;
    if let Some(csr) = csrs::get(&**client, &job.owner, job.id).await? {
        let mut response = (StatusCode::CREATED, Json(CsrSingle::new(csr.into()))).into_response();
        if replayed {
            response.headers_mut().insert(
                "idempotent-replayed",
                axum::http::HeaderValue::from_static("true"),
            );
        }
        return Ok(Some(response));
    }
    if let Some(reason) = jobs::failure(&**client, &job.owner, job.id).await? {
        return Err(ApiError::Internal(format!(
            "create {} failed: {reason}",
            job.id
        )));
    }
    Ok(None)
}

/// The `Idempotency-Key` header (IETF httpapi draft: a quoted string; the bare form Stripe
/// uses is accepted too): 1–255 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let bad = || {
        ApiError::Validation(ValidationErrors::single(FieldError::new(
            ErrorCode::InvalidRequest,
            "",
            "Idempotency-Key must be 1-255 visible ASCII characters",
        )))
    };
    let raw = value.to_str().map_err(|_| bad())?.trim();
    let key = raw
        .strip_prefix('"')
        .and_then(|k| k.strip_suffix('"'))
        .unwrap_or(raw);
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
    {
        return Err(bad());
    }
    Ok(Some(key.to_owned()))
}

/// What makes two creates "the same request": the validated request, not its JSON spelling.
fn request_hash(request: &CreateCsr) -> Result<Vec<u8>, ApiError> {
    use sha2::{Digest, Sha256};
    let canonical = serde_json::to_vec(request).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Sha256::digest(canonical).to_vec())
}

/// Postgres keeps microseconds; stamping at that precision makes the 201 and every later
/// read show the same `created_at`.
fn now_micros() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

// ---- list -----------------------------------------------------------------------------

pub(super) async fn list(
    app: AppState,
    kind: OwnerKind,
    ids: PathIds,
    headers: HeaderMap,
    raw_query: Option<String>,
) -> Result<Response, ApiError> {
    let owner = gate(&app, kind, &ids, &headers, Permission::Read).await?;
    let pairs = query_pairs(raw_query.as_deref());
    let query = ListQuery::parse(kind, pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
    let (page, total) = csrs::list(&mut **client(&app).await?, &owner, &query).await?;
    let total = u64::try_from(total).unwrap_or(0);
    let result_info = ResultInfo {
        page: query.page,
        per_page: query.per_page,
        count: page.len() as u64,
        total_count: total,
        total_pages: total.div_ceil(query.per_page),
    };
    let body = CsrCollection {
        success: true,
        errors: Vec::new(),
        messages: Vec::new(),
        result: page.into_iter().map(CsrResult::from).collect(),
        result_info,
    };
    Ok(Json(body).into_response())
}

// ---- get ------------------------------------------------------------------------------

pub(super) async fn get(
    app: AppState,
    kind: OwnerKind,
    ids: PathIds,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let owner = gate(&app, kind, &ids, &headers, Permission::Read).await?;
    let id = ids.csr_id()?;
    let csr = csrs::get(&**client(&app).await?, &owner, id)
        .await?
        .ok_or(ApiError::CsrNotFound)?;
    Ok(Json(CsrSingle::new(csr.into())).into_response())
}

// ---- delete ---------------------------------------------------------------------------

/// The body, if any, is never read: Cloudflare's spec declares an unschema'd one and the
/// official SDKs send none.
pub(super) async fn delete(
    app: AppState,
    kind: OwnerKind,
    ids: PathIds,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let owner = gate(&app, kind, &ids, &headers, Permission::Write).await?;
    let id = ids.csr_id()?;
    if !csrs::delete(&**client(&app).await?, &owner, id).await? {
        return Err(ApiError::CsrNotFound);
    }
    tracing::info!(csr_id = %id, "custom CSR and its sealed key deleted");
    Ok(Json(CsrIdOnly::new(IdOnly { id: id.to_string() })).into_response())
}
