//! Key custody operations run by operators: `csrd keys verify`, `csrd kek rewrap` (in
//! `rewrap`), and the KEK nonce budget.
//!
//! `csrd keys verify` decrypts every stored private key in memory and proves it belongs to its
//! CSR. Catches ciphertexts moved between rows or altered (the envelope's associated data and
//! tags), keys sealed under a KEK that is not configured, and keys that decrypt but are not the
//! CSR's. A wrong key under a known KEK id is refused before anything is read.

mod rewrap;

use std::sync::Arc;

use anyhow::Context;

use crate::crypto::{Keyring, key_matches_certificate, key_matches_csr, open};
use crate::db::csrs::{StoredKey, stored_keys_after, stored_keys_sample};
use crate::db::{Pool, keks};
use crate::domain::{CsrId, Owner};

pub use rewrap::{RewrapSummary, rewrap_all, rewrap_backlog};

/// Rows read and checked at a time.
const PAGE: i64 = 1000;

pub struct VerifyPlan {
    /// Only this tenant's keys.
    pub owner: Option<Owner>,
    /// Only this many keys, picked at random.
    pub sample: Option<i64>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct VerifySummary {
    pub verified: u64,
    pub failed: u64,
}

/// One key that did not verify: which, and why (never any key material).
pub struct Failure {
    pub id: CsrId,
    pub owner: Owner,
    pub reason: String,
}

/// Verifies the planned keys; `report` hears of every failure and of progress (keys checked).
pub async fn verify_keys(
    pool: &Pool,
    keyring: Arc<Keyring>,
    plan: VerifyPlan,
    mut on_failure: impl FnMut(&Failure),
    mut on_progress: impl FnMut(u64),
) -> anyhow::Result<VerifySummary> {
    let client = pool.get().await.context("connecting to Postgres")?;
    keks::verify_known_keks(&client, &keyring).await?;
    let mut summary = VerifySummary::default();
    let mut after = None;
    loop {
        let page = match plan.sample {
            Some(n) => stored_keys_sample(&**client, plan.owner.as_ref(), n).await?,
            None => stored_keys_after(&**client, plan.owner.as_ref(), after, PAGE).await?,
        };
        let Some(last) = page.last() else { break };
        after = Some(last.cursor());
        let full_page = page.len() as i64 == PAGE;
        let ids: Vec<uuid::Uuid> = page.iter().map(|k| k.id.0).collect();
        let chains = crate::db::certificates::chains_of(&**client, &ids).await?;
        let keyring = keyring.clone();
        let failures = tokio::task::spawn_blocking(move || check_all(&keyring, &page, &chains))
            .await
            .context("verifying a page of keys")?;
        let (checked, failures) = failures;
        summary.failed += failures.len() as u64;
        summary.verified += checked - failures.len() as u64;
        failures.iter().for_each(&mut on_failure);
        on_progress(summary.verified + summary.failed);
        if plan.sample.is_some() || !full_page {
            break;
        }
    }
    Ok(summary)
}

/// The custom certificates' chains of a page's CSRs, by CSR id.
type Chains = std::collections::HashMap<uuid::Uuid, Vec<(uuid::Uuid, String)>>;

/// Checks a page on every core; returns how many were checked and the failures.
fn check_all(keyring: &Keyring, page: &[StoredKey], chains: &Chains) -> (u64, Vec<Failure>) {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let part = page.len().div_ceil(threads).max(1);
    let failures = std::thread::scope(|scope| {
        let parts: Vec<_> = page
            .chunks(part)
            .map(|chunk| {
                let checking = scope.spawn(move || {
                    chunk
                        .iter()
                        .filter_map(|k| check(keyring, k, chains))
                        .collect::<Vec<_>>()
                });
                (chunk, checking)
            })
            .collect();
        parts
            .into_iter()
            .flat_map(|(chunk, checking)| {
                // A check that panicked proves nothing: its whole part counts as failed.
                checking.join().unwrap_or_else(|_| {
                    chunk
                        .iter()
                        .map(|k| Failure {
                            id: k.id,
                            owner: k.owner.clone(),
                            reason: "the check panicked".into(),
                        })
                        .collect()
                })
            })
            .collect()
    });
    (page.len() as u64, failures)
}

/// The key opens, is its CSR's key, and is the key of every custom certificate stored for
/// the CSR.
fn check(keyring: &Keyring, stored: &StoredKey, chains: &Chains) -> Option<Failure> {
    let outcome = open(keyring, stored.id, &stored.owner, &stored.sealed)
        .map_err(|e| e.to_string())
        .and_then(|der| {
            key_matches_csr(stored.key_type, &der, &stored.csr_pem).map_err(|e| e.to_string())?;
            for (id, chain) in chains.get(&stored.id.0).into_iter().flatten() {
                key_matches_certificate(stored.key_type, &der, chain)
                    .map_err(|e| format!("custom certificate {id}: {e}"))?;
            }
            Ok(())
        });
    outcome.err().map(|reason| Failure {
        id: stored.id,
        owner: stored.owner.clone(),
        reason,
    })
}

/// NIST SP 800-38D: at most 2^32 encryptions under one key with random 96-bit nonces.
pub const NONCE_LIMIT: i64 = 1 << 32;
/// Warn from a quarter of the limit on: rotating takes a deploy and a rewrap, so well before.
pub const NONCE_WARNING: i64 = NONCE_LIMIT / 4;

/// How much of a KEK's nonce budget `wraps` uses, and whether it is time to rotate.
pub fn nonce_budget(wraps: i64) -> (f64, bool) {
    (wraps as f64 / NONCE_LIMIT as f64, wraps >= NONCE_WARNING)
}

/// Reads every KEK's wraps, sets the metric, and warns about the ones past the threshold.
pub async fn check_nonce_budgets(pool: &Pool) {
    let Ok(client) = pool.get().await else { return };
    let Ok(usage) = keks::wraps(&client).await else {
        return;
    };
    for (kek_id, wraps) in usage {
        crate::metrics::kek_wraps(&kek_id, wraps);
        let (used, rotate) = nonce_budget(wraps);
        if rotate {
            tracing::warn!(
                kek_id,
                wraps,
                used_percent = format!("{:.1}", used * 100.0),
                "KEK has wrapped a quarter of its 2^32 nonce budget: add a new KEK, promote it and rewrap"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nonce_budget_warns_at_a_quarter_of_2_to_the_32() {
        assert_eq!(nonce_budget(0), (0.0, false));
        assert!(!nonce_budget(NONCE_WARNING - 1).1);
        let (used, rotate) = nonce_budget(NONCE_WARNING);
        assert!(rotate);
        assert!((used - 0.25).abs() < 1e-9);
    }
}
