//! The `audit_log` table: batched appends and filtered reads. Plain rows in and out: what an
//! event means is the `audit` module's business (it implements its `AuditSink` on top of
//! [`append`]), so nothing here depends on it.

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::GenericClient;

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
    let column = |f: fn(&AuditRow<'a>) -> Option<&'a str>| rows.iter().map(f).collect::<Vec<_>>();
    let at: Vec<DateTime<Utc>> = rows.iter().map(|r| r.at).collect();
    let action: Vec<&str> = rows.iter().map(|r| r.action).collect();
    let outcome: Vec<&str> = rows.iter().map(|r| r.outcome).collect();
    let actor_kind: Vec<&str> = rows.iter().map(|r| r.actor_kind).collect();
    let actor = column(|r| r.actor);
    let owner_kind = column(|r| r.owner.map(|o| o.kind().as_str()));
    let owner_id = column(|r| r.owner.map(|o| o.id()));
    let target = column(|r| r.target);
    let remote_addr = column(|r| r.remote_addr);
    let request_id = column(|r| r.request_id);
    let trace_id = column(|r| r.trace_id);
    let detail: Vec<Option<&serde_json::Value>> = rows.iter().map(|r| r.detail).collect();
    Ok(client
        .client()
        .execute(
            &client.statement("INSERT INTO audit_log (at, action, outcome, actor_kind, actor, owner_kind, owner_id,
                 target, remote_addr, request_id, trace_id, detail)
             SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::text[],
                 $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[],
                 $12::jsonb[])").await?,
            &[
                &at,
                &action,
                &outcome,
                &actor_kind,
                &actor,
                &owner_kind,
                &owner_id,
                &target,
                &remote_addr,
                &request_id,
                &trace_id,
                &detail,
            ],
        )
        .await?)
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
