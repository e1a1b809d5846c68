//! Reading credentials from request headers: `Authorization: Bearer <token>` is preferred; the
//! legacy `X-Auth-Email` + `X-Auth-Key` pair is the fallback. Malformed headers are refused
//! here (9106, 6003); checking what is presented is `ingress::Authenticator`'s job.

use axum::http::HeaderMap;

use crate::auth::{ApiKey, ApiToken, Credentials, valid_email};
use crate::ingress::CredentialsProblem;

use CredentialsProblem::{Malformed, Missing};

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, CredentialsProblem> {
    // Two of one credential header is ambiguous (which one did the caller mean?): refused, not
    // resolved by taking the first.
    if headers.get_all(name).iter().nth(1).is_some() {
        return Err(Malformed("a credential header was sent more than once"));
    }
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(|s| Some(s.trim()))
            .map_err(|_| Malformed("header is not ASCII")),
    }
}

/// The credentials in the headers: a bearer token, else the legacy email + key pair.
pub fn credentials(headers: &HeaderMap) -> Result<Credentials, CredentialsProblem> {
    if let Some(value) = header(headers, "authorization")? {
        return parse_bearer(value).map(Credentials::Token);
    }
    match (
        header(headers, "x-auth-email")?,
        header(headers, "x-auth-key")?,
    ) {
        (Some(email), Some(key)) => parse_legacy(email, key),
        _ => Err(Missing),
    }
}

fn parse_bearer(value: &str) -> Result<ApiToken, CredentialsProblem> {
    let (scheme, token) = value
        .split_once(' ')
        .ok_or(Malformed("Authorization must be 'Bearer <token>'"))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Malformed("Authorization must be 'Bearer <token>'"));
    }
    ApiToken::parse(token.trim()).map_err(|_| Malformed("invalid format for Authorization header"))
}

fn parse_legacy(email: &str, key: &str) -> Result<Credentials, CredentialsProblem> {
    if !valid_email(email) {
        return Err(Malformed("invalid format for X-Auth-Email header"));
    }
    let key = ApiKey::parse(key).map_err(|_| Malformed("invalid format for X-Auth-Key header"))?;
    Ok(Credentials::Legacy {
        email: email.to_ascii_lowercase(),
        key,
    })
}

#[cfg(test)]
#[allow(
    clippy::disallowed_methods,
    reason = "tests reveal throw-away credentials"
)]
mod tests {
    use super::*;

    #[test]
    fn bearer_header_parsing() {
        let token = ApiToken::generate();
        assert!(parse_bearer(&format!("Bearer {}", token.reveal())).is_ok());
        assert!(parse_bearer(&format!("bearer {}", token.reveal())).is_ok());
        assert!(matches!(parse_bearer(token.reveal()), Err(Malformed(_))));
        assert!(matches!(parse_bearer("Basic abc"), Err(Malformed(_))));
        assert!(matches!(parse_bearer("Bearer short"), Err(Malformed(_))));
    }
}
