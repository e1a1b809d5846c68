//! `/client/v4/{accounts|zones}/{id}/custom_csrs` handlers.

use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use tokio::time::Instant;

use super::auth::authenticate;
use super::envelope::success;
use super::extract::{OwnerSegment, read_body, require_json};
use super::result::{CsrResult, PendingResult};
use super::{ApiError, AppState};
use crate::amqp::{CreateJob, Outcome, PublishError, messages::JOB_VERSION};
use crate::auth::Permission;
use crate::db::csrs;
use crate::domain::{CreateCsr, CsrId, Owner, OwnerKind};

/// While waiting for the completion event, Postgres is checked this often, so a lost event
/// delays an answer by at most this much.
const DB_POLL_INTERVAL: Duration = Duration::from_secs(2);

pub async fn create_for_account(
    State(app): State<AppState>,
    segment: OwnerSegment,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    create(app, OwnerKind::Account, segment, headers, body).await
}

pub async fn create_for_zone(
    State(app): State<AppState>,
    segment: OwnerSegment,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    create(app, OwnerKind::Zone, segment, headers, body).await
}

async fn create(
    app: AppState,
    kind: OwnerKind,
    segment: OwnerSegment,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let principal = authenticate(&headers, &app.pool).await?;
    let owner = segment.parse(kind)?;
    if !principal.may(&owner, Permission::Write) {
        return Err(ApiError::Forbidden);
    }
    require_json(&headers)?;
    let body = read_body(&headers, body).await?;
    let request = CreateCsr::parse(&body, kind, app.name_policy)?;

    let job = CreateJob {
        version: JOB_VERSION,
        id: CsrId::new(),
        owner,
        request,
        created_at: now_micros(),
        reply_to: app.submitter.instance().to_owned(),
    };
    let mut waiter = app.submitter.submit(&job).await.map_err(|e| match e {
        PublishError::Encode(e) => ApiError::Internal(e.to_string()),
        other => ApiError::Unavailable(other.to_string()),
    })?;
    tracing::info!(csr_id = %job.id, principal = %principal.label, key_type = job.request.key_type.as_str(), "create accepted");

    let deadline = Instant::now() + app.create_wait;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            break;
        }
        if let Some(Outcome::Failed { reason }) = waiter.next(remaining.min(DB_POLL_INTERVAL)).await
        {
            return Err(ApiError::Internal(format!(
                "create {} failed: {reason}",
                job.id
            )));
        }
        // Whether woken by the event or by the poll interval, Postgres has the answer.
        if let Some(created) = fetch(&app, &job.owner, job.id).await? {
            return Ok(created);
        }
    }
    tracing::warn!(csr_id = %job.id, "create still pending when the wait budget ran out");
    let pending = PendingResult::new(job.id, &job.owner, job.request.key_type, job.created_at);
    Ok((StatusCode::ACCEPTED, Json(success(pending))).into_response())
}

async fn fetch(app: &AppState, owner: &Owner, id: CsrId) -> Result<Option<Response>, ApiError> {
    let client = app.pool.get().await.map_err(crate::db::DbError::from)?;
    let csr = csrs::get(&**client, owner, id).await?;
    Ok(csr.map(|csr| (StatusCode::CREATED, Json(success(CsrResult::new(&csr)))).into_response()))
}

/// Postgres keeps microseconds; stamping at that precision makes the 201 and every later
/// read show the same `created_at`.
fn now_micros() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}
