//! The `result` object of a custom CSR, shaped as Cloudflare's schema.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::domain::{CsrId, CustomCsr, DnsName, KeyType, Owner};

#[derive(Debug, Serialize)]
pub struct CsrResult<'a> {
    pub id: String,
    pub created_at: String,
    pub key_type: KeyType,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_tag: Option<&'a str>,
    pub common_name: &'a str,
    pub country: &'a str,
    pub csr: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<&'a str>,
    pub locality: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
    pub organization: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organizational_unit: Option<&'a str>,
    pub sans: Vec<&'a str>,
    pub state: &'a str,
}

pub fn format_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn account_tag(owner: &Owner) -> Option<&str> {
    match owner {
        Owner::Account(a) => Some(a.as_str()),
        Owner::Zone(_) => None,
    }
}

impl<'a> CsrResult<'a> {
    pub fn new(csr: &'a CustomCsr) -> Self {
        let r = &csr.request;
        let s = &r.subject;
        Self {
            id: csr.id.to_string(),
            created_at: format_time(csr.created_at),
            key_type: r.key_type,
            account_tag: account_tag(&csr.owner),
            common_name: &s.common_name,
            country: &s.country,
            csr: &csr.csr_pem,
            description: r.description.as_deref(),
            locality: &s.locality,
            name: r.name.as_deref(),
            organization: &s.organization,
            organizational_unit: s.organizational_unit.as_deref(),
            sans: r.sans.iter().map(DnsName::as_str).collect(),
            state: &s.state,
        }
    }
}

/// What a 202 carries: enough to find the CSR later (GET by id, or retry).
#[derive(Debug, Serialize)]
pub struct PendingResult<'a> {
    pub id: String,
    pub created_at: String,
    pub key_type: KeyType,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_tag: Option<&'a str>,
    pub status: &'static str,
}

impl<'a> PendingResult<'a> {
    pub fn new(id: CsrId, owner: &'a Owner, key_type: KeyType, created_at: DateTime<Utc>) -> Self {
        Self {
            id: id.to_string(),
            created_at: format_time(created_at),
            key_type,
            account_tag: account_tag(owner),
            status: "pending",
        }
    }
}
