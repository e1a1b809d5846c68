//! RabbitMQ adapter: supervised connections, the topology, the wire format, and the queue
//! port's implementation (publishing jobs, consuming them, completion events).

pub mod codec;
pub mod connect;
pub mod consumer;
pub mod depth;
pub mod events;
pub mod jobs;
pub mod publish;
pub mod supervisor;
pub mod topology;

pub use connect::connect;
pub use consumer::RabbitConsumer;
pub use events::RabbitCompletions;
pub use jobs::RabbitJobQueue;
pub use publish::Publisher;
pub use supervisor::{Broker, Link};
pub use topology::{QueueLimits, Topology};
