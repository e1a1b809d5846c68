//! What the `/client/v4/{accounts|zones}/{id}/custom_csrs[/{custom_csr_id}]` operations do
//! (`routes` holds their annotated entry points): parse the request, call the use case, map its
//! answer to Cloudflare's envelope.
//!
//! Every operation runs the same gate in the same order: authenticate (9106/6003/9109), parse
//! the owner id (7003), authorize against that owner (10000), and only then look at the CSR id
//! or the body. A caller without access never learns whether an id exists; a caller with
//! access sees another tenant's id exactly like an unknown one (404/1419).

use axum::Json;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::auth::credentials;
use super::envelope::{CsrCollection, CsrIdOnly, CsrPending, CsrSingle, IdOnly, ResultInfo};
use super::extract::{PathIds, idempotency_key, json_body, query_pairs};
use super::result::{CsrResult, PendingResult};
use super::{ApiError, AppState};
use crate::audit::{Actor, AuditEvent};
use crate::auth::Permission;
use crate::domain::{CreateCsr, CreateOutcome, CsrId, ListQuery, Owner, OwnerKind};

/// Authenticates, parses the owner and checks the permission on it.
pub(super) async fn gate(
    app: &AppState,
    kind: OwnerKind,
    ids: &PathIds,
    headers: &HeaderMap,
    needed: Permission,
) -> Result<Owner, ApiError> {
    let authenticated = match credentials(headers) {
        Ok(presented) => app
            .authenticator
            .authenticate(&presented, ids.peer())
            .await
            .map_err(ApiError::from),
        Err(e) => Err(e),
    };
    let principal = match authenticated {
        Ok(principal) => principal,
        Err(e) => {
            if let Some(reason) = e.auth_failure() {
                app.audit.record_refusal(
                    AuditEvent::new("auth.failure", "denied", Actor::Anonymous)
                        .detail(serde_json::json!({ "reason": reason })),
                );
            }
            return Err(e);
        }
    };
    crate::audit::identify_actor(&principal);
    let owner = ids.owner(kind)?;
    if !principal.may(&owner, needed) {
        tracing::debug!(principal = %principal.label, owner = owner.id(), "forbidden");
        app.audit.record_refusal(
            AuditEvent::new("access.denied", "denied", Actor::Anonymous)
                .owner(&owner)
                .detail(serde_json::json!({ "needed": needed.as_str() })),
        );
        return Err(ApiError::Forbidden);
    }
    app.limits.charge(&owner, 1.0).await?;
    Ok(owner)
}

pub(super) async fn create(
    app: AppState,
    kind: OwnerKind,
    ids: PathIds,
    request: Request,
) -> Result<Response, ApiError> {
    let owner = gate(&app, kind, &ids, request.headers(), Permission::Write).await?;
    let key = idempotency_key(request.headers())?;
    let body = json_body(request).await?;
    let csr_request = CreateCsr::parse(&body, kind, app.name_policy)?;
    let mut admitted = app
        .limits
        .admit_create(&owner, csr_request.key_type, app.creates.wait_budget())
        .await?;
    let outcome = app
        .creates
        .create(owner.clone(), csr_request, key.as_ref())
        .await;
    if matches!(
        outcome,
        Err(_) | Ok(CreateOutcome::Created { replayed: true, .. } | CreateOutcome::Deleted { .. })
    ) {
        admitted.uncount().await;
    }
    let outcome = outcome?;
    audit_create(&app, &owner, &outcome);
    created(outcome)
}

fn audit_create(app: &AppState, owner: &Owner, outcome: &CreateOutcome) {
    let (result, id, replayed) = match outcome {
        CreateOutcome::Created { csr, replayed } => ("ok", csr.id, *replayed),
        CreateOutcome::Pending(p) => ("pending", p.id, false),
        CreateOutcome::Failed { id, .. } => ("failed", *id, false),
        CreateOutcome::Deleted { id } => ("deleted", *id, true),
    };
    let mut event = AuditEvent::new("csr.create", result, Actor::Anonymous)
        .owner(owner)
        .target(id);
    if replayed {
        event = event.detail(serde_json::json!({ "replayed": true }));
    }
    app.audit.record(event);
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
    kind: OwnerKind,
    ids: PathIds,
    headers: HeaderMap,
    raw_query: Option<String>,
) -> Result<Response, ApiError> {
    let owner = gate(&app, kind, &ids, &headers, Permission::Read).await?;
    let pairs = query_pairs(raw_query.as_deref());
    let query = ListQuery::parse(kind, pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
    // A page is at most 50 CSRs (about 4 MB of the largest ones, 50 KB of ordinary ones),
    // built whole; not counted against the tenant's large reads, so a client paging its
    // CSRs with many connections is never refused.
    let page = app.catalog.list(&owner, &query).await?;
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
    Ok(Json(body).into_response())
}

pub(super) async fn get(
    app: AppState,
    kind: OwnerKind,
    ids: PathIds,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let owner = gate(&app, kind, &ids, &headers, Permission::Read).await?;
    let id = ids.csr_id()?;
    let csr = app
        .catalog
        .get(&owner, id)
        .await?
        .ok_or(ApiError::CsrNotFound)?;
    Ok(Json(CsrSingle::new(csr.into())).into_response())
}

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
    if !app.catalog.delete(&owner, id).await? {
        return Err(ApiError::CsrNotFound);
    }
    app.audit.record(
        AuditEvent::new("csr.delete", "ok", Actor::Anonymous)
            .owner(&owner)
            .target(id),
    );
    Ok(Json(CsrIdOnly::new(IdOnly { id: id.to_string() })).into_response())
}
