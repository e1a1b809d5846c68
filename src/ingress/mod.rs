//! The ingress role's messaging side: publishing create jobs and receiving completion events
//! for the requests this instance is holding open.

pub mod events;
pub mod submit;
pub mod waiters;

pub use submit::JobSubmitter;
pub use waiters::{Waiter, Waiters};
