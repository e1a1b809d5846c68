//! KEK check values: a wrong key under a known KEK id is refused at start-up, not at the
//! first decrypt.

use tokio_postgres::Client;

use super::DbError;
use crate::crypto::Keyring;

#[derive(Debug, thiserror::Error)]
pub enum KekCheckError {
    #[error("KEK {0:?} does not match the key this database was sealed with; refusing to start")]
    Mismatch(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Verifies every configured KEK against its stored check value, then records the new ones:
/// a wrong key anywhere in the keyring is refused before anything is written.
pub async fn verify_keyring(client: &Client, keyring: &Keyring) -> Result<(), KekCheckError> {
    verify_known_keks(client, keyring).await?;
    for kek in keyring.all() {
        let id = kek.id().as_str();
        let (nonce, ct) = kek.check_value();
        client
            .execute(
                "INSERT INTO kek_checks (kek_id, nonce, ciphertext) VALUES ($1, $2, $3)
                 ON CONFLICT (kek_id) DO NOTHING",
                &[&id, &nonce, &ct],
            )
            .await
            .map_err(DbError::from)?;
        let row = client
            .query_one(
                "SELECT nonce, ciphertext FROM kek_checks WHERE kek_id = $1",
                &[&id],
            )
            .await
            .map_err(DbError::from)?;
        let (nonce, ct): (Vec<u8>, Vec<u8>) = (row.get(0), row.get(1));
        if !kek.verify_check_value(&nonce, &ct) {
            return Err(KekCheckError::Mismatch(id.to_owned()));
        }
    }
    Ok(())
}

/// Verifies the configured KEKs that have a stored check value, recording nothing: for tools
/// that must refuse a wrong key before reading (or writing) anything.
pub async fn verify_known_keks(client: &Client, keyring: &Keyring) -> Result<(), KekCheckError> {
    for kek in keyring.all() {
        let id = kek.id().as_str();
        let row = client
            .query_opt(
                "SELECT nonce, ciphertext FROM kek_checks WHERE kek_id = $1",
                &[&id],
            )
            .await
            .map_err(DbError::from)?;
        if let Some(row) = row {
            let (nonce, ct): (Vec<u8>, Vec<u8>) = (row.get(0), row.get(1));
            if !kek.verify_check_value(&nonce, &ct) {
                return Err(KekCheckError::Mismatch(id.to_owned()));
            }
        }
    }
    Ok(())
}

/// Per KEK id: how many stored keys it wraps, and whether a check value is stored for it.
pub async fn usage(client: &Client) -> Result<Vec<(String, i64, bool)>, DbError> {
    let rows = client
        .query(
            "SELECT coalesce(c.kek_id, k.kek_id), coalesce(c.n, 0), k.kek_id IS NOT NULL
             FROM (SELECT kek_id, count(*) AS n FROM custom_csrs GROUP BY kek_id) c
             FULL JOIN kek_checks k ON k.kek_id = c.kek_id
             ORDER BY 1",
            &[],
        )
        .await
        .map_err(DbError::from)?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

/// Records each KEK id has wrapped, ever (the nonce budget's use).
pub async fn wraps(client: &Client) -> Result<Vec<(String, i64)>, DbError> {
    let rows = client
        .query(
            "SELECT kek_id, sum(wraps)::bigint FROM kek_usage GROUP BY kek_id ORDER BY kek_id",
            &[],
        )
        .await
        .map_err(DbError::from)?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}
