//! Settings -> librdkafka configuration: the operator's properties under the
//! settings the connector's guarantees rest on.

use rdkafka::ClientConfig;

use crate::config::{is_reserved_property, KafkaSettings};
use crate::records::RECORD_OVERHEAD_BYTES;

/// The librdkafka configuration: the operator's properties under the settings the
/// connector's guarantees rest on. The connector's own values are set last, and
/// the operator's spellings of them (aliases, `topic.` prefixes; refused at load)
/// are left out, so that no property is set under two names and which one wins
/// never depends on the order of `ClientConfig`'s `HashMap`.
pub(crate) fn client_config(settings: &KafkaSettings) -> ClientConfig {
    let mut config = ClientConfig::new();
    // Defaults the operator may override: report a missing topic after a second
    // instead of holding its events until the delivery timeout, and never have a
    // topic created as a side effect of producing, a readiness probe or a check;
    // a client id brokers can log and set quotas by (operators may name replicas).
    config
        .set("topic.metadata.propagation.max.ms", "1000")
        .set("allow.auto.create.topics", "false")
        .set("client.id", "webhook-connector");
    for (key, value) in &settings.properties {
        if !is_reserved_property(key) {
            config.set(key, value);
        }
    }
    config.set("bootstrap.servers", &settings.bootstrap_servers);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RESERVED_PROPERTIES;

    /// Settings built in code, past the check at load, with every spelling of
    /// every property the connector sets.
    fn every_spelling() -> KafkaSettings {
        let mut settings = KafkaSettings::default();
        for (spelling, ..) in RESERVED_PROPERTIES {
            settings.properties.insert(spelling.into(), "1".into());
        }
        settings.properties.insert("linger.ms".into(), "7".into());
        settings
    }

    #[test]
    fn the_connectors_values_are_the_only_spelling_of_what_it_sets() {
        let config = producer_config(&every_spelling(), 1 << 20);
        let set: Vec<&str> = (RESERVED_PROPERTIES.iter())
            .map(|(spelling, ..)| *spelling)
            .filter(|spelling| config.get(spelling).is_some())
            .collect();
        assert_eq!(
            set,
            [
                "queue.buffering.max.kbytes",
                "queue.buffering.max.messages",
                "bootstrap.servers",
                "enable.idempotence",
                "acks",
                "message.timeout.ms",
            ]
        );
        assert_eq!(config.get("acks"), Some("all"));
        assert_eq!(config.get("enable.idempotence"), Some("true"));
        assert_eq!(config.get("message.timeout.ms"), Some("10000"));
        assert_eq!(config.get("bootstrap.servers"), Some("127.0.0.1:9092"));
        assert_eq!(config.get("queue.buffering.max.kbytes"), Some("1024"));
        assert_eq!(config.get("linger.ms"), Some("7"));
    }

    #[test]
    fn librdkafka_reads_every_reserved_spelling_as_its_property() {
        for (spelling, property, _) in RESERVED_PROPERTIES {
            let value = match property {
                "enable.idempotence" => "true",
                "metadata.broker.list" => "broker:9",
                "request.required.acks" => "7",
                _ => "4321",
            };
            let native = (ClientConfig::new().set(spelling, value))
                .create_native_config()
                .unwrap();
            assert_eq!(native.get(property).unwrap(), value, "{spelling}");
        }
    }

    #[test]
    fn librdkafka_knows_no_other_case_nor_topic_prefix_of_global_properties() {
        for unknown in [
            "ACKS",
            "Acks",
            "Message.Timeout.Ms",
            "BOOTSTRAP.SERVERS",
            "topic.enable.idempotence",
            "topic.bootstrap.servers",
            "topic.queue.buffering.max.kbytes",
            "topic.topic.acks",
        ] {
            let config = ClientConfig::new().set(unknown, "1").clone();
            assert!(config.create_native_config().is_err(), "{unknown}");
        }
    }

    #[test]
    fn the_operator_may_name_the_client() {
        let mut settings = KafkaSettings::default();
        assert_eq!(
            client_config(&settings).get("client.id"),
            Some("webhook-connector")
        );
        settings
            .properties
            .insert("client.id".into(), "replica-2".into());
        assert_eq!(client_config(&settings).get("client.id"), Some("replica-2"));
    }

    #[test]
    fn the_operator_overrides_the_connectors_defaults_but_not_its_guarantees() {
        let mut settings = every_spelling();
        settings
            .properties
            .insert("allow.auto.create.topics".into(), "true".into());
        let config = client_config(&settings);
        assert_eq!(config.get("allow.auto.create.topics"), Some("true"));
        assert_eq!(
            config.get("topic.metadata.propagation.max.ms"),
            Some("1000")
        );
        assert_eq!(config.get("client.id"), Some("webhook-connector"));
        assert_eq!(config.get("metadata.broker.list"), None);
        assert_eq!(config.get("bootstrap.servers"), Some("127.0.0.1:9092"));
    }
}
