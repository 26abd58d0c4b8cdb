//! The Kafka side (I/O only): an idempotent rdkafka producer that delivers a request's
//! records ([`crate::records`], built by the pure acceptance step)
//! and reports success only when Kafka acknowledged every one of them (`acks=all`).
//! Split by job, one reason to change each:
//!
//! - [`config`]: settings -> librdkafka configuration;
//! - [`delivery`]: the producer (created, destroyed off the async threads); enqueue a
//!   request's records and wait for every acknowledgement;
//! - [`classify`]: why a record is not in Kafka, and whether a retry may succeed;
//! - [`recovery`]: replacing a producer that can no longer produce (it imports
//!   [`delivery`]; `delivery` imports nothing of it);
//! - [`admin`]: topic creation and existence checks.

pub mod admin;
mod classify;
mod config;
mod delivery;
mod recovery;

pub use classify::without_values;
pub use classify::{first_oversized, DeliveryError, ProducerError};
pub(crate) use config::client_config;
pub use config::producer_config;
pub use delivery::KafkaSink;
