//! Shared helpers of the integration tests, one module per concern; every helper
//! is written once and re-exported here, so a test file says `use common::*;`.
//!
//! - [`broker`]: the test broker's address, unique topics, brokers of a test's own;
//! - [`kafka`]: reading records back over the Kafka protocol;
//! - [`http`]: requests and their answers, metrics read over HTTP;
//! - [`connector`]: a connector in this process, or the binary as a process;
//! - [`contract`]: the committed JSON Schema every event read back must match;
//! - [`fixtures`]: request bodies and routing files;
//! - [`load`]: a steady load of notifications, its outcomes and their checks;
//! - [`otlp`]: a real OTLP receiver, for the spans the connector exports;
//! - [`process`]: free ports, signals and child processes;
//! - [`turns`]: which tests run alone and which beside each other.
//!
//! The shared broker is started by `scripts/test.sh`, which exports its address as
//! `WEBHOOK_CONNECTOR_TEST_KAFKA`. Tests that need it fail without it; they never skip.

// Each test binary uses a subset of the helpers.
#![allow(dead_code, unused_imports)]

pub mod broker;
pub mod connector;
pub mod contract;
pub mod fixtures;
pub mod http;
pub mod kafka;
pub mod load;
pub mod otlp;
pub mod process;
pub mod turns;

pub use broker::*;
pub use connector::*;
pub use contract::*;
pub use fixtures::*;
pub use http::*;
pub use kafka::*;
pub use load::*;
pub use otlp::*;
pub use process::*;
pub use turns::*;
