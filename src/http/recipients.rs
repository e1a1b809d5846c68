//! What the `/client/v4/{accounts|zones}/{id}/key_recipients[/{key_recipient_id}[/deliveries]]`
//! operations do (csrd extension; `recipient_routes` holds their annotated entry points).
//! Every one needs a `key-delivery` token: `read` and `write` tokens get 403 here, and a
//! `key-delivery` token gets 403 everywhere else.

use axum::Json;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::authorized::{Authorized, Delivers};
use super::envelope::{ErrorItem, ResultInfo};
use super::extract::{json_body, parse_body, query_pairs};
use super::large_answer::large_json;
use super::result::format_time;
use super::{ApiError, AppState};
use crate::db::recipients::DeliveryFilter;
use crate::domain::{
    CsrId, DnsName, ErrorCode, FieldError, KeyRecipient, NewRecipient, RecipientId,
    ValidationErrors,
};
use crate::ingress::deliveries::Delivery;

/// A key recipient: an age X25519 recipient a tenant enrolled, which receives nothing until
/// an operator approves it (`csrd recipient approve ID --fingerprint HEX`).
#[derive(Debug, Serialize, ToSchema)]
pub struct RecipientResult {
    #[schema(example = "01938f2a-7c1e-7d4b-9a51-2f6a1c2d3e4f")]
    pub id: String,
    #[schema(example = "web-1")]
    pub name: String,
    #[schema(example = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p")]
    pub recipient: String,
    /// SHA-256 of `recipient`, hex: what the operator compares before approving.
    pub fingerprint: String,
    /// What the recipient can ever receive: certificates all of whose names these cover (a
    /// wildcard covers one label).
    pub hosts: Vec<String>,
    /// `pending` (waiting for an operator), `active` or `revoked`.
    #[schema(example = "pending")]
    pub status: &'static str,
    #[schema(format = DateTime)]
    pub created_at: String,
}

impl From<KeyRecipient> for RecipientResult {
    fn from(r: KeyRecipient) -> Self {
        Self {
            id: r.id.to_string(),
            name: r.name,
            recipient: r.recipient,
            fingerprint: r.fingerprint,
            hosts: r.hosts,
            status: r.status.as_str(),
            created_at: format_time(r.created_at),
        }
    }
}

/// One released key.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryResult {
    pub custom_csr_id: String,
    pub certificate_id: String,
    pub hosts: Vec<String>,
    #[schema(format = DateTime)]
    pub expires_on: String,
    pub serial_number: String,
    /// SHA-256 of the leaf's SubjectPublicKeyInfo, hex: the key's identity.
    pub spki_sha256: String,
    /// Raised by every new certificate of the CSR; an agent never installs a lower one.
    pub generation: i64,
    /// The stored chain, PEM, leaf first.
    pub certificate: String,
    /// An ASCII-armored age file sealed to the recipient, holding the PKCS#8 PEM private key
    /// (`age -d -i identity` opens it). Sealed afresh for every request; never stored.
    pub sealed_key: String,
}

impl From<Delivery> for DeliveryResult {
    fn from(d: Delivery) -> Self {
        Self {
            custom_csr_id: d.custom_csr_id.to_string(),
            certificate_id: d.certificate_id.to_string(),
            hosts: d.hosts,
            expires_on: format_time(d.expires_on),
            serial_number: d.serial_number,
            spki_sha256: d.spki_sha256,
            generation: d.generation,
            certificate: d.certificate,
            sealed_key: d.sealed_key,
        }
    }
}

/// One key recipient.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecipientSingle {
    #[schema(value_type = bool, example = true)]
    pub success: bool,
    pub errors: Vec<ErrorItem>,
    pub messages: Vec<ErrorItem>,
    pub result: RecipientResult,
}

/// A page of key recipients.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecipientCollection {
    #[schema(value_type = bool, example = true)]
    pub success: bool,
    pub errors: Vec<ErrorItem>,
    pub messages: Vec<ErrorItem>,
    pub result: Vec<RecipientResult>,
    pub result_info: ResultInfo,
}

/// A page of deliveries.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryCollection {
    #[schema(value_type = bool, example = true)]
    pub success: bool,
    pub errors: Vec<ErrorItem>,
    pub messages: Vec<ErrorItem>,
    pub result: Vec<DeliveryResult>,
    pub result_info: ResultInfo,
}

fn single(status: StatusCode, r: KeyRecipient) -> Response {
    (
        status,
        Json(RecipientSingle {
            success: true,
            errors: Vec::new(),
            messages: Vec::new(),
            result: r.into(),
        }),
    )
        .into_response()
}

fn recipient_id(caller: &Authorized<Delivers>) -> Result<RecipientId, ApiError> {
    caller
        .ids
        .get("key_recipient_id")
        .and_then(RecipientId::parse)
        .ok_or(ApiError::MalformedRecipientId)
}

pub(super) async fn enroll(
    app: AppState,
    caller: Authorized<Delivers>,
    request: Request,
) -> Result<Response, ApiError> {
    let body = json_body(request, &mut app.limits.body_reservation(&caller.owner)).await?;
    let new = parse_body(&app.cpu, &caller.owner, body, NewRecipient::parse).await??;
    let recipient = app.deliveries.enroll(&caller.owner, new).await?;
    Ok(single(StatusCode::CREATED, recipient))
}

pub(super) async fn get(app: AppState, caller: Authorized<Delivers>) -> Result<Response, ApiError> {
    let id = recipient_id(&caller)?;
    let recipient = app.deliveries.get(&caller.owner, id).await?;
    Ok(single(StatusCode::OK, recipient))
}

pub(super) async fn revoke(
    app: AppState,
    caller: Authorized<Delivers>,
) -> Result<Response, ApiError> {
    let id = recipient_id(&caller)?;
    let recipient = app.deliveries.revoke(&caller.owner, id).await?;
    Ok(single(StatusCode::OK, recipient))
}

pub(super) async fn list(
    app: AppState,
    caller: Authorized<Delivers>,
    raw_query: Option<String>,
) -> Result<Response, ApiError> {
    let (page, per_page) = page_query(&query_pairs(raw_query.as_deref()), 50)?;
    let (items, total) = app.deliveries.list(&caller.owner, page, per_page).await?;
    Ok(Json(RecipientCollection {
        success: true,
        errors: Vec::new(),
        messages: Vec::new(),
        result_info: result_info(page, per_page, items.len(), total),
        result: items.into_iter().map(Into::into).collect(),
    })
    .into_response())
}

pub(super) async fn deliveries(
    app: AppState,
    caller: Authorized<Delivers>,
    raw_query: Option<String>,
) -> Result<Response, ApiError> {
    let id = recipient_id(&caller)?;
    let pairs = query_pairs(raw_query.as_deref());
    let (page, per_page) = page_query(&pairs, MAX_DELIVERIES_PER_PAGE)?;
    let filter = delivery_filter(&pairs)?;
    // A page of chains and sealed keys may be a few hundred KiB: its place is had first.
    let place = app.limits.admit_large_answer(&caller.owner).await?;
    let page_of = app
        .deliveries
        .deliveries(&caller.owner, id, &filter, page, per_page)
        .await?;
    let collection = DeliveryCollection {
        success: true,
        errors: Vec::new(),
        messages: Vec::new(),
        result_info: result_info(page, per_page, page_of.items.len(), page_of.total),
        result: page_of.items.into_iter().map(Into::into).collect(),
    };
    Ok(large_json(StatusCode::OK, &collection, place))
}

/// `?custom_csr_id=` (one CSR's delivery) and `?host=` (those whose certificate covers the
/// host): an agent asks for what its targets need, and nothing else is released.
fn delivery_filter(pairs: &[(String, String)]) -> Result<DeliveryFilter, ApiError> {
    let mut filter = DeliveryFilter::default();
    for (name, value) in pairs {
        match name.as_str() {
            "custom_csr_id" => {
                filter.custom_csr_id = Some(CsrId::parse(value).ok_or_else(|| {
                    ValidationErrors::single(FieldError::new(
                        ErrorCode::InvalidRequest,
                        "?custom_csr_id",
                        "custom_csr_id must be a custom CSR id",
                    ))
                })?);
            }
            "host" => {
                let host = DnsName::parse(&value.to_ascii_lowercase(), "?host").map_err(|e| {
                    ValidationErrors::single(FieldError::new(
                        ErrorCode::InvalidRequest,
                        "?host",
                        e.message,
                    ))
                })?;
                filter.host = Some(host.as_str().to_owned());
            }
            _ => {}
        }
    }
    Ok(filter)
}

/// Deliveries per page, at most (each a chain and a sealed key: a few KiB).
const MAX_DELIVERIES_PER_PAGE: u64 = 100;

fn result_info(page: u64, per_page: u64, count: usize, total: u64) -> ResultInfo {
    ResultInfo {
        page,
        per_page,
        count: count as u64,
        total_count: total,
        total_pages: total.div_ceil(per_page),
    }
}

/// Cloudflare's `page` (from 1) and `per_page` (5 to `max`, default 20).
fn page_query(pairs: &[(String, String)], max: u64) -> Result<(u64, u64), ApiError> {
    let (mut page, mut per_page) = (1, 20);
    let mut errors = Vec::new();
    for (name, value) in pairs {
        match name.as_str() {
            "page" => match value.parse::<u64>() {
                Ok(n) if (1..=1_000_000).contains(&n) => page = n,
                _ => errors.push(FieldError::new(
                    ErrorCode::InvalidRequest,
                    "?page",
                    "page must be a whole number from 1",
                )),
            },
            "per_page" => match value.parse::<u64>() {
                Ok(n) if (5..=max).contains(&n) => per_page = n,
                _ => errors.push(FieldError::new(
                    ErrorCode::InvalidRequest,
                    "?per_page",
                    format!("per_page must be from 5 to {max}"),
                )),
            },
            _ => {}
        }
    }
    if errors.is_empty() {
        Ok((page, per_page))
    } else {
        Err(ValidationErrors(errors).into())
    }
}
