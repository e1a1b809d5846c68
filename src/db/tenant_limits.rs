//! The `tenant_limits`, `rate_buckets` and `tenant_hourly_items` tables: operators' per-tenant
//! overrides, the request-rate buckets every ingress leases from, and hourly item counts.

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::{GenericClient, Row};

use super::DbError;
use crate::domain::{Owner, OwnerKind};

/// One tenant's override; `None` fields take the defaults.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TenantOverride {
    #[serde(skip)]
    pub owner: Owner,
    pub owner_kind: &'static str,
    pub owner_id: String,
    pub weight: Option<f64>,
    pub rate: Option<f64>,
    pub burst: Option<f64>,
    pub items_per_hour: Option<i64>,
    pub certificates_per_csr: Option<i64>,
    pub certificate_bytes: Option<i64>,
    pub updated_at: DateTime<Utc>,
}

/// The fields `set` changes (the others keep their stored value).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OverrideChanges {
    pub weight: Option<f64>,
    pub rate: Option<f64>,
    pub burst: Option<f64>,
    pub items_per_hour: Option<i64>,
    pub certificates_per_csr: Option<i64>,
    pub certificate_bytes: Option<i64>,
}

const COLUMNS: &str = "owner_kind, owner_id, weight, rate, burst, items_per_hour, \
     certificates_per_csr, certificate_bytes, updated_at";

fn from_row(row: &Row) -> Result<TenantOverride, DbError> {
    let kind = OwnerKind::parse(row.get("owner_kind"))
        .ok_or_else(|| DbError::Corrupt("tenant_limits owner_kind".into()))?;
    let owner = Owner::parse(kind, row.get("owner_id"))
        .ok_or_else(|| DbError::Corrupt("tenant_limits owner_id".into()))?;
    Ok(TenantOverride {
        owner_kind: kind.as_str(),
        owner_id: owner.id().to_owned(),
        owner,
        weight: row.get("weight"),
        rate: row.get("rate"),
        burst: row.get("burst"),
        items_per_hour: row.get("items_per_hour"),
        certificates_per_csr: row.get("certificates_per_csr"),
        certificate_bytes: row.get("certificate_bytes"),
        updated_at: row.get("updated_at"),
    })
}

/// Every override (a short table: one row per tenant an operator singled out).
pub async fn all(client: &impl GenericClient) -> Result<Vec<TenantOverride>, DbError> {
    let sql = format!("SELECT {COLUMNS} FROM tenant_limits ORDER BY owner_kind, owner_id");
    client
        .query(&sql, &[])
        .await?
        .iter()
        .map(from_row)
        .collect()
}

pub async fn get(
    client: &impl GenericClient,
    owner: &Owner,
) -> Result<Option<TenantOverride>, DbError> {
    let sql =
        format!("SELECT {COLUMNS} FROM tenant_limits WHERE owner_kind = $1 AND owner_id = $2");
    let row = client
        .query_opt(&sql, &[&owner.kind().as_str(), &owner.id()])
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// Creates or changes `owner`'s override; returns it as stored.
pub async fn set(
    client: &impl GenericClient,
    owner: &Owner,
    changes: &OverrideChanges,
) -> Result<TenantOverride, DbError> {
    let sql = format!(
        "INSERT INTO tenant_limits AS t (owner_kind, owner_id, weight, rate, burst, items_per_hour,
                                         certificates_per_csr, certificate_bytes)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (owner_kind, owner_id) DO UPDATE SET
             weight = coalesce(excluded.weight, t.weight),
             rate = coalesce(excluded.rate, t.rate),
             burst = coalesce(excluded.burst, t.burst),
             items_per_hour = coalesce(excluded.items_per_hour, t.items_per_hour),
             certificates_per_csr = coalesce(excluded.certificates_per_csr, t.certificates_per_csr),
             certificate_bytes = coalesce(excluded.certificate_bytes, t.certificate_bytes),
             updated_at = now()
         RETURNING {COLUMNS}"
    );
    let row = client
        .query_one(
            &sql,
            &[
                &owner.kind().as_str(),
                &owner.id(),
                &changes.weight,
                &changes.rate,
                &changes.burst,
                &changes.items_per_hour,
                &changes.certificates_per_csr,
                &changes.certificate_bytes,
            ],
        )
        .await?;
    from_row(&row)
}

/// Removes `owner`'s override; whether there was one.
pub async fn clear(client: &impl GenericClient, owner: &Owner) -> Result<bool, DbError> {
    let n = client
        .execute(
            "DELETE FROM tenant_limits WHERE owner_kind = $1 AND owner_id = $2",
            &[&owner.kind().as_str(), &owner.id()],
        )
        .await?;
    Ok(n > 0)
}

/// Counts `items` against `owner`'s quota for the current clock hour (UTC): `true` when they
/// fit (and are now counted), `false` when they would go over (nothing counted).
pub async fn count_hourly_items(
    client: &impl GenericClient,
    owner: &Owner,
    items: i64,
    quota: i64,
) -> Result<bool, DbError> {
    let counted = client
        .query_opt(
            "INSERT INTO tenant_hourly_items AS t (owner_kind, owner_id, hour, items)
             SELECT $1::text, $2::text, date_trunc('hour', now(), 'UTC'), $3::int8
             WHERE $3::int8 <= $4::int8
             ON CONFLICT (owner_kind, owner_id, hour) DO UPDATE SET items = t.items + excluded.items
             WHERE t.items + excluded.items <= $4::int8
             RETURNING items",
            &[&owner.kind().as_str(), &owner.id(), &items, &quota],
        )
        .await?;
    Ok(counted.is_some())
}

/// Takes back `items` counted this hour (a create that queued nothing after all).
pub async fn uncount_hourly_items(
    client: &impl GenericClient,
    owner: &Owner,
    items: i64,
) -> Result<(), DbError> {
    client
        .execute(
            "UPDATE tenant_hourly_items SET items = greatest(items - $3, 0)
             WHERE owner_kind = $1 AND owner_id = $2 AND hour = date_trunc('hour', now(), 'UTC')",
            &[&owner.kind().as_str(), &owner.id(), &items],
        )
        .await?;
    Ok(())
}

/// Forgets hourly counts older than a day.
pub async fn prune_hourly_items(client: &impl GenericClient) -> Result<u64, DbError> {
    Ok(client
        .execute(
            "DELETE FROM tenant_hourly_items WHERE hour < now() - interval '1 day'",
            &[],
        )
        .await?)
}

/// Leases up to `want` tokens from `owner`'s shared bucket (refilled at `rate` per second up
/// to `burst`): `(granted, left in the bucket)`.
pub async fn lease_tokens(
    client: &impl GenericClient,
    owner: &Owner,
    want: f64,
    rate: f64,
    burst: f64,
) -> Result<(f64, f64), DbError> {
    let row = client
        .query_one(
            "SELECT granted, remaining FROM csrd_lease_tokens($1, $2, $3, $4, $5)",
            &[&owner.kind().as_str(), &owner.id(), &want, &rate, &burst],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}
