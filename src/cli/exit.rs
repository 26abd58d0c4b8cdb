//! Why a command failed, and the one place that says which exit code each failure
//! gets (64: configuration, 65: bad input file or data, 69: Kafka unavailable, 1: anything else).

use webhook_connector::app::StartError;
use webhook_connector::config::routing_file::RoutingFileError;
use webhook_connector::config::SettingsError;
use webhook_connector::explain::ExplainError;
use webhook_connector::forget::ForgetError;
use webhook_connector::replay::ReplayError;
use webhook_connector::sink::admin::AdminError;

/// The settings or the routing file cannot be used (sysexits `EX_CONFIG`).
const CONFIG: u8 = 64;
/// The input file or the data read is refused (sysexits `EX_DATAERR`).
const DATA: u8 = 65;
/// Kafka cannot be reached or did not acknowledge (sysexits `EX_UNAVAILABLE`).
const UNAVAILABLE: u8 = 69;
/// Anything else.
const OTHER: u8 = 1;

/// Why a command failed. Each variant's message is what the user reads after
/// `error: ` (with its causes), and [`Failure::code`] is its exit code.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Failure {
    /// The settings cannot be loaded; `origin` is the settings file (or the built-in defaults).
    #[error("invalid settings ({origin})")]
    Settings {
        origin: String,
        #[source]
        cause: SettingsError,
    },
    /// Settings that load but that `run` refuses (checked by `check`).
    #[error("`run` would refuse these settings")]
    NotServable(#[source] SettingsError),
    /// Settings that do not fit the routing file.
    #[error("invalid settings")]
    SettingsForRoutes(#[source] SettingsError),
    #[error("invalid routing file")]
    RoutingFile(#[source] RoutingFileError),
    /// Traces cannot be exported as `[traces]` and the `OTEL_*` variables say.
    #[error("invalid trace export settings: {0}")]
    Traces(String),
    /// librdkafka refuses a `kafka.properties` entry (its value never shown).
    #[error("invalid settings: kafka.properties: {0}")]
    KafkaProperties(String),
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("the server stopped with an error: {0}")]
    Stopped(tokio::task::JoinError),
    #[error("cannot read {file}")]
    ReadInput {
        file: String,
        #[source]
        cause: std::io::Error,
    },
    #[error("{file}: {cause}")]
    Explain { file: String, cause: ExplainError },
    #[error(transparent)]
    Replay(#[from] ReplayError),
    #[error(
        "notifications not all acknowledged by Kafka: {0}; run replay again (the ids are the same)"
    )]
    NotAcknowledged(usize),
    #[error("notifications refused again: {0}; they stay where they are")]
    RefusedAgain(usize),
    #[error(transparent)]
    Forget(#[from] ForgetError),
    #[error(transparent)]
    Admin(#[from] AdminError),
    #[error("routed topics missing in Kafka: {} (create them, e.g. with `webhook-connector create-topics`)", .0.join(", "))]
    MissingTopics(Vec<String>),
    #[error("state topics without cleanup.policy=compact: {} (a tombstone would not remove the earlier states; set it, e.g. kafka-configs.sh --alter --entity-type topics --entity-name TOPIC --add-config cleanup.policy=compact)", .0.join(", "))]
    NotCompacted(Vec<String>),
    /// Writing to standard output, starting the runtime.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

impl Failure {
    /// The exit code of this failure.
    pub(crate) fn code(&self) -> u8 {
        use Failure::*;
        match self {
            Settings { .. } | NotServable(_) | SettingsForRoutes(_) => CONFIG,
            RoutingFile(_) | KafkaProperties(_) | Traces(_) => CONFIG,
            Start(StartError::Settings(_)) => CONFIG,
            Replay(ReplayError::UnknownTopic(_)) => CONFIG,
            Forget(ForgetError::NoErasureTopic) => CONFIG,
            ReadInput { .. } | Explain { .. } | RefusedAgain(_) => DATA,
            Replay(_) | Forget(_) | Admin(_) | NotAcknowledged(_) => UNAVAILABLE,
            MissingTopics(_) | NotCompacted(_) => UNAVAILABLE,
            Start(_) | Stopped(_) | Io(_) | Json(_) => OTHER,
        }
    }
}
