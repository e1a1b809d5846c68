//! `csrd agent`: the TLS host's side of key delivery. `agent init` makes the host's age
//! identity; `agent sync` takes the keys its recipient receives, checks each against its
//! certificate and the operator's configuration, installs it atomically and reloads the TLS
//! server (see [`pass`]).

pub mod config;
pub mod files;
pub mod pass;
pub mod state;

pub use config::AgentConfig;
pub use pass::{Agent, Summary, init_identity};
