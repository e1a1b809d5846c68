//! The `result` object of a custom CSR, shaped as Cloudflare's schema.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::{
    Batch, BatchEntry, CustomCsr, ErrorCode, ItemState, KeyType, Owner, PendingCreate,
};

use super::error_item::ErrorItem;

/// A custom Certificate Signing Request. Zone results have no `account_tag`, `name` or
/// `description`; optional fields that were not given are omitted.
#[derive(Debug, Serialize, ToSchema)]
pub struct CsrResult {
    #[schema(example = "7b163417-1d2b-4c84-a38a-2fb7a0cd7752", max_length = 36)]
    pub id: String,
    #[schema(format = DateTime, example = "2024-01-15T10:30:00Z")]
    pub created_at: String,
    /// `rsa2048` or `p256v1`; csrd extension: `rsa3072`, `rsa4096`, `p384`.
    #[schema(value_type = String, example = "rsa2048")]
    pub key_type: KeyType,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "023e105f4ecef8ad9ca31a8372d0c353")]
    pub account_tag: Option<String>,
    #[schema(example = "example.com", max_length = 64)]
    pub common_name: String,
    #[schema(example = "US")]
    pub country: String,
    #[schema(example = "-----BEGIN CERTIFICATE REQUEST-----\nMIIC...")]
    pub csr: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub locality: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub organization: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organizational_unit: Option<String>,
    pub sans: Vec<String>,
    pub state: String,
    /// csrd extension, shown only for a CSR created with `"key_delivery": "sealed"` (its key
    /// may be released sealed to an approved recipient); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "sealed")]
    pub key_delivery: Option<&'static str>,
}

pub fn format_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn account_tag(owner: &Owner) -> Option<String> {
    match owner {
        Owner::Account(a) => Some(a.as_str().to_owned()),
        Owner::Zone(_) => None,
    }
}

impl From<CustomCsr> for CsrResult {
    fn from(csr: CustomCsr) -> Self {
        let r = csr.request;
        let s = r.subject;
        Self {
            id: csr.id.to_string(),
            created_at: format_time(csr.created_at),
            key_type: r.key_type,
            account_tag: account_tag(&csr.owner),
            common_name: s.common_name,
            country: s.country,
            csr: csr.csr_pem,
            description: r.description,
            locality: s.locality,
            name: r.name,
            organization: s.organization,
            organizational_unit: s.organizational_unit,
            sans: r.sans.into_iter().map(String::from).collect(),
            state: s.state,
            key_delivery: r.key_delivery.stored(),
        }
    }
}

/// What a 202 carries: the id to find the CSR by later.
#[derive(Debug, Serialize, ToSchema)]
pub struct PendingResult {
    pub id: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(value_type = String, example = "rsa2048")]
    pub key_type: KeyType,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_tag: Option<String>,
    /// Always `pending`.
    #[schema(example = "pending")]
    pub status: &'static str,
    /// csrd extension: `sealed` for a CSR created so, absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_delivery: Option<&'static str>,
}

impl From<PendingCreate> for PendingResult {
    fn from(p: PendingCreate) -> Self {
        Self {
            id: p.id.to_string(),
            created_at: format_time(p.created_at),
            key_type: p.key_type,
            account_tag: account_tag(&p.owner),
            status: "pending",
            key_delivery: p.key_delivery.stored(),
        }
    }
}

/// A batch and its progress.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchResult {
    #[schema(example = "0b3c6f1e-9a51-4f0e-8f6a-1c2d3e4f5a6b")]
    pub id: String,
    /// `pending` (nothing settled yet), `running`, `done` (every item created) or `failed`
    /// (every item settled, at least one failed: see the results).
    #[schema(example = "running")]
    pub status: String,
    pub total: i64,
    /// Items created.
    pub done: i64,
    /// Items that failed for good.
    pub failed: i64,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime, nullable = true)]
    pub finished_at: Option<String>,
}

impl From<Batch> for BatchResult {
    fn from(b: Batch) -> Self {
        let status = serde_json::to_value(b.status())
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        Self {
            id: b.id.to_string(),
            status,
            total: b.total,
            done: b.done,
            failed: b.failed,
            created_at: format_time(b.created_at),
            finished_at: b.finished_at.map(format_time),
        }
    }
}

/// One item of a batch: its CSR once created.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchEntryResult {
    /// The item's position in the submitted `items`, from 0.
    pub index: u32,
    /// The custom CSR id assigned to the item.
    pub id: String,
    /// `created`, `failed`, `pending` or `deleted` (created, then deleted).
    #[schema(example = "created")]
    pub status: String,
    /// The custom CSR, as GET returns it; null unless created.
    #[schema(nullable = true)]
    pub result: Option<CsrResult>,
    pub errors: Vec<ErrorItem>,
}

impl From<BatchEntry> for BatchEntryResult {
    fn from(e: BatchEntry) -> Self {
        let (status, result, errors) = match e.state {
            ItemState::Created(csr) => ("created", Some(CsrResult::from(*csr)), Vec::new()),
            ItemState::Failed(reason) => (
                "failed",
                None,
                vec![ErrorItem::new(
                    ErrorCode::Internal,
                    format!("the CSR could not be created: {reason}"),
                )],
            ),
            ItemState::Pending => ("pending", None, Vec::new()),
            ItemState::Deleted => ("deleted", None, Vec::new()),
        };
        Self {
            index: e.index,
            id: e.csr_id.to_string(),
            status: status.to_owned(),
            result,
            errors,
        }
    }
}
