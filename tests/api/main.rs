//! The integration suite: the real service against real Postgres and RabbitMQ.

mod auth;
mod compat;
mod create;
mod csr_check;
mod custody;
mod delivery;
mod openapi;
mod pipeline;
mod processes;
mod read;
mod tenancy;
mod validation;
