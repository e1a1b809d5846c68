//! The integration suite: the real service against real Postgres and RabbitMQ, or, for the
//! suites about HTTP and storage, in memory (the real ingress and worker, no broker, no socket;
//! see `csrd_test_support::spawn_in_memory`).

// Tests make and present throw-away credentials: revealing them is what they are for.
#![allow(clippy::disallowed_methods)]

mod agent;
mod audit;
mod auth;
mod batch_cli;
mod batch_cli_hostile;
mod batches;
mod certificates;
mod certificates_hostile;
mod compat;
mod create;
mod create_service;
mod csr_check;
mod custody;
mod delivery;
mod fairshare;
mod hostile;
mod key_delivery;
mod key_types;
mod keys_verify;
mod limits;
mod logs;
mod metrics;
mod migrations;
mod openapi;
mod pipeline;
mod processes;
mod read;
mod rotation;
mod secrets_scan;
mod tenancy;
mod tls;
mod token_cli;
mod validation;
