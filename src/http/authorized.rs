//! The `Authorized` extractor: a handler that takes `Authorized<Writes>` (or `Reads`) runs only
//! for a caller the gate ([`crate::ingress::Access`]) let through for the owner its path
//! names, with that permission. In the manner of svix's permission extractors: the permission
//! is in the handler's signature, so no handler can forget to check it.

use std::marker::PhantomData;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::auth::credentials;
use super::extract::PathIds;
use super::{ApiError, AppState};
use crate::auth::Permission;
use crate::domain::{Owner, OwnerKind};
use crate::ingress::AccessRequest;

/// The permission a handler needs.
pub trait Needs: Send + Sync + 'static {
    const PERMISSION: Permission;
}

/// Reading an owner's CSRs and batches.
pub struct Reads;
/// Creating and deleting them.
pub struct Writes;
/// Enrolling key recipients and taking their deliveries (a `key-delivery` token only).
pub struct Delivers;

impl Needs for Reads {
    const PERMISSION: Permission = Permission::Read;
}

impl Needs for Writes {
    const PERMISSION: Permission = Permission::Write;
}

impl Needs for Delivers {
    const PERMISSION: Permission = Permission::KeyDelivery;
}

/// An admitted caller: the owner it may act on, and the rest of the path's ids (not yet
/// validated: a caller learns nothing about an id before it is admitted).
pub struct Authorized<N> {
    pub owner: Owner,
    pub ids: PathIds,
    needs: PhantomData<N>,
}

impl<N> Authorized<N> {
    pub fn kind(&self) -> OwnerKind {
        self.owner.kind()
    }
}

impl<N: Needs> FromRequestParts<AppState> for Authorized<N> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let ids = PathIds::from_request_parts(parts, app).await?;
        let request = AccessRequest {
            credentials: credentials(&parts.headers),
            peer: ids.peer(),
            owner: ids.owner(),
            needed: N::PERMISSION,
        };
        let owner = app.access.admit(request).await?;
        Ok(Self {
            owner,
            ids,
            needs: PhantomData,
        })
    }
}
