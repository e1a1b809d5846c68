//! What the batch operations (`…/custom_csrs/batches[/{batch_id}[/results]]`, beyond
//! Cloudflare's API) do. The same gate as every other operation: authenticate, parse the owner,
//! authorize (write to submit, read to look), and only then the batch id or the body.

use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::csrs::gate;
use futures_util::StreamExt;

use super::envelope::{BatchCollection, BatchSingle, ResultInfo};
use super::extract::{PathIds, idempotency_key, query_pairs};
use super::result::{BatchEntryResult, BatchResult};
use super::{ApiError, AppState};
use crate::audit::{Actor, AuditEvent};
use crate::auth::Permission;
use crate::domain::batch::parse_items;
use crate::domain::{BatchEntry, BatchId, ErrorCode, FieldError, OwnerKind, ValidationErrors};
use crate::ingress::{BatchService, ReadSlot, ResultPage};

/// A batch body may be this large: 10,000 items of a few hundred bytes take 3 MB, and 850
/// items of 150 SANs of 253 characters (the largest items there are) 32 MiB. The body is read
/// item by item (`parse_items`), so a submission holds about three times its body at most
/// (body, validated items, stored chunks), reserved from the process's batch memory budget
/// before the body is read.
pub const MAX_BATCH_BODY_BYTES: usize = 32 * 1024 * 1024;

/// How long a submission waits for room in the batch memory budget before 429.
const BATCH_MEMORY_WAIT: Duration = Duration::from_secs(30);

fn declared_length(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn service(app: &AppState) -> Result<&BatchService, ApiError> {
    // Switched off (`CSRD_BATCH_API=false`), the routes answer like any unknown route.
    app.batches.as_ref().ok_or(ApiError::NoRoute)
}

fn batch_id(ids: &PathIds) -> Result<BatchId, ApiError> {
    ids.get("batch_id")
        .and_then(BatchId::parse)
        .ok_or(ApiError::MalformedBatchId)
}

fn location(kind: OwnerKind, ids: &PathIds, id: BatchId) -> Option<HeaderValue> {
    let owner = ids.owner(kind).ok()?;
    let path = format!(
        "/client/v4/{}s/{}/custom_csrs/batches/{id}",
        kind.as_str(),
        owner.id()
    );
    HeaderValue::from_str(&path).ok()
}

pub(super) async fn submit(
    app: AppState,
    kind: OwnerKind,
    ids: PathIds,
    request: Request,
) -> Result<Response, ApiError> {
    let batches = service(&app)?.clone();
    let owner = gate(&app, kind, &ids, request.headers(), Permission::Write).await?;
    let key = idempotency_key(request.headers())?;
    // The body's memory is reserved before it is read: its declared length, or the limit
    // when it comes chunked.
    let body_bytes = declared_length(request.headers())
        .unwrap_or(MAX_BATCH_BODY_BYTES)
        .min(MAX_BATCH_BODY_BYTES);
    let _open = app
        .limits
        .admit_batch(&owner, body_bytes, BATCH_MEMORY_WAIT)
        .await?;
    let body = super::extract::json_body_up_to(request, MAX_BATCH_BODY_BYTES).await?;
    // The request rate counts requests, not items: a batch costs what sending its bytes as
    // single creates' worth of bodies would (one per MiB, the single-request cap), never its
    // item count. The gate took one.
    let extra = body.len().div_ceil(1024 * 1024).saturating_sub(1);
    if extra > 0 {
        app.limits.charge(&owner, extra as f64).await?;
    }
    let policy = app.name_policy;
    // Validating 10,000 items is a few milliseconds of CPU: off the async workers.
    let requests = tokio::task::spawn_blocking(move || parse_items(&body, kind, policy))
        .await
        .map_err(ApiError::internal)??;
    let items = requests.len();
    let policy = app.limits.policies().of(&owner);
    let batch = batches
        .submit(owner.clone(), requests, key.as_ref(), &policy)
        .await?;
    app.audit.record(
        AuditEvent::new("batch.submit", "ok", Actor::Anonymous)
            .owner(&owner)
            .target(batch.id)
            .detail(serde_json::json!({ "items": items })),
    );
    let mut response = (
        StatusCode::ACCEPTED,
        Json(BatchSingle::new(BatchResult::from(batch.clone()))),
    )
        .into_response();
    if let Some(location) = location(kind, &ids, batch.id) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

pub(super) async fn get(
    app: AppState,
    kind: OwnerKind,
    ids: PathIds,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let batches = service(&app)?;
    let owner = gate(&app, kind, &ids, &headers, Permission::Read).await?;
    let id = batch_id(&ids)?;
    let batch = batches
        .get(&owner, id)
        .await?
        .ok_or(ApiError::BatchNotFound)?;
    Ok(Json(BatchSingle::new(batch.into())).into_response())
}

pub(super) async fn list(
    app: AppState,
    kind: OwnerKind,
    ids: PathIds,
    headers: HeaderMap,
    raw_query: Option<String>,
) -> Result<Response, ApiError> {
    let batches = service(&app)?;
    let owner = gate(&app, kind, &ids, &headers, Permission::Read).await?;
    let paging = Paging::parse(raw_query.as_deref(), 20, 100)?;
    let (page, total) = batches
        .list(&owner, paging.offset(), paging.limit())
        .await?;
    let body = BatchCollection {
        success: true,
        errors: Vec::new(),
        messages: Vec::new(),
        result_info: paging.info(page.len(), total),
        result: page.into_iter().map(BatchResult::from).collect(),
    };
    Ok(Json(body).into_response())
}

pub(super) async fn results(
    app: AppState,
    kind: OwnerKind,
    ids: PathIds,
    headers: HeaderMap,
    raw_query: Option<String>,
) -> Result<Response, ApiError> {
    let batches = service(&app)?;
    let owner = gate(&app, kind, &ids, &headers, Permission::Read).await?;
    let id = batch_id(&ids)?;
    let paging = Paging::parse(raw_query.as_deref(), 100, 1000)?;
    let read = app.limits.admit_read(&owner)?;
    let mut page = batches
        .results(&owner, id, paging.offset(), paging.limit())
        .await?
        .ok_or(ApiError::BatchNotFound)?;
    let info = paging.info(page.len(), page.batch().total);
    // The first part is read before answering, so the usual failures (Postgres down, the
    // pool exhausted) still get their status; a later failure can only cut the answer short.
    let first = page.next_part().await.transpose()?;
    Ok(stream_results(info, first, page, read))
}

/// A results page as a stream: the envelope's head, then the entries part by part as the
/// client takes them, then its tail. Memory per request is one part (`RESULTS_PER_PART`
/// entries), whatever the page size: a 1,000-entry page of the largest CSRs is 77 MB of JSON.
/// The tenant's read slot is held until the last byte is sent (or the client goes away).
fn stream_results(
    info: ResultInfo,
    first: Option<Vec<BatchEntry>>,
    page: ResultPage,
    read: ReadSlot,
) -> Response {
    struct Sending {
        page: ResultPage,
        ready: Option<Vec<BatchEntry>>,
        sent_any: bool,
        done: bool,
        _read: ReadSlot,
    }
    let head = serde_json::json!({
        "success": true,
        "errors": [],
        "messages": [],
        "result_info": info,
    })
    .to_string();
    // `{"errors":[],...,"result_info":{...}` + `,"result":[`
    let head = format!("{},\"result\":[", &head[..head.len() - 1]);
    let state = Sending {
        page,
        ready: first,
        sent_any: false,
        done: false,
        _read: read,
    };
    let entries = futures_util::stream::unfold(state, |mut state| async move {
        if state.done {
            return None;
        }
        let part = match state.ready.take() {
            Some(part) => Some(Ok(part)),
            None => state.page.next_part().await,
        };
        let bytes = match part {
            Some(Ok(entries)) => Ok(encode_entries(entries, &mut state.sent_any)),
            Some(Err(e)) => {
                state.done = true;
                let e = ApiError::from(e);
                tracing::warn!(error = %crate::telemetry::ErrorChain(&e), "a results page was cut short");
                Err(e)
            }
            None => {
                state.done = true;
                Ok(Bytes::from_static(b"]}"))
            }
        };
        Some((bytes, state))
    });
    let body = futures_util::stream::once(async move { Ok(Bytes::from(head)) }).chain(entries);
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        Body::from_stream(body),
    )
        .into_response()
}

fn encode_entries(entries: Vec<BatchEntry>, sent_any: &mut bool) -> Bytes {
    let mut out = Vec::new();
    for entry in entries {
        if std::mem::replace(sent_any, true) {
            out.push(b',');
        }
        // Serialising owned plain data into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut out, &BatchEntryResult::from(entry));
    }
    Bytes::from(out)
}

/// `page` (from 1) and `per_page` (1 to a maximum) from the query string.
struct Paging {
    page: u64,
    per_page: u64,
}

impl Paging {
    fn parse(
        raw: Option<&str>,
        default_per_page: u64,
        max_per_page: u64,
    ) -> Result<Self, ApiError> {
        let mut paging = Self {
            page: 1,
            per_page: default_per_page,
        };
        let mut errors = Vec::new();
        for (key, value) in query_pairs(raw) {
            let n = value.parse::<u64>().ok();
            match (key.as_str(), n) {
                ("page", Some(n)) if n >= 1 && n <= i64::MAX as u64 / max_per_page => {
                    paging.page = n
                }
                ("per_page", Some(n)) if (1..=max_per_page).contains(&n) => paging.per_page = n,
                ("page", _) => errors.push(FieldError::new(
                    ErrorCode::InvalidRequest,
                    "?page",
                    "page must be a whole number from 1",
                )),
                ("per_page", _) => errors.push(FieldError::new(
                    ErrorCode::InvalidRequest,
                    "?per_page",
                    format!("per_page must be a whole number from 1 to {max_per_page}"),
                )),
                _ => {}
            }
        }
        if errors.is_empty() {
            Ok(paging)
        } else {
            Err(ApiError::Validation(ValidationErrors(errors)))
        }
    }

    fn offset(&self) -> i64 {
        i64::try_from((self.page - 1) * self.per_page).unwrap_or(i64::MAX)
    }

    fn limit(&self) -> i64 {
        i64::try_from(self.per_page).unwrap_or(i64::MAX)
    }

    fn info(&self, count: usize, total: i64) -> ResultInfo {
        let total = u64::try_from(total).unwrap_or(0);
        ResultInfo {
            page: self.page,
            per_page: self.per_page,
            count: count as u64,
            total_count: total,
            total_pages: total.div_ceil(self.per_page),
        }
    }
}
