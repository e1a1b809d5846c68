//! What the `/client/v4/{accounts|zones}/{id}/custom_csrs[/{custom_csr_id}]` operations do
//! (`routes` holds their annotated entry points): parse the request, call the use case, map its
//! answer to Cloudflare's envelope.
//!
//! Every operation passes the same gate first ([`Authorized`]): authenticate (9106/6003/9109),
//! parse the owner id (7003), authorize against that owner (10000), charge the request rate;
//! only then are the CSR id or the body looked at. A caller without access never learns
//! whether an id exists; a caller with access sees another tenant's id exactly like an
//! unknown one (404/1419).

use axum::Json;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::authorized::{Authorized, Reads, Writes};
use super::envelope::{CsrCollection, CsrIdOnly, CsrPending, CsrSingle, IdOnly, ResultInfo};
use super::extract::{idempotency_key, json_body, parse_body, query_pairs};
use super::result::{CsrResult, PendingResult};
use super::{ApiError, AppState};
use crate::db::csrs::Deletion;
use crate::domain::{CreateCsr, CreateOutcome, CsrId, ListQuery};

pub(super) async fn create(
    app: AppState,
    caller: Authorized<Writes>,
    request: Request,
) -> Result<Response, ApiError> {
    let key = idempotency_key(request.headers())?;
    // Boxed, as the create's other steps before its wait are: the body's read (2 KB of
    // future) would otherwise stay part of every open create's memory while it waits.
    let body = Box::pin(json_body(
        request,
        &mut app.limits.body_reservation(&caller.owner),
    ))
    .await?;
    let (kind, policy) = (caller.kind(), app.name_policy);
    let csr_request = parse_body(&app.cpu, &caller.owner, body, move |b| {
        CreateCsr::parse(b, kind, policy)
    })
    .await??;
    let outcome = app
        .creates
        .create(caller.owner, csr_request, key.as_ref())
        .await?;
    created(outcome)
}

/// 201 with the CSR, 202 with the id to find it by later, or the failure.
fn created(outcome: CreateOutcome) -> Result<Response, ApiError> {
    match outcome {
        CreateOutcome::Created { csr, replayed } => {
            let mut response =
                (StatusCode::CREATED, Json(CsrSingle::new(csr.into()))).into_response();
            if replayed {
                response
                    .headers_mut()
                    .insert("idempotent-replayed", HeaderValue::from_static("true"));
            }
            Ok(response)
        }
        CreateOutcome::Pending(pending) => Ok((
            StatusCode::ACCEPTED,
            Json(CsrPending::new(PendingResult::from(pending))),
        )
            .into_response()),
        CreateOutcome::Failed { id, reason } => {
            Err(ApiError::internal(CreateFailed { id, reason }))
        }
        CreateOutcome::Deleted { .. } => Err(ApiError::CsrDeleted),
    }
}

/// The cause logged with the 1500 of a create whose job was dead-lettered.
#[derive(Debug, thiserror::Error)]
#[error("create {id} failed for good: {reason}")]
struct CreateFailed {
    id: CsrId,
    reason: String,
}

pub(super) async fn list(
    app: AppState,
    caller: Authorized<Reads>,
    raw_query: Option<String>,
) -> Result<Response, ApiError> {
    let pairs = query_pairs(raw_query.as_deref());
    let query = ListQuery::parse(
        caller.kind(),
        pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    )?;
    // A page of 50 CSRs of 150 SANs is 4 MB: its place among the large answers first.
    let place = app.limits.admit_large_answer(&caller.owner).await?;
    let page = app.catalog.list(&caller.owner, &query).await?;
    let result_info = ResultInfo {
        page: query.page,
        per_page: query.per_page,
        count: page.items.len() as u64,
        total_count: page.total,
        total_pages: page.total.div_ceil(query.per_page),
    };
    let body = CsrCollection {
        success: true,
        errors: Vec::new(),
        messages: Vec::new(),
        result: page.items.into_iter().map(CsrResult::from).collect(),
        result_info,
    };
    Ok(super::large_answer::large_json(
        StatusCode::OK,
        &body,
        place,
    ))
}

pub(super) async fn get(app: AppState, caller: Authorized<Reads>) -> Result<Response, ApiError> {
    let id = caller.ids.csr_id()?;
    let csr = app
        .catalog
        .get(&caller.owner, id)
        .await?
        .ok_or(ApiError::CsrNotFound)?;
    Ok(Json(CsrSingle::new(csr.into())).into_response())
}

/// The body, if any, is never read: Cloudflare's spec declares an unschema'd one and the
/// official SDKs send none.
pub(super) async fn delete(
    app: AppState,
    caller: Authorized<Writes>,
) -> Result<Response, ApiError> {
    let id = caller.ids.csr_id()?;
    match app.catalog.delete(&caller.owner, id).await? {
        Deletion::Deleted => {}
        Deletion::NotFound => return Err(ApiError::CsrNotFound),
        Deletion::InUse => return Err(ApiError::CsrInUse),
    }
    Ok(Json(CsrIdOnly::new(IdOnly { id: id.to_string() })).into_response())
}
