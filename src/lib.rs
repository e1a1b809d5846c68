//! csrd: a Cloudflare-compatible Custom CSR service.
//!
//! Layout: `domain` (validated types, no I/O) and `crypto` (keygen, CSR, envelope) are the
//! core; `http`, `amqp` and `db` are adapters; `ingress` and `worker` compose them into the
//! two roles; `startup` wires a process together.
#![forbid(unsafe_code)]

pub mod amqp;
pub mod auth;
pub mod bench;
pub mod cli;
pub mod crypto;
pub mod db;
pub mod domain;
pub mod http;
pub mod ingress;
pub mod metrics;
pub mod settings;
pub mod startup;
pub mod telemetry;
pub mod worker;
