//! Topic administration: which routed topics exist, and creating the missing ones.
//!
//! Used by the `create-topics` command, the readiness probe and the tests.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::{Client, DefaultClientContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::ClientContext;

use super::classify::without_values;
use crate::config::KafkaSettings;

/// Why topics could not be listed or created.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("cannot reach Kafka at {servers}: {}", without_values(cause))]
    Unreachable { servers: String, cause: KafkaError },
    #[error("cannot create topic {topic}: {reason}")]
    CreateFailed { topic: String, reason: String },
    #[error("cannot describe the configuration of topic {topic}: {reason}")]
    DescribeFailed { topic: String, reason: String },
}

/// What `create_topics` did with one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicOutcome {
    Created,
    AlreadyExisted,
}

/// The topics among `wanted` that the cluster's metadata does not list. Asks for
/// those topics only, not for the whole cluster's. Blocking.
pub fn missing_topics<'a, C: ClientContext>(
    client: &Client<C>,
    wanted: impl IntoIterator<Item = &'a str>,
    timeout: Duration,
) -> Result<Vec<&'a str>, KafkaError> {
    let mut missing = Vec::new();
    for topic in wanted {
        let metadata = client.fetch_metadata(Some(topic), timeout)?;
        let exists = metadata
            .topics()
            .iter()
            .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty());
        if !exists {
            missing.push(topic);
        }
    }
    Ok(missing)
}

/// The routed topics missing from the cluster at `settings.bootstrap_servers`
/// (for `check --kafka`). Blocking.
pub fn missing_routed_topics<'a>(
    settings: &KafkaSettings,
    wanted: impl IntoIterator<Item = &'a str>,
    timeout: Duration,
) -> Result<Vec<&'a str>, AdminError> {
    let client = admin_client(settings)?;
    missing_topics(client.inner(), wanted, timeout).map_err(|cause| unreachable(settings, cause))
}

fn unreachable(settings: &KafkaSettings, cause: KafkaError) -> AdminError {
    AdminError::Unreachable {
        servers: settings.bootstrap_servers.clone(),
        cause,
    }
}

fn admin_client(settings: &KafkaSettings) -> Result<AdminClient<DefaultClientContext>, AdminError> {
    super::client_config(settings)
        .create()
        .map_err(|cause| unreachable(settings, cause))
}

/// The topics among `topics` (which exist) whose `cleanup.policy` lacks
/// `compact`, as the cluster describes them.
pub async fn not_compacted<'a>(
    settings: &KafkaSettings,
    topics: &[&'a str],
) -> Result<Vec<&'a str>, AdminError> {
    if topics.is_empty() {
        return Ok(Vec::new());
    }
    let client = admin_client(settings)?;
    let resources: Vec<ResourceSpecifier> =
        topics.iter().map(|t| ResourceSpecifier::Topic(t)).collect();
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    let results = client
        .describe_configs(&resources, &options)
        .await
        .map_err(|cause| unreachable(settings, cause))?;
    let mut not_compacted = Vec::new();
    for (topic, result) in topics.iter().zip(results) {
        let resource = result.map_err(|code| AdminError::DescribeFailed {
            topic: topic.to_string(),
            reason: code.to_string(),
        })?;
        let compacted = resource.entries.iter().any(|entry| {
            entry.name == "cleanup.policy"
                && entry
                    .value
                    .as_deref()
                    .is_some_and(|v| v.split(',').any(|p| p.trim() == "compact"))
        });
        if !compacted {
            not_compacted.push(*topic);
        }
    }
    Ok(not_compacted)
}

/// How long a state record may wait before Kafka compacts it away, at most: a
/// day (Kafka's default is unbounded, so a quiet topic could keep a deleted
/// entity's earlier states readable for ever).
pub const STATE_MAX_COMPACTION_LAG_MS: &str = "86400000";

/// Creates each topic that does not exist yet, those in `compacted` with
/// `cleanup.policy=compact` and `max.compaction.lag.ms` of
/// [`STATE_MAX_COMPACTION_LAG_MS`]; existing ones are left as they are.
pub async fn create_topics(
    settings: &KafkaSettings,
    topics: &[&str],
    compacted: &[&str],
    partitions: i32,
    replication_factor: i32,
) -> Result<Vec<(String, TopicOutcome)>, AdminError> {
    let client = admin_client(settings)?;
    let new_topics: Vec<NewTopic> = topics
        .iter()
        .map(|name| {
            let topic = NewTopic::new(
                name,
                partitions,
                TopicReplication::Fixed(replication_factor),
            );
            if compacted.contains(name) {
                topic
                    .set("cleanup.policy", "compact")
                    .set("max.compaction.lag.ms", STATE_MAX_COMPACTION_LAG_MS)
            } else {
                topic
            }
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = client
        .create_topics(&new_topics, &options)
        .await
        .map_err(|cause| unreachable(settings, cause))?;
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
