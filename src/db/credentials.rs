//! API tokens and legacy users. Only hashes of secrets are stored.

use chrono::{DateTime, Utc};
use tokio_postgres::GenericClient;
use uuid::Uuid;

use super::DbError;
use crate::auth::{ApiKey, ApiToken, Permission, Scope};
use crate::domain::{AccountId, ZoneId};

pub struct StoredToken {
    pub id: Uuid,
    pub token_hash: Vec<u8>,
    pub permission: Permission,
    pub scope: Scope,
    pub usable: bool,
}

pub struct StoredUser {
    pub email: String,
    pub key_hash: Vec<u8>,
    pub scope: Scope,
}

fn scope_arrays(scope: &Scope) -> (Vec<&str>, Vec<&str>) {
    (
        scope.accounts.iter().map(AccountId::as_str).collect(),
        scope.zones.iter().map(ZoneId::as_str).collect(),
    )
}

fn scope_from(accounts: Vec<String>, zones: Vec<String>) -> Result<Scope, DbError> {
    let bad = || DbError::Corrupt("credential scope".into());
    Ok(Scope {
        accounts: accounts
            .iter()
            .map(|a| AccountId::parse(a).ok_or_else(bad))
            .collect::<Result<_, _>>()?,
        zones: zones
            .iter()
            .map(|z| ZoneId::parse(z).ok_or_else(bad))
            .collect::<Result<_, _>>()?,
    })
}

pub async fn insert_token(
    client: &impl GenericClient,
    token: &ApiToken,
    name: Option<&str>,
    permission: Permission,
    scope: &Scope,
    expires_at: Option<DateTime<Utc>>,
) -> Result<Uuid, DbError> {
    let id = Uuid::new_v4();
    let (accounts, zones) = scope_arrays(scope);
    client
        .execute(
            "INSERT INTO api_tokens (id, lookup_id, token_hash, name, permission, accounts, zones, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &id,
                &token.lookup_id(),
                &token.hash().as_slice(),
                &name,
                &permission.as_str(),
                &accounts,
                &zones,
                &expires_at,
            ],
        )
        .await?;
    Ok(id)
}

pub async fn find_token(
    client: &impl GenericClient,
    lookup_id: &str,
) -> Result<Option<StoredToken>, DbError> {
    let row = client
        .query_opt(
            "SELECT id, token_hash, permission, accounts, zones,
                    revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())
             FROM api_tokens WHERE lookup_id = $1",
            &[&lookup_id],
        )
        .await?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some(StoredToken {
        id: row.get(0),
        token_hash: row.get(1),
        permission: Permission::parse(row.get(2))
            .ok_or_else(|| DbError::Corrupt("permission".into()))?,
        scope: scope_from(row.get(3), row.get(4))?,
        usable: row.get(5),
    }))
}

pub async fn revoke_token(client: &impl GenericClient, id: Uuid) -> Result<bool, DbError> {
    let n = client
        .execute(
            "UPDATE api_tokens SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL",
            &[&id],
        )
        .await?;
    Ok(n == 1)
}

/// Creates the user, or gives an existing user a new key and scope (the old key stops working).
pub async fn upsert_user(
    client: &impl GenericClient,
    email: &str,
    key: &ApiKey,
    scope: &Scope,
) -> Result<(), DbError> {
    let (accounts, zones) = scope_arrays(scope);
    client
        .execute(
            "INSERT INTO api_users (email, key_hash, accounts, zones) VALUES ($1, $2, $3, $4)
             ON CONFLICT (email) DO UPDATE
                 SET key_hash = EXCLUDED.key_hash, accounts = EXCLUDED.accounts,
                     zones = EXCLUDED.zones, revoked_at = NULL",
            &[&email, &key.hash().as_slice(), &accounts, &zones],
        )
        .await?;
    Ok(())
}

pub async fn find_user(
    client: &impl GenericClient,
    email: &str,
) -> Result<Option<StoredUser>, DbError> {
    let row = client
        .query_opt(
            "SELECT email, key_hash, accounts, zones FROM api_users
             WHERE email = $1 AND revoked_at IS NULL",
            &[&email],
        )
        .await?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some(StoredUser {
        email: row.get(0),
        key_hash: row.get(1),
        scope: scope_from(row.get(2), row.get(3))?,
    }))
}

/// What `csrd token list` and `csrd user list` show of a credential: never its secret or hash.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CredentialListing {
    /// The token's id (for `token revoke`), or the user's email.
    pub id: String,
    /// The token's public lookup prefix (the first 8 characters of the token, not secret).
    pub lookup_id: Option<String>,
    pub name: Option<String>,
    pub permission: String,
    pub accounts: Vec<String>,
    pub zones: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

pub async fn list_tokens(client: &impl GenericClient) -> Result<Vec<CredentialListing>, DbError> {
    listings(
        client,
        "SELECT id::text AS id, lookup_id, name, permission, accounts, zones, created_at,
                expires_at, revoked_at
         FROM api_tokens ORDER BY created_at, id",
    )
    .await
}

/// Users, listed as tokens are: a legacy key has no lookup id, name or expiry, and is the
/// user's full (write) access.
pub async fn list_users(client: &impl GenericClient) -> Result<Vec<CredentialListing>, DbError> {
    listings(
        client,
        "SELECT email AS id, NULL::text AS lookup_id, NULL::text AS name,
                'write'::text AS permission, accounts, zones, created_at,
                NULL::timestamptz AS expires_at, revoked_at
         FROM api_users ORDER BY created_at, email",
    )
    .await
}

/// The rows of `sql`, which names the columns of a [`CredentialListing`].
async fn listings(
    client: &impl GenericClient,
    sql: &str,
) -> Result<Vec<CredentialListing>, DbError> {
    let rows = client.query(sql, &[]).await?;
    Ok(rows
        .iter()
        .map(|r| CredentialListing {
            id: r.get("id"),
            lookup_id: r.get("lookup_id"),
            name: r.get("name"),
            permission: r.get("permission"),
            accounts: r.get("accounts"),
            zones: r.get("zones"),
            created_at: r.get("created_at"),
            expires_at: r.get("expires_at"),
            revoked_at: r.get("revoked_at"),
        })
        .collect())
}

pub async fn revoke_user(client: &impl GenericClient, email: &str) -> Result<bool, DbError> {
    let n = client
        .execute(
            "UPDATE api_users SET revoked_at = now() WHERE email = $1 AND revoked_at IS NULL",
            &[&email],
        )
        .await?;
    Ok(n == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scope_survives_its_columns_and_a_corrupt_one_is_refused() {
        let scope = Scope {
            accounts: vec![AccountId::parse(&"a".repeat(32)).unwrap()],
            zones: vec![ZoneId::parse(&"b".repeat(32)).unwrap()],
        };
        let (accounts, zones) = scope_arrays(&scope);
        let owned = |v: Vec<&str>| v.into_iter().map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(scope_from(owned(accounts), owned(zones)).unwrap(), scope);
        assert!(matches!(
            scope_from(vec!["not an id".into()], vec![]),
            Err(DbError::Corrupt(_))
        ));
    }
}
