//! A stored custom CSR, as the API shows it (everything but the sealed key).

use chrono::{DateTime, Utc};

use super::{CreateCsr, CsrId, KeyType, Owner};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomCsr {
    pub id: CsrId,
    pub owner: Owner,
    pub request: CreateCsr,
    pub csr_pem: String,
    pub created_at: DateTime<Utc>,
}

impl CustomCsr {
    pub fn key_type(&self) -> KeyType {
        self.request.key_type
    }
}
