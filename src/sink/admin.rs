//! Topic administration: which routed topics exist, and creating the missing ones.
//!
//! Used by the `create-topics` command, the readiness probe and the tests.

use std::collections::BTreeSet;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, Producer};

use crate::config::KafkaSettings;

/// Why topics could not be listed or created.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("cannot reach Kafka at {servers}: {source}")]
    Unreachable { servers: String, source: KafkaError },
    #[error("cannot create topic {topic}: {reason}")]
    CreateFailed { topic: String, reason: String },
}

/// What `create_topics` did with one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicOutcome {
    Created,
    AlreadyExisted,
}

/// The topics among `wanted` that the cluster's metadata does not list.
/// Blocking: call it from a blocking context.
pub fn missing_topics<'a>(
    producer: &FutureProducer,
    wanted: impl IntoIterator<Item = &'a str>,
    timeout: Duration,
) -> Result<Vec<&'a str>, KafkaError> {
    let metadata = producer.client().fetch_metadata(None, timeout)?;
    let existing: BTreeSet<&str> = metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none() && !t.partitions().is_empty())
        .map(|t| t.name())
        .collect();
    Ok(wanted
        .into_iter()
        .filter(|t| !existing.contains(t))
        .collect())
}

/// Creates each topic that does not exist yet; existing ones are left as they are.
pub async fn create_topics(
    settings: &KafkaSettings,
    topics: &[&str],
    partitions: i32,
    replication_factor: i32,
) -> Result<Vec<(String, TopicOutcome)>, AdminError> {
    let unreachable = |source| AdminError::Unreachable {
        servers: settings.bootstrap_servers.clone(),
        source,
    };
    let client: AdminClient<DefaultClientContext> = super::client_config(settings)
        .create()
        .map_err(unreachable)?;
    let new_topics: Vec<NewTopic> = topics
        .iter()
        .map(|name| {
            NewTopic::new(
                name,
                partitions,
                TopicReplication::Fixed(replication_factor),
            )
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = client
        .create_topics(&new_topics, &options)
        .await
        .map_err(unreachable)?;
    let mut outcomes = Vec::with_capacity(results.len());
    for result in results {
        match result {
            Ok(topic) => outcomes.push((topic, TopicOutcome::Created)),
            Err((topic, RDKafkaErrorCode::TopicAlreadyExists)) => {
                outcomes.push((topic, TopicOutcome::AlreadyExisted))
            }
            Err((topic, code)) => {
                return Err(AdminError::CreateFailed {
                    topic,
                    reason: code.to_string(),
                })
            }
        }
    }
    Ok(outcomes)
}
