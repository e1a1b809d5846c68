//! The `audit_log` table: batched appends and filtered reads.

use chrono::{DateTime, Utc};
use tokio_postgres::GenericClient;

use super::DbError;
use crate::audit::{AuditEvent, AuditRecord};
use crate::domain::Owner;

/// Appends `events` in one statement.
pub async fn append(client: &impl GenericClient, events: &[AuditEvent]) -> Result<u64, DbError> {
    if events.is_empty() {
        return Ok(0);
    }
    let column = |f: fn(&AuditEvent) -> Option<String>| events.iter().map(f).collect::<Vec<_>>();
    let at: Vec<DateTime<Utc>> = events.iter().map(|e| e.at).collect();
    let action: Vec<&str> = events.iter().map(|e| e.action).collect();
    let outcome: Vec<&str> = events.iter().map(|e| e.outcome).collect();
    let actor_kind: Vec<&str> = events.iter().map(|e| e.actor.kind()).collect();
    let actor = column(|e| e.actor.id().map(str::to_owned));
    let owner_kind = column(|e| e.owner.as_ref().map(|o| o.kind().as_str().to_owned()));
    let owner_id = column(|e| e.owner.as_ref().map(|o| o.id().to_owned()));
    let target = column(|e| e.target.clone());
    let remote_addr = column(|e| e.remote_addr.clone());
    let request_id = column(|e| e.request_id.clone());
    let trace_id = column(|e| e.trace_id.clone());
    let detail: Vec<Option<serde_json::Value>> = events.iter().map(|e| e.detail.clone()).collect();
    Ok(client
        .execute(
            "INSERT INTO audit_log (at, action, outcome, actor_kind, actor, owner_kind, owner_id,
                 target, remote_addr, request_id, trace_id, detail)
             SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::text[],
                 $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[],
                 $12::jsonb[])",
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
