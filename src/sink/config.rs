//! Settings -> librdkafka configuration: the operator's properties under the
//! settings the connector's guarantees rest on.

use rdkafka::ClientConfig;

use super::record::RECORD_OVERHEAD_BYTES;
use crate::config::KafkaSettings;

/// The librdkafka configuration: the operator's properties under the settings the
/// connector's guarantees rest on.
pub(crate) fn client_config(settings: &KafkaSettings) -> ClientConfig {
    let mut config = ClientConfig::new();
    // Defaults the operator may override: report a missing topic after a second
    // instead of holding its events until the delivery timeout, and never have a
    // topic created as a side effect of producing, a readiness probe or a check.
    config
        .set("topic.metadata.propagation.max.ms", "1000")
        .set("allow.auto.create.topics", "false");
    for (key, value) in &settings.properties {
        config.set(key, value);
    }
    config
        .set("bootstrap.servers", &settings.bootstrap_servers)
        .set("client.id", "webhook-connector");
    config
}

/// The producer's configuration: [`client_config`] plus the settings "200 means
/// acknowledged" rests on (idempotence, `acks=all`, the delivery timeout), and a
/// queue bounded by `max_in_flight_bytes` (`server.max_in_flight_bytes`), in bytes
/// and, through the per-record overhead the connector counts, in records.
pub fn producer_config(settings: &KafkaSettings, max_in_flight_bytes: usize) -> ClientConfig {
    let mut config = client_config(settings);
    let kbytes = max_in_flight_bytes.div_ceil(1024);
    let messages = (max_in_flight_bytes / RECORD_OVERHEAD_BYTES).max(1);
    config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set(
            "message.timeout.ms",
            settings.delivery_timeout_ms.to_string(),
        )
        .set("queue.buffering.max.kbytes", kbytes.to_string())
        .set("queue.buffering.max.messages", messages.to_string());
    config
}
