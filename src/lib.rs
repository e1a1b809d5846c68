//! csrd: a Cloudflare-compatible Custom CSR service.
//!
//! Layout: `domain` (validated types, jobs and outcomes, no I/O) and `crypto` (keygen, CSR,
//! envelope) are the core; `queue` is the port to the message broker (with an in-memory
//! implementation); `http`, `amqp` and `db` are adapters that depend on the core and never on
//! each other; `ingress` holds the use cases the HTTP adapter calls, `worker` the job handling;
//! `startup` wires a process together.
#![forbid(unsafe_code)]

pub mod agent;
pub mod amqp;
pub mod audit;
pub mod auth;
pub mod bench;
pub mod buckets;
pub mod cli;
pub mod client;
pub mod crypto;
pub mod custody;
pub mod db;
pub mod domain;
pub mod fairshare;
pub mod http;
pub mod ingress;
pub mod log_throttle;
pub mod metrics;
pub mod queue;
pub mod settings;
pub mod startup;
pub mod telemetry;
pub mod trace_export;
pub mod worker;
