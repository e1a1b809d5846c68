//! Reading and deleting stored CSRs: list, get, delete, always scoped to one owner. Deletes
//! are audited here.

use crate::audit::{Actor, AuditEvent, Auditor};
use crate::db::Pool;
use crate::db::csrs::{self, Deletion};
use crate::domain::{CsrId, CustomCsr, ListQuery, Owner};

use super::ServiceError;

/// One page of a tenant's CSRs, and how many the tenant has in all.
pub struct Page {
    pub items: Vec<CustomCsr>,
    pub total: u64,
}

#[derive(Clone)]
pub struct Catalog {
    pool: Pool,
    audit: Auditor,
}

impl Catalog {
    pub fn new(pool: Pool, audit: Auditor) -> Self {
        Self { pool, audit }
    }

    /// A page is at most 50 CSRs (about 4 MB of the largest ones, 50 KB of ordinary ones),
    /// built whole; not counted against the tenant's large reads, so a client paging its
    /// CSRs with many connections is never refused.
    pub async fn list(&self, owner: &Owner, query: &ListQuery) -> Result<Page, ServiceError> {
        let mut client = self.pool.get().await?;
        let (items, total) = csrs::list(&mut client, owner, query).await?;
        Ok(Page {
            items,
            total: u64::try_from(total).unwrap_or(0),
        })
    }

    /// Another tenant's CSR is `None`, exactly like an unknown id.
    pub async fn get(&self, owner: &Owner, id: CsrId) -> Result<Option<CustomCsr>, ServiceError> {
        let client = self.pool.get().await?;
        Ok(csrs::get(&**client, owner, id).await?)
    }

    /// Deletes the CSR with its sealed key, unless a custom certificate uses the key.
    pub async fn delete(&self, owner: &Owner, id: CsrId) -> Result<Deletion, ServiceError> {
        let client = self.pool.get().await?;
        let deletion = csrs::delete(&**client, owner, id).await?;
        if deletion == Deletion::Deleted {
            tracing::info!(csr_id = %id, "custom CSR and its sealed key deleted");
            self.audit.record(
                AuditEvent::new("csr.delete", "ok", Actor::Anonymous)
                    .owner(owner)
                    .target(id),
            );
        }
        Ok(deletion)
    }
}
