//! What the `/client/v4/{zones|accounts}/{id}/custom_certificates[/{custom_certificate_id}]`
//! operations do (`certificate_routes` holds their annotated entry points). Cloudflare's
//! custom-certificate bodies, with `custom_csr_id` as the only way to name the key.

use axum::Json;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::authorized::{Authorized, Reads, Writes};
use super::batches::{BatchApi, MAX_BATCH_BODY_BYTES};
use super::envelope::{ErrorItem, IdOnly, ResultInfo};
use super::extract::{json_body, parse_body, query_pairs};
use super::large_answer::large_json;
use super::result::format_time;
use super::{ApiError, AppState};
use crate::db::certificates::Filter;
use crate::domain::{
    CertificateId, CustomCertificate, EditCertificate, ErrorCode, FieldError, Owner,
    UploadCertificate, ValidationErrors,
};
use crate::fairshare::Permit;
use crate::ingress::certificates::Stored;

/// A custom certificate, as Cloudflare's schema and its SDKs' types have it, plus the chain
/// (`certificate`), `serial_number` and `custom_csr_id`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CertificateResult {
    #[schema(example = "01938f2a-7c1e-7d4b-9a51-2f6a1c2d3e4f")]
    pub id: String,
    /// The zone (for an account's certificate: the account), as Cloudflare always returns one.
    pub zone_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_tag: Option<String>,
    pub custom_csr_id: String,
    /// The chain as stored: PEM certificates, leaf first.
    pub certificate: String,
    pub hosts: Vec<String>,
    #[schema(example = "Example CA")]
    pub issuer: String,
    #[schema(example = "ECDSAWithSHA256")]
    pub signature: String,
    pub serial_number: String,
    /// `active`, or `expired` once past `expires_on`.
    #[schema(example = "active")]
    pub status: &'static str,
    #[schema(example = "ubiquitous")]
    pub bundle_method: String,
    #[serde(rename = "type")]
    #[schema(example = "legacy_custom")]
    pub cert_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub geo_restrictions: Option<GeoRestrictions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_restrictions: Option<String>,
    pub priority: i32,
    #[schema(format = DateTime)]
    pub uploaded_on: String,
    #[schema(format = DateTime)]
    pub modified_on: String,
    #[schema(format = DateTime)]
    pub expires_on: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GeoRestrictions {
    pub label: String,
}

impl CertificateResult {
    fn new(c: CustomCertificate, now: DateTime<Utc>) -> Self {
        let (zone_id, account_tag) = match &c.owner {
            Owner::Zone(z) => (z.as_str().to_owned(), None),
            Owner::Account(a) => (a.as_str().to_owned(), Some(a.as_str().to_owned())),
        };
        Self {
            id: c.id.to_string(),
            status: c.status(now),
            zone_id,
            account_tag,
            custom_csr_id: c.custom_csr_id.to_string(),
            certificate: c.certificate,
            hosts: c.hosts,
            issuer: c.issuer,
            signature: c.signature,
            serial_number: c.serial_number,
            bundle_method: c.bundle_method,
            cert_type: c.cert_type,
            geo_restrictions: c.geo_label.map(|label| GeoRestrictions { label }),
            policy_restrictions: c.policy,
            priority: c.priority,
            uploaded_on: format_time(c.uploaded_on),
            modified_on: format_time(c.modified_on),
            expires_on: format_time(c.expires_on),
        }
    }
}

/// One custom certificate; `messages` lists CSR names the certificate does not cover.
#[derive(Debug, Serialize, ToSchema)]
pub struct CertificateSingle {
    #[schema(value_type = bool, example = true)]
    pub success: bool,
    pub errors: Vec<ErrorItem>,
    pub messages: Vec<ErrorItem>,
    pub result: CertificateResult,
}

/// A page of custom certificates.
#[derive(Debug, Serialize, ToSchema)]
pub struct CertificateCollection {
    #[schema(value_type = bool, example = true)]
    pub success: bool,
    pub errors: Vec<ErrorItem>,
    pub messages: Vec<ErrorItem>,
    pub result: Vec<CertificateResult>,
    pub result_info: ResultInfo,
}

/// The id of a deleted custom certificate.
#[derive(Debug, Serialize, ToSchema)]
pub struct CertificateIdOnly {
    #[schema(value_type = bool, example = true)]
    pub success: bool,
    pub errors: Vec<ErrorItem>,
    pub messages: Vec<ErrorItem>,
    pub result: IdOnly,
}

/// One certificate of a bulk upload: its id and the CSR it was checked against, in item
/// order.
#[derive(Debug, Serialize, ToSchema)]
pub struct BulkItem {
    pub id: String,
    pub custom_csr_id: String,
}

/// The certificates of a bulk upload, in item order.
#[derive(Debug, Serialize, ToSchema)]
pub struct CertificateBulk {
    #[schema(value_type = bool, example = true)]
    pub success: bool,
    pub errors: Vec<ErrorItem>,
    pub messages: Vec<ErrorItem>,
    pub result: Vec<BulkItem>,
}

fn single(stored: Stored, place: Permit) -> Response {
    let messages = stored
        .uncovered
        .iter()
        .map(|name| {
            ErrorItem::new(
                ErrorCode::HostsNotCovered,
                format!(
                    "the certificate does not cover the custom CSR's name {}",
                    crate::domain::validation::echo(name)
                ),
            )
        })
        .collect();
    large_json(
        StatusCode::OK,
        &CertificateSingle {
            success: true,
            errors: Vec::new(),
            messages,
            result: CertificateResult::new(stored.certificate, Utc::now()),
        },
        place,
    )
}

fn certificate_id(caller: &Authorized<impl Sized>) -> Result<CertificateId, ApiError> {
    caller
        .ids
        .get("custom_certificate_id")
        .and_then(CertificateId::parse)
        .ok_or(ApiError::MalformedCertificateId)
}

pub(super) async fn upload(
    app: AppState,
    caller: Authorized<Writes>,
    request: Request,
) -> Result<Response, ApiError> {
    // The answer (the chain, its hosts) may be large: its place is had before any work.
    let place = app.limits.admit_large_answer(&caller.owner).await?;
    let body = json_body(request, &mut app.limits.body_reservation(&caller.owner)).await?;
    let upload = parse_body(&app.cpu, &caller.owner, body, UploadCertificate::parse).await??;
    let stored = app.certificates.upload(&caller.owner, upload).await?;
    Ok(single(stored, place))
}

pub(super) async fn upload_bulk(
    BatchApi(batches): BatchApi,
    app: AppState,
    caller: Authorized<Writes>,
    request: Request,
) -> Result<Response, ApiError> {
    // Admitted as a batch body is: its memory reserved from the same budget as it arrives.
    let mut admission = batches.admit(&caller.owner)?;
    let body =
        super::extract::json_body_reserving(request, MAX_BATCH_BODY_BYTES, &mut admission).await?;
    let ids = app
        .certificates
        .upload_many(&caller.owner, body, &mut admission.body)
        .await?;
    drop(admission);
    Ok(Json(CertificateBulk {
        success: true,
        errors: Vec::new(),
        messages: Vec::new(),
        result: ids
            .into_iter()
            .map(|(id, custom_csr_id)| BulkItem {
                id: id.to_string(),
                custom_csr_id: custom_csr_id.to_string(),
            })
            .collect(),
    })
    .into_response())
}

pub(super) async fn edit(
    app: AppState,
    caller: Authorized<Writes>,
    request: Request,
) -> Result<Response, ApiError> {
    let id = certificate_id(&caller)?;
    let place = app.limits.admit_large_answer(&caller.owner).await?;
    let body = json_body(request, &mut app.limits.body_reservation(&caller.owner)).await?;
    let edit = parse_body(&app.cpu, &caller.owner, body, EditCertificate::parse).await??;
    let stored = app.certificates.edit(&caller.owner, id, edit).await?;
    Ok(single(stored, place))
}

pub(super) async fn get(app: AppState, caller: Authorized<Reads>) -> Result<Response, ApiError> {
    let id = certificate_id(&caller)?;
    let place = app.limits.admit_large_answer(&caller.owner).await?;
    let certificate = app.certificates.get(&caller.owner, id).await?;
    Ok(single(
        Stored {
            certificate,
            uncovered: Vec::new(),
        },
        place,
    ))
}

pub(super) async fn delete(
    app: AppState,
    caller: Authorized<Writes>,
) -> Result<Response, ApiError> {
    let id = certificate_id(&caller)?;
    app.certificates.delete(&caller.owner, id).await?;
    Ok(Json(CertificateIdOnly {
        success: true,
        errors: Vec::new(),
        messages: Vec::new(),
        result: IdOnly { id: id.to_string() },
    })
    .into_response())
}

pub(super) async fn list(
    app: AppState,
    caller: Authorized<Reads>,
    raw_query: Option<String>,
) -> Result<Response, ApiError> {
    let query = CertificateQuery::parse(&query_pairs(raw_query.as_deref()))?;
    let place = app.limits.admit_large_answer(&caller.owner).await?;
    let page = app
        .certificates
        .list(&caller.owner, &query.filter, query.page, query.per_page)
        .await?;
    let now = Utc::now();
    let result_info = ResultInfo {
        page: query.page,
        per_page: query.per_page,
        count: page.items.len() as u64,
        total_count: page.total,
        total_pages: page.total.div_ceil(query.per_page),
    };
    let collection = CertificateCollection {
        success: true,
        errors: Vec::new(),
        messages: Vec::new(),
        result: page
            .items
            .into_iter()
            .map(|c| CertificateResult::new(c, now))
            .collect(),
        result_info,
    };
    Ok(large_json(StatusCode::OK, &collection, place))
}

/// The list's query: Cloudflare's `page` (≥ 1), `per_page` (5–50, default 20), `status`,
/// `match` (accepted; with one filter it changes nothing), and csrd's `expires_before`.
struct CertificateQuery {
    page: u64,
    per_page: u64,
    filter: Filter,
}

const STATUSES: [&str; 5] = ["active", "expired", "deleted", "pending", "initializing"];

impl CertificateQuery {
    fn parse(pairs: &[(String, String)]) -> Result<Self, ValidationErrors> {
        let mut q = Self {
            page: 1,
            per_page: 20,
            filter: Filter::default(),
        };
        let mut errors = Vec::new();
        let bad = |name: &str, why: &str| {
            FieldError::new(
                ErrorCode::InvalidRequest,
                format!("?{name}"),
                why.to_owned(),
            )
        };
        for (name, value) in pairs {
            match name.as_str() {
                "page" => match value.parse::<u64>() {
                    Ok(n) if (1..=1_000_000).contains(&n) => q.page = n,
                    _ => errors.push(bad("page", "page must be a whole number from 1")),
                },
                "per_page" => match value.parse::<u64>() {
                    Ok(n) if (5..=50).contains(&n) => q.per_page = n,
                    _ => errors.push(bad("per_page", "per_page must be from 5 to 50")),
                },
                "status" if STATUSES.contains(&value.as_str()) => {
                    q.filter.status = Some(value.clone());
                }
                "status" => errors.push(bad(
                    "status",
                    "status must be active, expired, deleted, pending or initializing",
                )),
                "match" if value == "any" || value == "all" => {}
                "match" => errors.push(bad("match", "match must be any or all")),
                "expires_before" => match DateTime::parse_from_rfc3339(value) {
                    Ok(t) => q.filter.expires_before = Some(t.with_timezone(&Utc)),
                    Err(_) => errors.push(bad(
                        "expires_before",
                        "expires_before must be an RFC 3339 time, e.g. 2027-01-01T00:00:00Z",
                    )),
                },
                _ => {}
            }
        }
        if errors.is_empty() {
            Ok(q)
        } else {
            Err(ValidationErrors(errors))
        }
    }
}
