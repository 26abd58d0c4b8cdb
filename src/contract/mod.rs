//! The contract published to downstream teams, generated from the code and the
//! routing file that produce the records, so it cannot drift from them:
//!
//! - [`schema`]: the JSON Schema of the flat event (`schema/flat-event.v1.json`);
//! - [`compat`]: whether a new version of that schema breaks its consumers;
//! - [`asyncapi`]: the AsyncAPI 3.0 document of the topics a routing file feeds.
//!
//! Pure: documents in, documents out. The README's "Consuming the events" section
//! is the prose beside them.

pub mod asyncapi;
pub mod compat;
pub mod schema;
