//! The `result` object of a custom CSR, shaped as Cloudflare's schema.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::{CustomCsr, KeyType, Owner, PendingCreate};

/// A custom Certificate Signing Request. Zone results have no `account_tag`, `name` or
/// `description`; optional fields that were not given are omitted.
#[derive(Debug, Serialize, ToSchema)]
pub struct CsrResult {
    #[schema(example = "7b163417-1d2b-4c84-a38a-2fb7a0cd7752", max_length = 36)]
    pub id: String,
    #[schema(format = DateTime, example = "2024-01-15T10:30:00Z")]
    pub created_at: String,
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
}

impl From<PendingCreate> for PendingResult {
    fn from(p: PendingCreate) -> Self {
        Self {
            id: p.id.to_string(),
            created_at: format_time(p.created_at),
            key_type: p.key_type,
            account_tag: account_tag(&p.owner),
            status: "pending",
        }
    }
}
