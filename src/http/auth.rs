//! Authentication: turns request headers into a `Principal`, or the Cloudflare error for why not.
//!
//! `Authorization: Bearer <token>` is preferred; the legacy `X-Auth-Email` + `X-Auth-Key`
//! pair is the fallback. Both paths compare secret hashes in constant time, and an unknown
//! email still costs a hash comparison, so timing does not reveal which emails exist.

use axum::http::HeaderMap;

use super::error::ApiError;
use crate::auth::{ApiKey, ApiToken, Permission, Principal, hash_secret};
use crate::db::{Pool, credentials};

const MAX_EMAIL_LEN: usize = 254;

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ApiError> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(|s| Some(s.trim()))
            .map_err(|_| ApiError::MalformedCredentials("header is not ASCII")),
    }
}

pub async fn authenticate(headers: &HeaderMap, pool: &Pool) -> Result<Principal, ApiError> {
    if let Some(value) = header(headers, "authorization")? {
        let token = parse_bearer(value)?;
        return authenticate_token(&token, pool).await;
    }
    match (
        header(headers, "x-auth-email")?,
        header(headers, "x-auth-key")?,
    ) {
        (Some(email), Some(key)) => authenticate_user(email, key, pool).await,
        _ => Err(ApiError::MissingCredentials),
    }
}

fn parse_bearer(value: &str) -> Result<ApiToken, ApiError> {
    let (scheme, token) = value.split_once(' ').ok_or(ApiError::MalformedCredentials(
        "Authorization must be 'Bearer <token>'",
    ))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ApiError::MalformedCredentials(
            "Authorization must be 'Bearer <token>'",
        ));
    }
    ApiToken::parse(token.trim())
        .map_err(|_| ApiError::MalformedCredentials("invalid format for Authorization header"))
}

async fn authenticate_token(token: &ApiToken, pool: &Pool) -> Result<Principal, ApiError> {
    let client = pool.get().await.map_err(crate::db::DbError::from)?;
    let stored = credentials::find_token(&**client, token.lookup_id()).await?;
    match stored {
        Some(t) if token.matches(&t.token_hash) && t.usable => Ok(Principal {
            label: format!("token:{}", t.id),
            scope: t.scope,
            permission: t.permission,
        }),
        _ => Err(ApiError::InvalidCredentials),
    }
}

fn valid_email(email: &str) -> bool {
    email.len() <= MAX_EMAIL_LEN
        && email.is_ascii()
        && !email.chars().any(|c| c.is_ascii_control() || c == ' ')
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.contains('@')
        })
}

async fn authenticate_user(email: &str, key: &str, pool: &Pool) -> Result<Principal, ApiError> {
    if !valid_email(email) {
        return Err(ApiError::MalformedCredentials(
            "invalid format for X-Auth-Email header",
        ));
    }
    let key = ApiKey::parse(key)
        .map_err(|_| ApiError::MalformedCredentials("invalid format for X-Auth-Key header"))?;
    let email = email.to_ascii_lowercase();
    let client = pool.get().await.map_err(crate::db::DbError::from)?;
    match credentials::find_user(&**client, &email).await? {
        Some(user) if key.matches(&user.key_hash) => Ok(Principal {
            label: format!("user:{}", user.email),
            scope: user.scope,
            // A global API key is the user's full access to the listed accounts and zones.
            permission: Permission::Write,
        }),
        Some(_) => Err(ApiError::InvalidCredentials),
        None => {
            // Same work as a real comparison, so a missing email is not faster.
            let _ = key.matches(&hash_secret("csrd-no-such-user"));
            Err(ApiError::InvalidCredentials)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_header_parsing() {
        let token = ApiToken::generate();
        assert!(parse_bearer(&format!("Bearer {}", token.reveal())).is_ok());
        assert!(parse_bearer(&format!("bearer {}", token.reveal())).is_ok());
        assert!(matches!(
            parse_bearer(token.reveal()),
            Err(ApiError::MalformedCredentials(_))
        ));
        assert!(matches!(
            parse_bearer("Basic abc"),
            Err(ApiError::MalformedCredentials(_))
        ));
        assert!(matches!(
            parse_bearer("Bearer short"),
            Err(ApiError::MalformedCredentials(_))
        ));
    }

    #[test]
    fn email_shape() {
        assert!(valid_email("user@example.com"));
        assert!(!valid_email("user"));
        assert!(!valid_email("user@localhost"));
        assert!(!valid_email("us er@example.com"));
    }
}
