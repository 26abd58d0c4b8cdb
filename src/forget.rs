//! The `forget` command: erasure on request. Writes a tombstone for the entity's
//! id to its state topic (when it has one) and one erasure event (entity, id,
//! time, no personal data) to the routing file's `[erasure]` topic, so that
//! consumers holding the entity's data can erase it. docs/privacy.md says
//! what consumers see.

use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::Semaphore;
use tracing::Instrument;
use uuid::Uuid;

use crate::config::Settings;
use crate::entity::Entity;
use crate::records::Records;
use crate::routing::RoutingTable;
use crate::sink::{DeliveryError, KafkaSink, ProducerError};
use crate::telemetry::traces;

/// Why nothing (or not everything) was written.
#[derive(Debug, thiserror::Error)]
pub enum ForgetError {
    #[error("the routing file has no [erasure] topic: add one (e.g. [erasure] topic = \"privacy.erasures\") so that consumers learn of erasures")]
    NoErasureTopic,
    #[error(transparent)]
    Producer(#[from] ProducerError),
    #[error("not every record was acknowledged, run `forget` again")]
    Delivery(#[from] DeliveryError),
}

/// What was written, acknowledged by Kafka.
#[derive(Debug)]
pub struct Forgotten {
    /// The state topic that received the tombstone, if the entity has one.
    pub state_topic: Option<String>,
    pub erasure_topic: String,
    pub erasure_id: Uuid,
    pub key: String,
}

/// Writes the tombstone and the erasure event for `entity`'s `id`, and returns
/// once Kafka acknowledged both.
pub async fn forget(
    settings: &Settings,
    table: &RoutingTable,
    entity: &'static Entity,
    id: i64,
    now: DateTime<Utc>,
) -> Result<Forgotten, ForgetError> {
    let erasure_topic = table.erasure_topic().ok_or(ForgetError::NoErasureTopic)?;
    let state_topic = table.state_for(entity).map(|s| s.topic.as_str());
    let erasure_id = Uuid::new_v4();
    let requested_at = now.to_rfc3339_opts(SecondsFormat::AutoSi, true);
    let mut records = Records::erasure(
        entity,
        id,
        state_topic,
        erasure_topic,
        erasure_id,
        requested_at,
    );
    let budget = settings.server.max_in_flight_bytes;
    let sink = Arc::new(KafkaSink::new(&settings.kafka, budget, Counter::default())?);
    let held = Arc::new(Semaphore::new(1))
        .acquire_owned()
        .await
        .expect("the semaphore is open");
    let span = traces::forget_span(entity.name);
    let context = traces::start(&span, None);
    records.trace = Some(traces::record_headers(&context));
    sink.deliver(records, held).instrument(span).await?;
    Ok(Forgotten {
        state_topic: state_topic.map(String::from),
        erasure_topic: erasure_topic.to_string(),
        erasure_id,
        key: id.to_string(),
    })
}
