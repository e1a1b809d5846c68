//! Each tenant's weight and limits: the defaults from the settings, overridden per tenant by
//! operators (`csrd tenant limits set`, the `tenant_limits` table). Every process keeps a copy
//! of the overrides and reads them again every [`REFRESH`], so every ingress and worker
//! applies a change within that time.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::db::tenant_limits::{self, TenantOverride};
use crate::db::{DbError, Pool};
use crate::domain::Owner;
use crate::telemetry::ErrorChain;

/// How often every process reads the overrides again.
pub const REFRESH: Duration = Duration::from_secs(2);

/// The limits that apply to tenants without an override.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Defaults {
    /// Requests per second (0: unlimited).
    pub rate: f64,
    /// Requests at once after a quiet spell.
    pub burst: f64,
    /// Items accepted and not yet settled, at most (0: unlimited).
    pub max_outstanding: i64,
    /// Custom certificates one custom CSR may hold.
    pub certificates_per_csr: i64,
    /// Bytes of custom certificates one tenant may store.
    pub certificate_bytes: i64,
}

/// The limits of tenants without an operator's override.
impl From<&crate::settings::TenantSettings> for Defaults {
    fn from(s: &crate::settings::TenantSettings) -> Self {
        Self {
            rate: s.tenant_rate.max(0.0),
            burst: s.tenant_burst.max(1.0),
            max_outstanding: s.tenant_max_outstanding.max(0),
            certificates_per_csr: s.tenant_certificates_per_csr.max(0),
            certificate_bytes: s.tenant_certificate_bytes.max(0),
        }
    }
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            rate: 0.0,
            burst: 1.0,
            max_outstanding: 0,
            certificates_per_csr: 100,
            certificate_bytes: 4 * 1024 * 1024 * 1024,
        }
    }
}

/// What applies to one tenant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TenantPolicy {
    /// Share of the keygen capacity against other busy tenants.
    pub weight: f64,
    /// Requests per second (0: unlimited).
    pub rate: f64,
    pub burst: f64,
    pub max_outstanding: Option<i64>,
    pub items_per_hour: Option<i64>,
    pub certificates_per_csr: i64,
    pub certificate_bytes: i64,
}

/// Cheap to clone; clones share the overrides.
#[derive(Clone)]
pub struct Policies {
    defaults: Defaults,
    overrides: Arc<RwLock<HashMap<Owner, TenantOverride>>>,
}

impl Policies {
    pub fn new(defaults: Defaults) -> Self {
        Self {
            defaults,
            overrides: Arc::default(),
        }
    }

    pub fn of(&self, owner: &Owner) -> TenantPolicy {
        let overrides = self.overrides.read().unwrap_or_else(|p| p.into_inner());
        let o = overrides.get(owner);
        let rate = o.and_then(|o| o.rate).unwrap_or(self.defaults.rate);
        // An override of the rate alone keeps the defaults' ratio of burst to rate.
        let burst = match o.and_then(|o| o.burst) {
            Some(burst) => burst,
            None if o.and_then(|o| o.rate).is_some() && self.defaults.rate > 0.0 => {
                rate * self.defaults.burst / self.defaults.rate
            }
            None => self.defaults.burst,
        };
        TenantPolicy {
            weight: o.and_then(|o| o.weight).unwrap_or(1.0),
            rate,
            burst: burst.max(1.0),
            max_outstanding: (self.defaults.max_outstanding > 0)
                .then_some(self.defaults.max_outstanding),
            items_per_hour: o.and_then(|o| o.items_per_hour),
            certificates_per_csr: o
                .and_then(|o| o.certificates_per_csr)
                .unwrap_or(self.defaults.certificates_per_csr),
            certificate_bytes: o
                .and_then(|o| o.certificate_bytes)
                .unwrap_or(self.defaults.certificate_bytes),
        }
    }

    pub fn weight(&self, owner: &Owner) -> f64 {
        self.of(owner).weight
    }

    /// Reads the overrides again.
    pub async fn refresh(&self, pool: &Pool) -> Result<(), DbError> {
        let client = pool.get().await?;
        let fresh: HashMap<Owner, TenantOverride> = tenant_limits::all(&**client)
            .await?
            .into_iter()
            .map(|o| (o.owner.clone(), o))
            .collect();
        *self.overrides.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }

    /// Refreshes every [`REFRESH`] until `stop`; a failed read keeps the last copy.
    pub async fn keep_fresh(self, pool: Pool, stop: CancellationToken) {
        loop {
            if let Err(e) = self.refresh(&pool).await {
                static FAILED: crate::log_throttle::LogThrottle =
                    crate::log_throttle::LogThrottle::new();
                if let Some(left_out) = FAILED.allow() {
                    tracing::warn!(error = %ErrorChain(&e), left_out, "tenant overrides not read; keeping the last ones");
                }
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(REFRESH) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::AccountId;

    #[test]
    fn an_override_replaces_only_what_it_sets() {
        let policies = Policies::new(Defaults {
            rate: 100.0,
            burst: 200.0,
            max_outstanding: 10,
            ..Defaults::default()
        });
        let a = Owner::Account(AccountId::parse(&"a".repeat(32)).unwrap());
        let b = Owner::Account(AccountId::parse(&"b".repeat(32)).unwrap());
        policies.overrides.write().unwrap().insert(
            a.clone(),
            TenantOverride {
                owner: a.clone(),
                owner_kind: "account",
                owner_id: a.id().to_owned(),
                weight: Some(3.0),
                rate: Some(10.0),
                burst: None,
                items_per_hour: Some(5),
                certificates_per_csr: Some(7),
                certificate_bytes: None,
                updated_at: chrono::Utc::now(),
            },
        );
        let pa = policies.of(&a);
        assert_eq!((pa.weight, pa.rate, pa.burst), (3.0, 10.0, 20.0));
        assert_eq!((pa.items_per_hour, pa.max_outstanding), (Some(5), Some(10)));
        let pb = policies.of(&b);
        assert_eq!((pb.weight, pb.rate, pb.burst), (1.0, 100.0, 200.0));
        assert_eq!(pb.items_per_hour, None);
        assert_eq!(
            (pa.certificates_per_csr, pa.certificate_bytes),
            (7, 4 << 30)
        );
        assert_eq!(pb.certificates_per_csr, 100);
    }
}
