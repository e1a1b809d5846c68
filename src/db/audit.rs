//! The `audit_log` table: batched appends and filtered reads. Plain rows in and out: what an
//! event means is the `audit` module's business (it implements its `AuditSink` on top of
//! [`append`]), so nothing here depends on it.

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::GenericClient;
use tokio_postgres::types::ToSql;

use super::DbError;
use super::prepared::Prepared;
use crate::domain::Owner;

/// One row to append, borrowed from the event it records.
pub struct AuditRow<'a> {
    pub at: DateTime<Utc>,
    pub action: &'a str,
    pub outcome: &'a str,
    pub actor_kind: &'a str,
    pub actor: Option<&'a str>,
    pub owner: Option<&'a Owner>,
    pub target: Option<&'a str>,
    pub remote_addr: Option<&'a str>,
    pub request_id: Option<&'a str>,
    pub trace_id: Option<&'a str>,
    pub detail: Option<&'a serde_json::Value>,
}

/// A stored row, as `csrd audit` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct AuditRecord {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub action: String,
    pub outcome: String,
    pub actor_kind: String,
    pub actor: Option<String>,
    pub owner_kind: Option<String>,
    pub owner_id: Option<String>,
    pub target: Option<String>,
    pub remote_addr: Option<String>,
    pub request_id: Option<String>,
    pub trace_id: Option<String>,
    pub detail: Option<serde_json::Value>,
}

/// Appends `rows` in one statement.
pub async fn append<'a>(client: &impl Prepared, rows: &[AuditRow<'a>]) -> Result<u64, DbError> {
    if rows.is_empty() {
        return Ok(0);
    }
    let columns = AuditColumns::new(rows);
    Ok(client
        .client()
        .execute(&client.statement(&APPEND).await?, &columns.params())
        .await?)
}

static APPEND: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| append_sql(1, ""));

/// The append, its 12 arrays bound from parameter `$first` on, each row `e` kept where
/// `filter` (`WHERE …` or empty) says: also a part of statements that write other rows in the
/// same breath (a chunk's CSRs and their events).
pub(super) fn append_sql(first: usize, filter: &str) -> String {
    let types = [
        "timestamptz",
        "text",
        "text",
        "text",
        "text",
        "text",
        "text",
        "text",
        "text",
        "text",
        "text",
        "jsonb",
    ];
    let arrays: Vec<String> = types
        .iter()
        .enumerate()
        .map(|(i, t)| format!("${}::{t}[]", first + i))
        .collect();
    let columns = "at, action, outcome, actor_kind, actor, owner_kind, owner_id, target, \
                   remote_addr, request_id, trace_id, detail";
    format!(
        "INSERT INTO audit_log ({columns}) SELECT e.* FROM unnest({}) AS e({columns}) {filter}",
        arrays.join(", ")
    )
}

/// Rows as one array per column, in [`append_sql`]'s order.
pub(super) struct AuditColumns<'a> {
    at: Vec<DateTime<Utc>>,
    action: Vec<&'a str>,
    outcome: Vec<&'a str>,
    actor_kind: Vec<&'a str>,
    actor: Vec<Option<&'a str>>,
    owner_kind: Vec<Option<&'a str>>,
    owner_id: Vec<Option<&'a str>>,
    target: Vec<Option<&'a str>>,
    remote_addr: Vec<Option<&'a str>>,
    request_id: Vec<Option<&'a str>>,
    trace_id: Vec<Option<&'a str>>,
    detail: Vec<Option<&'a serde_json::Value>>,
}

impl<'a> AuditColumns<'a> {
    pub(super) fn new(rows: &[AuditRow<'a>]) -> Self {
        let column = |f: fn(&AuditRow<'a>) -> Option<&'a str>| rows.iter().map(f).collect();
        Self {
            at: rows.iter().map(|r| r.at).collect(),
            action: rows.iter().map(|r| r.action).collect(),
            outcome: rows.iter().map(|r| r.outcome).collect(),
            actor_kind: rows.iter().map(|r| r.actor_kind).collect(),
            actor: column(|r| r.actor),
            owner_kind: column(|r| r.owner.map(|o| o.kind().as_str())),
            owner_id: column(|r| r.owner.map(|o| o.id())),
            target: column(|r| r.target),
            remote_addr: column(|r| r.remote_addr),
            request_id: column(|r| r.request_id),
            trace_id: column(|r| r.trace_id),
            detail: rows.iter().map(|r| r.detail).collect(),
        }
    }

    pub(super) fn params(&self) -> [&(dyn ToSql + Sync); 12] {
        [
            &self.at,
            &self.action,
            &self.outcome,
            &self.actor_kind,
            &self.actor,
            &self.owner_kind,
            &self.owner_id,
            &self.target,
            &self.remote_addr,
            &self.request_id,
            &self.trace_id,
            &self.detail,
        ]
    }
}

/// What `csrd audit` asks for.
pub struct AuditFilter {
    pub owner: Option<Owner>,
    pub since: Option<DateTime<Utc>>,
    pub action: Option<String>,
    pub limit: i64,
}

/// Matching records, oldest first (the newest `limit` of them).
pub async fn read(
    client: &impl GenericClient,
    filter: &AuditFilter,
) -> Result<Vec<AuditRecord>, DbError> {
    let kind = filter.owner.as_ref().map(|o| o.kind().as_str());
    let id = filter.owner.as_ref().map(|o| o.id());
    let rows = client
        .query(
            "SELECT * FROM (
                 SELECT id, at, action, outcome, actor_kind, actor, owner_kind, owner_id, target,
                        remote_addr, request_id, trace_id, detail
                 FROM audit_log
                 WHERE ($1::text IS NULL OR (owner_kind = $1 AND owner_id = $2))
                   AND ($3::timestamptz IS NULL OR at >= $3)
                   AND ($4::text IS NULL OR action = $4 OR action LIKE $4 || '.%')
                 ORDER BY id DESC LIMIT $5
             ) newest ORDER BY id",
            &[&kind, &id, &filter.since, &filter.action, &filter.limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| AuditRecord {
            id: r.get("id"),
            at: r.get("at"),
            action: r.get("action"),
            outcome: r.get("outcome"),
            actor_kind: r.get("actor_kind"),
            actor: r.get("actor"),
            owner_kind: r.get("owner_kind"),
            owner_id: r.get("owner_id"),
            target: r.get("target"),
            remote_addr: r.get("remote_addr"),
            request_id: r.get("request_id"),
            trace_id: r.get("trace_id"),
            detail: r.get("detail"),
        })
        .collect())
}
