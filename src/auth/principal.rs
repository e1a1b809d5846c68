//! Who is calling, and what they may touch.

use serde::{Deserialize, Serialize};

use crate::domain::{AccountId, Owner, ZoneId};

/// Cloudflare's "SSL and Certificates Read" / "... Write", and csrd's `key-delivery`: a token
/// that may only enroll key recipients and take their deliveries, and nothing else (a write
/// token may not take deliveries either).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Permission {
    Read,
    Write,
    KeyDelivery,
}

impl Permission {
    pub const ALL: [Permission; 3] = [Permission::Read, Permission::Write, Permission::KeyDelivery];

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Write => "write",
            Permission::KeyDelivery => "key-delivery",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// Write implies read; key delivery implies nothing, and nothing implies it.
    pub fn covers(self, needed: Permission) -> bool {
        match needed {
            Permission::Read => matches!(self, Permission::Read | Permission::Write),
            Permission::Write => self == Permission::Write,
            Permission::KeyDelivery => self == Permission::KeyDelivery,
        }
    }
}

/// The accounts and zones a credential is scoped to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    pub accounts: Vec<AccountId>,
    pub zones: Vec<ZoneId>,
}

impl Scope {
    pub fn contains(&self, owner: &Owner) -> bool {
        match owner {
            Owner::Account(a) => self.accounts.contains(a),
            Owner::Zone(z) => self.zones.contains(z),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty() && self.zones.is_empty()
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Token id or user email, for logs. Never a secret.
    pub label: String,
    pub scope: Scope,
    pub permission: Permission,
}

impl Principal {
    pub fn may(&self, owner: &Owner, needed: Permission) -> bool {
        self.permission.covers(needed) && self.scope.contains(owner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_covers_read_but_not_the_reverse() {
        let a = AccountId::parse(&"a".repeat(32)).unwrap();
        let owner = Owner::Account(a.clone());
        let mut p = Principal {
            label: "t".into(),
            scope: Scope {
                accounts: vec![a],
                zones: vec![],
            },
            permission: Permission::Read,
        };
        assert!(p.may(&owner, Permission::Read));
        assert!(!p.may(&owner, Permission::Write));
        p.permission = Permission::Write;
        assert!(p.may(&owner, Permission::Write));
        let zone = Owner::Zone(ZoneId::parse(&"a".repeat(32)).unwrap());
        assert!(
            !p.may(&zone, Permission::Read),
            "an account grant is not a zone grant"
        );
    }

    #[test]
    fn key_delivery_is_its_own_permission() {
        use Permission::*;
        assert!(!Write.covers(KeyDelivery));
        assert!(!Read.covers(KeyDelivery));
        assert!(KeyDelivery.covers(KeyDelivery));
        assert!(!KeyDelivery.covers(Read));
        assert!(!KeyDelivery.covers(Write));
        for p in Permission::ALL {
            assert_eq!(Permission::parse(p.as_str()), Some(p));
        }
        assert_eq!(Permission::parse("key_delivery"), None);
    }
}
