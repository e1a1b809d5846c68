//! Periodic database chores the workers do.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::db::{Pool, jobs, tenant_limits};
use crate::telemetry::ErrorChain;

const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Deletes Idempotency-Key records past their retention, and hourly item counts older than a
/// day, hourly, until shutdown.
pub async fn prune_idempotency_keys(pool: Pool, ttl_hours: u32, stop: CancellationToken) {
    loop {
        if let Ok(client) = pool.get().await {
            match jobs::prune_idempotency_keys(&**client, ttl_hours).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(pruned = n, "expired Idempotency-Key records removed"),
                Err(e) => {
                    tracing::warn!(error = %ErrorChain(&e), "pruning Idempotency-Key records failed")
                }
            }
            if let Err(e) = tenant_limits::prune_hourly_items(&**client).await {
                tracing::warn!(error = %ErrorChain(&e), "pruning hourly item counts failed");
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(PRUNE_EVERY) => {}
        }
    }
}

const NONCE_CHECK_EVERY: Duration = Duration::from_secs(300);

/// Checks every KEK's nonce budget at start and every 5 minutes (metric, and a warning past a
/// quarter of it), until shutdown.
pub async fn watch_nonce_budgets(pool: Pool, stop: CancellationToken) {
    loop {
        crate::custody::check_nonce_budgets(&pool).await;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(NONCE_CHECK_EVERY) => {}
        }
    }
}
