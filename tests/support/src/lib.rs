//! The harness csrd's integration suites share (`tests/api`, `tests/faults`).
//!
//! Every test gets a database and an AMQP prefix of its own ([`Isolation`]), removed when it
//! ends. [`TestApp`] runs csrd on a runtime of its own, either as the real thing (RabbitMQ, an
//! HTTP port) or in memory (no broker, no socket: requests go through the router with
//! `oneshot`); when the test ends it shuts the app down, waits for it, and checks that no job
//! was left in its queues (as crates.io's test teardown checks its job queue).

// Tests make and present throw-away credentials: revealing them is what they are for.
#![allow(clippy::disallowed_methods)]

pub mod app;
pub mod broker;
pub mod ca;
pub mod client;
pub mod database;
pub mod eventually;
pub mod fixtures;
pub mod isolation;
pub mod pg_pair;
pub mod process;
pub mod rabbit_node;
pub mod services;

pub use app::{
    TestApp, spawn_app, spawn_app_with, spawn_in_memory, spawn_in_memory_with, spawn_role,
};
pub use ca::TestCa;
pub use client::{Auth, RawResponse, Response};
pub use eventually::{eventually, eventually_within, poll_until};
pub use fixtures::*;
pub use isolation::{Isolation, admin_url, amqp_url};
