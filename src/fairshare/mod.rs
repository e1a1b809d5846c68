//! Sharing the machine between tenants by scheduling, not by caps (docs/operations.md, "Limits and
//! abuse"). One rule everywhere, start-time fair queuing over per-tenant lines ([`clock`]):
//! with one tenant active it gets everything; with several, each freed unit goes to the
//! tenant furthest behind its weighted share.
//!
//! - [`gate`]: a process's CPU slots (charged in measured time; see [`cpu`]: keys, chain checks
//!   and large bodies are made and read in them) and an ingress's window of queued single
//!   creates (charged in cost units) are both a [`FairGate`].
//! - [`bulk`]: batches wait in Postgres as chunks; every process dispatches the next chunk in
//!   fair-share order as the bulk queue empties, so the broker never holds a long line of
//!   one tenant's chunks ahead of another's.
//! - [`policy`]: weights and limits per tenant, with operators' overrides from Postgres.
//! - [`rate`]: the per-tenant request rate, shared by every ingress through Postgres.

pub mod bulk;
pub mod clock;
pub mod cpu;
pub mod gate;
pub mod policy;
pub mod rate;

pub use bulk::{BulkDispatcher, Kick};
pub use clock::{MIN_WEIGHT, VirtualClock};
pub use cpu::{CpuSlots, Turns};
pub use gate::{Ask, FairGate, Lane, Permit};
pub use policy::{Defaults, Policies, TenantPolicy};
pub use rate::SharedRate;

/// The machine time one cost unit stands for (see [`crate::domain::KeyType::cost`]: an
/// RSA-2048 create's 60 ms over its 256 units). Converts the keygen time a worker measures
/// into the units everything else counts in.
pub const UNIT: std::time::Duration = std::time::Duration::from_micros(234);

/// `elapsed` in cost units.
pub fn units(elapsed: std::time::Duration) -> f64 {
    elapsed.as_secs_f64() / UNIT.as_secs_f64()
}
