//! Checking presented credentials against the stored hashes.
//!
//! Both schemes compare SHA-256 hashes in constant time, and an unknown email still costs a
//! hash comparison, so timing does not reveal which tokens or emails exist.
//!
//! A verified credential is remembered for a short while (at most 5 s, `CSRD_CREDENTIAL_CACHE_MS`)
//! so a client sending thousands of creates costs one Postgres lookup per interval, not one per
//! request. The cache is keyed on the SHA-256 of the secret, never the secret itself, and holds
//! only successes. The price: a revoked (or expired) credential keeps working for at most that
//! long on each ingress instance.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::auth::{Credentials, Permission, Principal, hash_secret};
use crate::db::{Pool, credentials};

use super::ServiceError;
use crate::buckets::Buckets;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Unknown, revoked or expired token; unknown email or wrong key.
    #[error("invalid or expired credentials")]
    Invalid,
    /// This credential, or this client address, failed too often lately; it is not even
    /// looked up until later.
    #[error("too many failed attempts with this credential or from this address")]
    TooManyFailures { retry_after: Duration },
    #[error(transparent)]
    Service(#[from] ServiceError),
}

/// Entries kept at most; past that, expired ones are dropped (and if none has, all).
const CACHE_CAPACITY: usize = 10_000;

type CacheKey = [u8; 32];

#[derive(Clone)]
pub struct Authenticator {
    pool: Pool,
    ttl: Duration,
    cache: Arc<Mutex<HashMap<CacheKey, (Principal, Instant)>>>,
    /// Failed attempts per presented credential (keyed by its hash).
    failures: Arc<Buckets>,
    /// Failed attempts per client address, whatever the credential: a spray of distinct
    /// wrong tokens meets this one, and stops costing a Postgres lookup each.
    failures_by_address: Arc<Buckets>,
}

impl Authenticator {
    /// `ttl` bounds how long a verified credential is trusted without Postgres (zero: never).
    /// `failures_per_minute` bounds the failed attempts one credential may make, and
    /// `failures_per_address_per_minute` those one client address may make (0: no bound).
    pub fn new(
        pool: Pool,
        ttl: Duration,
        failures_per_minute: u32,
        failures_per_address_per_minute: u32,
    ) -> Self {
        let per_minute = |n: u32| {
            let n = f64::from(n);
            Arc::new(Buckets::new(n / 60.0, n))
        };
        Self {
            pool,
            ttl: ttl.min(Duration::from_secs(5)),
            cache: Default::default(),
            failures: per_minute(failures_per_minute),
            failures_by_address: per_minute(failures_per_address_per_minute),
        }
    }

    /// Checks `presented`, coming from `peer` (when known).
    pub async fn authenticate(
        &self,
        presented: &Credentials,
        peer: Option<IpAddr>,
    ) -> Result<Principal, AuthError> {
        let key = cache_key(presented);
        if let Some(principal) = self.cached(&key) {
            return Ok(principal);
        }
        let failure_key = hex::encode(key);
        let address_key = peer.map(address_key);
        let exhausted = self.failures.exhausted(&failure_key).or_else(|| {
            address_key
                .as_deref()
                .and_then(|a| self.failures_by_address.exhausted(a))
        });
        if let Some(retry_after) = exhausted {
            return Err(AuthError::TooManyFailures { retry_after });
        }
        // Boxed: the lookup is the cache's miss path, and its query inline would make every
        // request's future kilobytes larger while it waits.
        let checked = Box::pin(self.check(presented)).await;
        match &checked {
            Ok(principal) => self.remember(key, principal),
            Err(AuthError::Invalid) => {
                let _ = self.failures.take(&failure_key, 1.0);
                if let Some(address) = &address_key {
                    let _ = self.failures_by_address.take(address, 1.0);
                }
            }
            Err(_) => {}
        }
        checked
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<CacheKey, (Principal, Instant)>> {
        // Single inserts, lookups and removals: a poisoned lock still guards a consistent map.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cached(&self, key: &CacheKey) -> Option<Principal> {
        if self.ttl.is_zero() {
            return None;
        }
        let mut cache = self.lock();
        match cache.get(key) {
            Some((principal, at)) if at.elapsed() < self.ttl => Some(principal.clone()),
            Some(_) => {
                cache.remove(key);
                None
            }
            None => None,
        }
    }

    fn remember(&self, key: CacheKey, principal: &Principal) {
        if self.ttl.is_zero() {
            return;
        }
        let mut cache = self.lock();
        if cache.len() >= CACHE_CAPACITY {
            let ttl = self.ttl;
            cache.retain(|_, (_, at)| at.elapsed() < ttl);
            if cache.len() >= CACHE_CAPACITY {
                cache.clear();
            }
        }
        cache.insert(key, (principal.clone(), Instant::now()));
    }

    /// Checks the credential against Postgres.
    async fn check(&self, presented: &Credentials) -> Result<Principal, AuthError> {
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

/// The bucket key of a client address: an IPv4 address, or an IPv6 address's /64 (one
/// subscriber's usual allocation, so rotating through it does not escape the limit).
fn address_key(peer: IpAddr) -> String {
    match peer {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

/// The SHA-256 of what was presented (for a token, exactly the hash Postgres stores).
fn cache_key(presented: &Credentials) -> CacheKey {
    match presented {
        Credentials::Token(token) => token.hash(),
        Credentials::Legacy { email, key } => {
            let mut h = Sha256::new();
            h.update(b"legacy\0");
            h.update(email.as_bytes());
            h.update(b"\0");
            h.update(key.hash());
            h.finalize().into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_client_is_keyed_by_its_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(
            address_key(a),
            address_key("2001:db8:1:3::1".parse().unwrap())
        );
        assert_eq!(
            address_key("::ffff:192.0.2.7".parse().unwrap()),
            "192.0.2.7"
        );
    }
}
