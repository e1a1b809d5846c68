//! RabbitMQ adapter: supervised connections, topology, message formats, confirmed publishing.

pub mod connect;
pub mod messages;
pub mod publish;
pub mod supervisor;
pub mod topology;

pub use connect::connect;
pub use messages::{Completion, CreateJob, Outcome};
pub use publish::{PublishError, Publisher};
pub use supervisor::{Broker, Link};
pub use topology::{QueueLimits, Topology};
