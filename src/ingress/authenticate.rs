//! Checking presented credentials against the stored hashes.
//!
//! Both schemes compare SHA-256 hashes in constant time, and an unknown email still costs a
//! hash comparison, so timing does not reveal which tokens or emails exist.

use crate::auth::{Credentials, Permission, Principal, hash_secret};
use crate::db::{Pool, credentials};

use super::ServiceError;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Unknown, revoked or expired token; unknown email or wrong key.
    #[error("invalid or expired credentials")]
    Invalid,
    #[error(transparent)]
    Service(#[from] ServiceError),
}

#[derive(Clone)]
pub struct Authenticator {
    pool: Pool,
}

impl Authenticator {
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }

    pub async fn authenticate(&self, presented: &Credentials) -> Result<Principal, AuthError> {
        let client = self.pool.get().await.map_err(ServiceError::from)?;
        match presented {
            Credentials::Token(token) => {
                let stored = credentials::find_token(&**client, token.lookup_id())
                    .await
                    .map_err(ServiceError::from)?;
                match stored {
                    Some(t) if token.matches(&t.token_hash) && t.usable => Ok(Principal {
                        label: format!("token:{}", t.id),
                        scope: t.scope,
                        permission: t.permission,
                    }),
                    _ => Err(AuthError::Invalid),
                }
            }
            Credentials::Legacy { email, key } => {
                let stored = credentials::find_user(&**client, email)
                    .await
                    .map_err(ServiceError::from)?;
                match stored {
                    Some(user) if key.matches(&user.key_hash) => Ok(Principal {
                        label: format!("user:{}", user.email),
                        scope: user.scope,
                        // A global API key is the user's full access to its accounts and zones.
                        permission: Permission::Write,
                    }),
                    Some(_) => Err(AuthError::Invalid),
                    None => {
                        // Same work as a real comparison, so a missing email is not faster.
                        let _ = key.matches(&hash_secret("csrd-no-such-user"));
                        Err(AuthError::Invalid)
                    }
                }
            }
        }
    }
}
