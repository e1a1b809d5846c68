//! What the batch operations (`…/custom_csrs/batches[/{batch_id}[/results]]`, beyond
//! Cloudflare's API) do. The same gate as every other operation ([`Authorized`]: write to
//! submit, read to look), and only then the batch id or the body. Switched off, the routes
//! answer 404 before the gate, like any unknown route.

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;

use super::authorized::{Authorized, Reads, Writes};
use super::envelope::{BatchCollection, BatchSingle, ResultInfo};
use super::extract::{PathIds, idempotency_key, query_pairs};
use super::result::{BatchEntryResult, BatchResult};
use super::{ApiError, AppState};
use crate::domain::{BatchEntry, BatchId, ErrorCode, FieldError, Owner, ValidationErrors};
use crate::ingress::{BatchService, ResultPage};

/// A batch body may be this large: 10,000 items of a few hundred bytes take 3 MB, and 850
/// items of 150 SANs of 253 characters (the largest items there are) 32 MiB. The body is read
/// item by item (`parse_items`), so a submission holds about three times its body at most
/// (body, validated items, stored chunks), reserved from the process's memory budget as the
/// body arrives.
pub const MAX_BATCH_BODY_BYTES: usize = 32 * 1024 * 1024;

/// The batch use case, when the batch API is on (`CSRD_BATCH_API`); extracted before the
/// caller is, so a switched-off API answers 404 to everyone alike.
pub struct BatchApi(pub(super) BatchService);

impl FromRequestParts<AppState> for BatchApi {
    type Rejection = ApiError;

    async fn from_request_parts(_: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        app.batches.clone().map(BatchApi).ok_or(ApiError::NoRoute)
    }
}

fn batch_id(ids: &PathIds) -> Result<BatchId, ApiError> {
    ids.get("batch_id")
        .and_then(BatchId::parse)
        .ok_or(ApiError::MalformedBatchId)
}

fn location(owner: &Owner, id: BatchId) -> Option<HeaderValue> {
    let path = format!(
        "/client/v4/{}s/{}/custom_csrs/batches/{id}",
        owner.kind().as_str(),
        owner.id()
    );
    HeaderValue::from_str(&path).ok()
}

pub(super) async fn submit(
    BatchApi(batches): BatchApi,
    caller: Authorized<Writes>,
    request: Request,
) -> Result<Response, ApiError> {
    let key = idempotency_key(request.headers())?;
    let mut admission = batches.admit(&caller.owner)?;
    let body =
        super::extract::json_body_reserving(request, MAX_BATCH_BODY_BYTES, &mut admission).await?;
    let batch = batches
        .submit(caller.owner.clone(), body, key.as_ref(), admission)
        .await?;
    let mut response = (
        StatusCode::ACCEPTED,
        Json(BatchSingle::new(BatchResult::from(batch.clone()))),
    )
        .into_response();
    if let Some(location) = location(&caller.owner, batch.id) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

pub(super) async fn get(
    BatchApi(batches): BatchApi,
    caller: Authorized<Reads>,
) -> Result<Response, ApiError> {
    let id = batch_id(&caller.ids)?;
    let batch = batches
        .get(&caller.owner, id)
        .await?
        .ok_or(ApiError::BatchNotFound)?;
    Ok(Json(BatchSingle::new(batch.into())).into_response())
}

pub(super) async fn list(
    BatchApi(batches): BatchApi,
    caller: Authorized<Reads>,
    raw_query: Option<String>,
) -> Result<Response, ApiError> {
    let paging = Paging::parse(raw_query.as_deref(), 20, 100)?;
    let (page, total) = batches
        .list(&caller.owner, paging.offset(), paging.limit())
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
    BatchApi(batches): BatchApi,
    caller: Authorized<Reads>,
    raw_query: Option<String>,
) -> Result<Response, ApiError> {
    let id = batch_id(&caller.ids)?;
    let paging = Paging::parse(raw_query.as_deref(), 100, 1000)?;
    let mut page = batches
        .results(&caller.owner, id, paging.offset(), paging.limit())
        .await?
        .ok_or(ApiError::BatchNotFound)?;
    let info = paging.info(page.len(), page.batch().total);
    // The first part is read before answering, so the usual failures (Postgres down, the
    // pool exhausted) still get their status; a later failure can only cut the answer short.
    let first = page.next_part().await.transpose()?;
    Ok(stream_results(info, first, page))
}

/// A results page as a stream: the envelope's head, then the entries part by part as the
/// client takes them, then its tail. Memory per request is one part (`RESULTS_PER_PART`
/// entries), whatever the page size: a 1,000-entry page of the largest CSRs is 77 MB of JSON.
/// The page holds the tenant's read slot until the last byte is sent (or the client goes away).
fn stream_results(info: ResultInfo, first: Option<Vec<BatchEntry>>, page: ResultPage) -> Response {
    struct Sending {
        page: ResultPage,
        ready: Option<Vec<BatchEntry>>,
        sent_any: bool,
        done: bool,
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
