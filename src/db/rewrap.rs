//! Reads and writes for `csrd kek rewrap`: the records not yet sealed under the active KEK,
//! and their replacement, guarded so that a row changed or deleted meanwhile is left alone.

use tokio_postgres::GenericClient;

use super::DbError;
use super::csrs::{STORED_KEY_COLUMNS, StoredKey, stored_key};
use crate::crypto::{SealedKey, envelope::ENVELOPE_VERSION};
use crate::domain::CsrId;

/// "Not yet under the active KEK in the current format": what rewrap has left to do.
const STALE: &str = "(kek_id <> $1 OR envelope_version <> $2)";

/// How many records are not yet sealed under `active` in the current envelope version.
pub async fn count_stale(client: &impl GenericClient, active: &str) -> Result<i64, DbError> {
    let row = client
        .query_one(
            &format!("SELECT count(*) FROM custom_csrs WHERE {STALE}"),
            &[&active, &ENVELOPE_VERSION],
        )
        .await?;
    Ok(row.get(0))
}

/// Up to `limit` such records after `after`, in id order: a crash or a stop resumes by
/// simply running again, since rewrapped rows no longer match.
pub async fn stale_after(
    client: &impl GenericClient,
    active: &str,
    after: Option<CsrId>,
    limit: i64,
) -> Result<Vec<StoredKey>, DbError> {
    let after = after.map_or(uuid::Uuid::nil(), |id| id.0);
    let rows = client
        .query(
            &format!(
                "SELECT {STORED_KEY_COLUMNS} FROM custom_csrs
                 WHERE {STALE} AND id > $3 ORDER BY id LIMIT $4"
            ),
            &[&active, &ENVELOPE_VERSION, &after, &limit],
        )
        .await?;
    rows.iter().map(stored_key).collect()
}

/// One record's old and new sealing.
pub struct Replacement<'a> {
    pub id: CsrId,
    pub old: &'a SealedKey,
    pub new: SealedKey,
}

/// Stores the replacements in one transaction and counts the new wraps against the active
/// KEK's nonce budget. A row is replaced only if it still holds exactly the old wrapped DEK:
/// a row deleted or rewrapped by someone else meanwhile is skipped. Returns the rows written.
pub async fn replace(
    client: &mut deadpool_postgres::Object,
    active: &str,
    replacements: &[Replacement<'_>],
) -> Result<u64, DbError> {
    if replacements.is_empty() {
        return Ok(0);
    }
    let ids: Vec<uuid::Uuid> = replacements.iter().map(|r| r.id.0).collect();
    let old_kek: Vec<&str> = replacements.iter().map(|r| r.old.kek_id.as_str()).collect();
    let old_dek: Vec<&[u8]> = replacements
        .iter()
        .map(|r| r.old.wrapped_dek.as_slice())
        .collect();
    let version: Vec<i16> = replacements.iter().map(|r| r.new.version).collect();
    let wrapped: Vec<&[u8]> = replacements
        .iter()
        .map(|r| r.new.wrapped_dek.as_slice())
        .collect();
    let dek_nonce: Vec<&[u8]> = replacements
        .iter()
        .map(|r| r.new.dek_nonce.as_slice())
        .collect();
    let key_nonce: Vec<&[u8]> = replacements
        .iter()
        .map(|r| r.new.key_nonce.as_slice())
        .collect();
    let ciphertext: Vec<&[u8]> = replacements
        .iter()
        .map(|r| r.new.ciphertext.as_slice())
        .collect();
    let tx = client.transaction().await?;
    let written = tx
        .execute(
            "UPDATE custom_csrs c
             SET envelope_version = u.version, kek_id = $2, wrapped_dek = u.wrapped,
                 dek_nonce = u.dek_nonce, key_nonce = u.key_nonce, key_ciphertext = u.ciphertext
             FROM unnest($1::uuid[], $3::text[], $4::bytea[], $5::smallint[], $6::bytea[],
                         $7::bytea[], $8::bytea[], $9::bytea[])
                  AS u(id, old_kek, old_dek, version, wrapped, dek_nonce, key_nonce, ciphertext)
             WHERE c.id = u.id AND c.kek_id = u.old_kek AND c.wrapped_dek = u.old_dek",
            &[
                &ids,
                &active,
                &old_kek,
                &old_dek,
                &version,
                &wrapped,
                &dek_nonce,
                &key_nonce,
                &ciphertext,
            ],
        )
        .await?;
    tx.execute(
        "INSERT INTO kek_usage AS u (kek_id, shard, wraps)
         VALUES ($1, (pg_backend_pid() % 16)::smallint, $2)
         ON CONFLICT (kek_id, shard) DO UPDATE SET wraps = u.wraps + EXCLUDED.wraps",
        &[&active, &(written as i64)],
    )
    .await?;
    tx.commit().await?;
    Ok(written)
}
