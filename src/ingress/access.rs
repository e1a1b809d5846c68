//! Who may do what: the gate every API request passes before anything else is read.
//!
//! The order is fixed, and it is what keeps ids private: authenticate (9106/6003/9109), then
//! the owner id (7003), then the permission on that owner (10000), then the tenant's request
//! rate (429). A caller without access never learns whether an id exists. Refused callers are
//! audited (at most one event a second per address), and an admitted caller becomes the actor
//! of the request's later audit events.

use std::net::IpAddr;

use crate::audit::{Actor, AuditEvent, Auditor};
use crate::auth::{Credentials, Permission, Principal};
use crate::domain::{Owner, OwnerKind};

use super::{AuthError, Authenticator, Limits, Refused};

/// Why no credentials could be read from a request (the adapter that read them says which).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialsProblem {
    Missing,
    /// Present but unusable; the message names the header.
    Malformed(&'static str),
}

/// What a request presents at the gate.
pub struct AccessRequest {
    pub credentials: Result<Credentials, CredentialsProblem>,
    /// The client's address, when known (failed authentications are limited per address).
    pub peer: Option<IpAddr>,
    /// The owner the request names, or the kind whose id did not parse.
    pub owner: Result<Owner, OwnerKind>,
    pub needed: Permission,
}

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("no usable credentials")]
    Credentials(CredentialsProblem),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("malformed {} id", .0.as_str())]
    MalformedOwnerId(OwnerKind),
    #[error("the credential may not do this to this owner")]
    Forbidden,
    #[error(transparent)]
    Refused(#[from] Refused),
}

impl AccessError {
    /// The reason an `auth.failure` event records, for a failed authentication.
    fn auth_failure(&self) -> Option<&'static str> {
        match self {
            AccessError::Credentials(CredentialsProblem::Missing) => Some("missing"),
            AccessError::Credentials(CredentialsProblem::Malformed(_)) => Some("malformed"),
            AccessError::Auth(AuthError::Invalid) => Some("invalid"),
            AccessError::Auth(AuthError::TooManyFailures { .. }) => Some("too many failures"),
            _ => None,
        }
    }
}

/// The gate. Cheap to clone.
#[derive(Clone)]
pub struct Access {
    authenticator: Authenticator,
    limits: Limits,
    audit: Auditor,
}

impl Access {
    pub fn new(authenticator: Authenticator, limits: Limits, audit: Auditor) -> Self {
        Self {
            authenticator,
            limits,
            audit,
        }
    }

    /// The owner `request` may act on with the permission it needs, its request charged.
    pub async fn admit(&self, request: AccessRequest) -> Result<Owner, AccessError> {
        let principal = self
            .authenticate(request.credentials, request.peer)
            .await
            .inspect_err(|e| self.audit_auth_failure(e))?;
        crate::audit::identify_actor(&principal);
        let owner = request.owner.map_err(AccessError::MalformedOwnerId)?;
        if !principal.may(&owner, request.needed) {
            tracing::debug!(principal = %principal.label, owner = owner.id(), "forbidden");
            self.audit.record_refusal(
                AuditEvent::new("access.denied", "denied", Actor::Anonymous)
                    .owner(&owner)
                    .detail(serde_json::json!({ "needed": request.needed.as_str() })),
            );
            return Err(AccessError::Forbidden);
        }
        self.limits.charge(&owner, 1.0).await?;
        Ok(owner)
    }

    async fn authenticate(
        &self,
        credentials: Result<Credentials, CredentialsProblem>,
        peer: Option<IpAddr>,
    ) -> Result<Principal, AccessError> {
        let presented = credentials.map_err(AccessError::Credentials)?;
        Ok(self.authenticator.authenticate(&presented, peer).await?)
    }

    fn audit_auth_failure(&self, e: &AccessError) {
        if let Some(reason) = e.auth_failure() {
            self.audit.record_refusal(
                AuditEvent::new("auth.failure", "denied", Actor::Anonymous)
                    .detail(serde_json::json!({ "reason": reason })),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_failed_authentications_are_audited_as_such() {
        let reason = |e: AccessError| e.auth_failure();
        assert_eq!(
            reason(AccessError::Credentials(CredentialsProblem::Missing)),
            Some("missing")
        );
        assert_eq!(
            reason(AccessError::Credentials(CredentialsProblem::Malformed("x"))),
            Some("malformed")
        );
        assert_eq!(
            reason(AccessError::Auth(AuthError::Invalid)),
            Some("invalid")
        );
        assert_eq!(
            reason(AccessError::Auth(AuthError::TooManyFailures {
                retry_after: std::time::Duration::from_secs(1)
            })),
            Some("too many failures")
        );
        assert_eq!(reason(AccessError::Forbidden), None);
        assert_eq!(reason(AccessError::MalformedOwnerId(OwnerKind::Zone)), None);
    }
}
