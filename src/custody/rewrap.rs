//! `csrd kek rewrap`: the second phase of a KEK rotation. Every record not yet sealed under
//! the active KEK gets its data key unwrapped by the KEK its row names and wrapped by the
//! active one; key ciphertexts stay as they are (version 1 records are upgraded once, see
//! `crypto::envelope`). Pages of rows are read in id order and replaced in one transaction
//! each, guarded on the old wrapped DEK, so the service can keep running and a stopped run
//! resumes by running again.

use std::sync::Arc;

use anyhow::Context;

use crate::crypto::{Keyring, rewrap};
use crate::db::csrs::StoredKey;
use crate::db::rewrap::{Replacement, count_stale, replace, stale_after};
use crate::db::{Pool, keks};

use super::Failure;

const PAGE: i64 = 1000;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RewrapSummary {
    /// Records now sealed under the active KEK.
    pub rewrapped: u64,
    /// Records changed or deleted while the run held them: left as they are.
    pub skipped: u64,
    /// Records that could not be opened (unknown KEK, tampering): left as they are.
    pub failed: u64,
}

/// How many records the run will look at, for a progress bar.
pub async fn rewrap_backlog(pool: &Pool, keyring: &Keyring) -> anyhow::Result<u64> {
    let client = pool.get().await.context("connecting to Postgres")?;
    Ok(count_stale(&**client, keyring.active().id().as_str()).await? as u64)
}

/// Rewraps every stale record. Every configured KEK is checked against its stored check
/// value first (the active one's is recorded if new), so a wrong key touches nothing.
pub async fn rewrap_all(
    pool: &Pool,
    keyring: Arc<Keyring>,
    mut on_failure: impl FnMut(&Failure),
    mut on_progress: impl FnMut(u64),
) -> anyhow::Result<RewrapSummary> {
    let mut client = pool.get().await.context("connecting to Postgres")?;
    keks::verify_keyring(&client, &keyring).await?;
    let active = keyring.active().id().as_str().to_owned();
    let mut summary = RewrapSummary::default();
    let mut after = None;
    loop {
        let page = stale_after(&**client, &active, after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        let full_page = page.len() as i64 == PAGE;
        let ring = keyring.clone();
        let (page, outcomes) = tokio::task::spawn_blocking(move || {
            let outcomes: Vec<_> = page.iter().map(|k| rewrap_one(&ring, k)).collect();
            (page, outcomes)
        })
        .await
        .context("rewrapping a page of keys")?;
        let mut replacements = Vec::with_capacity(page.len());
        for (stored, outcome) in page.iter().zip(outcomes) {
            match outcome {
                Ok(Some(new)) => replacements.push(Replacement {
                    id: stored.id,
                    old: &stored.sealed,
                    new,
                }),
                Ok(None) => summary.skipped += 1,
                Err(reason) => {
                    summary.failed += 1;
                    on_failure(&Failure {
                        id: stored.id,
                        owner: stored.owner.clone(),
                        reason,
                    });
                }
            }
        }
        let written = replace(&mut client, &active, &replacements).await?;
        summary.rewrapped += written;
        summary.skipped += replacements.len() as u64 - written;
        on_progress(page.len() as u64);
        if !full_page {
            break;
        }
    }
    Ok(summary)
}

fn rewrap_one(
    keyring: &Keyring,
    stored: &StoredKey,
) -> Result<Option<crate::crypto::SealedKey>, String> {
    rewrap(keyring, stored.id, &stored.owner, &stored.sealed).map_err(|e| e.to_string())
}
