//! webhook-connector: the reservation platform's change webhooks (customers,
//! bookings) in, one flat event per change out to the Kafka topics a routing file
//! names.
//!
//! ```text
//! POST ─▶ ingress ─▶ signature ─▶ payload ─▶ normalize ─▶ routing ─▶ sink ─▶ Kafka
//!   ◀── 200 only after Kafka acknowledged every event of the notification ──┘
//! ```
//!
//! - [`payload`]: the webhook body's types (lenient: unknown fields are kept).
//! - [`entity`]: the webhook families (customer, booking) and the fields the contract names;
//!   pure data.
//! - [`normalize`]: notification -> flat events; pure.
//! - [`event`]: the flat event and its JSON writer with field rules applied, so a record's
//!   bytes are written in one place; pure.
//! - [`event_id`]: the deterministic id of each change; pure.
//! - [`routing`]: entity and change type -> topics, each topic's field rules, state and
//!   erasure topics; pure.
//! - [`privacy`]: field rules (include, exclude, pseudonymise) and the HMAC key; pure.
//! - [`state`]: state records and erasure events; pure.
//! - [`records`]: routed events -> Kafka records (key, value, headers) and their sizes; pure.
//! - [`pipeline`]: the acceptance step (limits, parse, normalize, route); pure, shared by
//!   the endpoint and `explain`, so both refuse the same bodies.
//! - [`reload`]: the routing table in use, reloaded on SIGHUP or a file change.
//! - [`config`]: settings and the routing file, validated at load.
//! - [`ingress`]: the HTTP server, endpoints and the error contract.
//! - [`sink`]: Kafka I/O only: the idempotent producer and topic administration.
//! - [`app`]: wires the stages together and runs the server with graceful shutdown.
//! - [`contract`]: the JSON Schema of the event and the AsyncAPI document of the topics;
//!   pure.
//! - [`explain`]: the `explain` command's rendering, shared with nothing that does I/O.
//! - [`forget`]: the `forget` command: a tombstone and an erasure event, delivered.
//! - [`telemetry`]: logging and Prometheus metrics.

pub mod app;
pub mod config;
pub mod contract;
pub mod entity;
pub mod event;
pub mod event_id;
pub mod explain;
pub mod forget;
pub mod ingress;
pub mod normalize;
pub mod payload;
pub mod pipeline;
pub mod privacy;
pub mod records;
pub mod reload;
pub mod replay;
pub mod routing;
pub mod sink;
pub mod state;
pub mod telemetry;
