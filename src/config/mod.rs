//! Settings and the routing file (docs/configuration.md and docs/routing.md).
//!
//! Settings come from a TOML file through the `config` crate, overridden by
//! environment variables `CONNECTOR__SECTION__KEY`. Unknown keys are refused, and
//! every value is checked at load with a message that names the key and says what
//! to fix, so a typo never turns into a silent default.

pub mod routing_file;
pub mod traces;

pub use traces::TracesSettings;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::privacy::Key;

/// The prefix of environment overrides: `CONNECTOR__KAFKA__BOOTSTRAP_SERVERS`.
pub(crate) const ENV_PREFIX: &str = "CONNECTOR";
/// The largest `server.max_in_flight_bytes`: librdkafka's queue bound in records
/// (one per 256 bytes) is at most `i32::MAX`.
const MAX_IN_FLIGHT_BYTES: usize = i32::MAX as usize * 256;
/// The variable with the privacy key.
const PRIVACY_KEY_VAR: &str = "CONNECTOR__PRIVACY__KEY";
/// The privacy key of a dry run where none is set ([`Settings::load_for_dry_run`]):
/// public, so what it keys differs from what any deployment writes.
pub const PLACEHOLDER_PRIVACY_KEY: &str = "placeholder-privacy-key-of-a-dry-run-never-deployed";
/// The variable with the comma-separated HMAC secrets.
const SECRETS_VAR: &str = "CONNECTOR__WEBHOOK__SECRETS";

/// librdkafka properties the connector sets itself, in every spelling librdkafka
/// accepts (`rdkafka_conf.c`), with the property it reads and what to do instead.
/// Spellings are a name, an alias (`_RK_C_ALIAS`: `bootstrap.servers`, `acks`,
/// `delivery.timeout.ms`), or a topic-level name with the `topic.` prefix that
/// `rd_kafka_topic_conf_set` strips. librdkafka compares names exactly (`strcmp`),
/// so another case is no property of its own (it refuses it as unknown).
/// Overriding them would break "200 means acknowledged by every in-sync replica"
/// or fight a setting above; and with two spellings of one property in rdkafka's
/// `ClientConfig` (a `HashMap`), which one wins would depend on hash order.
pub(crate) const RESERVED_PROPERTIES: [(&str, &str, &str); 13] = {
    const IN_FLIGHT: &str = "set server.max_in_flight_bytes instead";
    const BROKERS: &str = "set kafka.bootstrap_servers instead";
    const ACKS: &str = "the connector always waits for acks=all; remove it";
    const TIMEOUT: &str = "set kafka.delivery_timeout_ms instead";
    const IDEMPOTENT: &str = "the connector always produces idempotently; remove it";
    [
        (
            "queue.buffering.max.kbytes",
            "queue.buffering.max.kbytes",
            IN_FLIGHT,
        ),
        (
            "queue.buffering.max.messages",
            "queue.buffering.max.messages",
            IN_FLIGHT,
        ),
        ("metadata.broker.list", "metadata.broker.list", BROKERS),
        ("bootstrap.servers", "metadata.broker.list", BROKERS),
        ("enable.idempotence", "enable.idempotence", IDEMPOTENT),
        ("request.required.acks", "request.required.acks", ACKS),
        ("acks", "request.required.acks", ACKS),
        ("topic.request.required.acks", "request.required.acks", ACKS),
        ("topic.acks", "request.required.acks", ACKS),
        ("message.timeout.ms", "message.timeout.ms", TIMEOUT),
        ("delivery.timeout.ms", "message.timeout.ms", TIMEOUT),
        ("topic.message.timeout.ms", "message.timeout.ms", TIMEOUT),
        ("topic.delivery.timeout.ms", "message.timeout.ms", TIMEOUT),
    ]
};

/// Whether librdkafka reads `name` as a property the connector sets itself
/// ([`RESERVED_PROPERTIES`]).
pub(crate) fn is_reserved_property(name: &str) -> bool {
    RESERVED_PROPERTIES
        .iter()
        .any(|(spelling, ..)| *spelling == name)
}

/// librdkafka's name for the largest record the producer sends (it has no alias).
pub const MESSAGE_MAX_BYTES: &str = "message.max.bytes";
/// librdkafka's default `message.max.bytes`.
pub const DEFAULT_MESSAGE_MAX_BYTES: usize = 1_000_000;
/// The `message.max.bytes` librdkafka accepts.
const MESSAGE_MAX_BYTES_RANGE: std::ops::RangeInclusive<usize> = 1000..=1_000_000_000;

/// What a raw copy of a body (a dead-letter or raw topic record) adds to the
/// body, but the request's `Content-Type` header (at most `server.max_header_bytes`):
/// its other headers (entity, request id of at most 128 bytes, received_at, the
/// refusal's status, code and message of at most 4 KiB, and their names), its key
/// (at most 128 bytes) and librdkafka's framing of a record, with room to spare.
pub const RAW_RECORD_MARGIN_BYTES: usize = 8 * 1024;

/// Words that mark a `kafka.properties` name as holding a secret (`sasl.password`,
/// `ssl.key.pem`, `sasl.oauthbearer.client.secret`), matched in any case: its
/// value is never printed, in errors or in `Debug`.
const SECRET_PROPERTY_WORDS: [&str; 3] = ["password", "secret", "key"];
/// The properties librdkafka redacts itself (`_RK_SENSITIVE`) whose names hold
/// none of [`SECRET_PROPERTY_WORDS`].
const SENSITIVE_PROPERTIES: [&str; 3] = ["sasl.oauthbearer.config", "sasl.username", "ssl.ca.pem"];

/// Whether the `kafka.properties` entry `name` holds a secret.
pub(crate) fn is_secret_property(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_PROPERTY_WORDS.iter().any(|word| name.contains(word))
        || SENSITIVE_PROPERTIES.contains(&name.as_str())
}

/// Why settings cannot be loaded. `key` is the setting to fix.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(transparent)]
    Load(#[from] config::ConfigError),
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

/// The error for a setting `key` whose value is refused, and why.
fn invalid(key: &str, message: &str) -> Result<(), SettingsError> {
    Err(SettingsError::Invalid {
        key: key.into(),
        message: message.into(),
    })
}

impl SettingsError {
    /// `err`, unless it is about a setting holding a secret ([`secret_form`]): then
    /// an error naming the key and the form expected, without the value the
    /// `config` crate and serde would quote. A file that is not TOML keeps the line
    /// and column of the mistake but not the line's text, which may hold a secret.
    fn hiding_secrets(err: config::ConfigError) -> SettingsError {
        use config::ConfigError;
        let type_error = is_type_error(&err);
        let secret = match &err {
            ConfigError::Type {
                key: Some(key),
                origin,
                ..
            }
            | ConfigError::At {
                key: Some(key),
                origin,
                ..
            } => secret_form(key, type_error).map(|form| (key.clone(), form, origin.clone())),
            _ => None,
        };
        if let Some((key, form, origin)) = secret {
            let key = match key.strip_prefix("kafka.properties.") {
                Some(name) => format!("kafka.properties.\"{name}\""),
                None => key,
            };
            let origin = origin.map(|o| format!(" (set in {o})")).unwrap_or_default();
            let message = format!("{form}{origin}; the value is not shown");
            return SettingsError::Invalid { key, message };
        }
        match err {
            ConfigError::FileParse { uri, cause } => {
                let text = cause.to_string();
                let lines = text.lines().filter(|line| !is_source_excerpt(line));
                let cause = lines.collect::<Vec<_>>().join(" ").into();
                SettingsError::Load(ConfigError::FileParse { uri, cause })
            }
            err => SettingsError::Load(err),
        }
    }
}

/// Whether `err` says a value has the wrong type (or an impossible value), the
/// errors that quote it.
fn is_type_error(err: &config::ConfigError) -> bool {
    use config::ConfigError;
    match err {
        ConfigError::Type { .. } => true,
        ConfigError::At { error, .. } => match error.as_ref() {
            ConfigError::Message(message) => message.starts_with("invalid "),
            error => is_type_error(error),
        },
        _ => false,
    }
}

/// Whether `line` of a TOML parse error quotes the file (`12 | key = "..."`, or
/// the `|` and `^` lines around it) rather than saying what is wrong.
fn is_source_excerpt(line: &str) -> bool {
    let rest = line
        .trim_start()
        .trim_start_matches(|c: char| c.is_ascii_digit());
    rest.trim_start().starts_with('|')
}

/// The form expected of a setting holding a secret when a `config` error's `key`
/// is one or lies within one (`webhook.secrets`, `privacy.key`, a
/// `kafka.properties` entry named for a password, secret or key), or is a table
/// holding one and `type_error` (`kafka.properties = "sasl.password=..."`).
fn secret_form(key: &str, type_error: bool) -> Option<String> {
    let within = |base: &str| {
        key.strip_prefix(base)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
    };
    if within("webhook.secrets") {
        return Some(format!(
            "expected a list of strings (secrets = [\"...\"] under [webhook]) or \
             {SECRETS_VAR}=a,b"
        ));
    }
    if within("privacy.key") {
        return Some(format!(
            "expected a string of at least {} bytes, best set with CONNECTOR__PRIVACY__KEY",
            crate::privacy::MIN_KEY_BYTES
        ));
    }
    if let Some(name) = key.strip_prefix("kafka.properties.") {
        return is_secret_property(name)
            .then(|| format!("expected a string (\"{name}\" = \"...\" under [kafka.properties])"));
    }
    match key {
        "kafka.properties" if type_error => Some(
            "expected a table of librdkafka property names and string values \
             ([kafka.properties])"
                .into(),
        ),
        "webhook" | "privacy" | "kafka" if type_error => {
            Some(format!("expected a table ([{key}])"))
        }
        _ => None,
    }
}

/// Everything the connector is configured with.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub server: ServerSettings,
    pub webhook: WebhookSettings,
    pub kafka: KafkaSettings,
    pub routing: RoutingSettings,
    pub privacy: PrivacySettings,
    pub archive: ArchiveSettings,
    pub log: LogSettings,
    pub traces: TracesSettings,
}

/// `[archive]`: what the platform sent, kept raw in Kafka (docs/replay.md).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArchiveSettings {
    /// Where a notification refused for its content (after the signature check)
    /// is written, byte for byte with why, before it is answered; when it cannot
    /// be written the answer is 503. Empty: off.
    pub dead_letter_topic: String,
    /// Where every accepted notification is written, byte for byte, in the same
    /// delivery as its events. Empty: off.
    pub raw_topic: String,
}

impl ArchiveSettings {
    /// The dead-letter topic, when on.
    pub fn dead_letter(&self) -> Option<&str> {
        Some(self.dead_letter_topic.as_str()).filter(|t| !t.is_empty())
    }

    /// The raw topic, when on.
    pub fn raw(&self) -> Option<&str> {
        Some(self.raw_topic.as_str()).filter(|t| !t.is_empty())
    }

    /// Both topics that are on.
    pub fn topics(&self) -> Vec<&str> {
        self.dead_letter().into_iter().chain(self.raw()).collect()
    }

    /// Refuses topics that are not valid names, or one topic for both.
    fn validate(&self) -> Result<(), SettingsError> {
        for (key, topic) in [
            ("archive.dead_letter_topic", self.dead_letter()),
            ("archive.raw_topic", self.raw()),
        ] {
            if let Some(Err(message)) = topic.map(routing_file::validate_topic) {
                return invalid(key, &message);
            }
        }
        if self.dead_letter().is_some() && self.dead_letter() == self.raw() {
            return invalid(
                "archive.raw_topic",
                "is the dead-letter topic too: give each its own topic",
            );
        }
        Ok(())
    }
}

/// `[privacy]`: the pseudonymisation key.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacySettings {
    /// The secret pseudonymised values are keyed with (HMAC-SHA256), at least
    /// [`crate::privacy::MIN_KEY_BYTES`] bytes. Needed only by field rules that pseudonymise.
    /// Prefer `CONNECTOR__PRIVACY__KEY` to a file; never logged.
    pub key: Option<String>,
    /// Key event ids with `key` too: a plain event id is a hash of the change's
    /// values, so whoever sees it can test guesses of values a topic's rules
    /// remove or pseudonymise. Changes every id (consumers deduplicating across
    /// the switch see the same changes under new ids). Needs `key`.
    pub keyed_event_ids: bool,
}

/// Never prints the key itself.
impl std::fmt::Debug for PrivacySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let key = self.key.as_ref().map(|_| "<set>");
        f.debug_struct("PrivacySettings")
            .field("key", &key)
            .finish()
    }
}

impl PrivacySettings {
    /// Refuses a key too short, and keyed event ids without a key.
    fn validate(&self) -> Result<(), SettingsError> {
        if let Some(Err(short)) = self.key.as_deref().map(Key::new) {
            return invalid("privacy.key", &short.to_string());
        }
        if self.keyed_event_ids && self.key.is_none() {
            return invalid(
                "privacy.keyed_event_ids",
                "needs privacy.key (CONNECTOR__PRIVACY__KEY): the secret event ids are keyed with",
            );
        }
        Ok(())
    }
}

/// `[server]`: the HTTP side.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Address and port the HTTP server listens on.
    pub listen: SocketAddr,
    /// Largest accepted request body; larger ones are answered 413.
    pub max_body_bytes: usize,
    /// Webhook requests processed at once (after their body arrived); beyond this
    /// they are answered 503 at once.
    pub max_in_flight: usize,
    /// Webhook requests whose bodies are still arriving; beyond this, 503 at once.
    /// Counted apart from `max_in_flight`, so slow senders cannot take the slots of
    /// requests ready to be processed.
    pub max_receiving: usize,
    /// Bytes of request bodies and of produced records held at once, from the first
    /// body byte until Kafka answered for the last record (also for requests whose
    /// sender went away); beyond this, 503 at once. A quarter of it is for bodies
    /// still arriving, the rest for requests being processed, so slow senders
    /// cannot take the bytes of ready requests. librdkafka's queue is bounded by it.
    pub max_in_flight_bytes: usize,
    /// Largest request head (request line and headers); larger ones get 431.
    pub max_header_bytes: usize,
    /// Connections open at once; further ones wait in the listen backlog.
    pub max_connections: usize,
    /// A request body must arrive within this; a slower client gets 408 and its slot back.
    pub request_read_timeout_ms: u64,
    /// On SIGTERM: how long `/readyz` answers 503 while requests are still accepted
    /// and answered, so load balancers take the replica out before it stops
    /// accepting. A second SIGTERM, or SIGINT, skips it.
    pub drain_delay_ms: u64,
    /// How long a shutdown waits for in-flight requests and the producer flush.
    pub shutdown_grace_ms: u64,
}

/// The longest drain delay: a replica kept serving past this is stuck, not draining.
const MAX_DRAIN_DELAY_MS: u64 = 300_000;

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 262_144,
            max_in_flight: 1024,
            max_receiving: 1024,
            max_in_flight_bytes: 128 * 1024 * 1024,
            max_header_bytes: 16 * 1024,
            max_connections: 4096,
            request_read_timeout_ms: 10_000,
            drain_delay_ms: 5_000,
            shutdown_grace_ms: 10_000,
        }
    }
}

impl ServerSettings {
    /// The share of `max_in_flight_bytes` for bodies still arriving.
    pub(crate) fn receiving_bytes(&self) -> usize {
        self.max_in_flight_bytes / 4
    }

    /// The share of `max_in_flight_bytes` for requests being processed: their
    /// bodies and their records until Kafka answered.
    pub(crate) fn processing_bytes(&self) -> usize {
        self.max_in_flight_bytes - self.receiving_bytes()
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }

    pub fn drain_delay(&self) -> Duration {
        Duration::from_millis(self.drain_delay_ms)
    }

    pub(crate) fn request_read_timeout(&self) -> Duration {
        Duration::from_millis(self.request_read_timeout_ms)
    }

    /// Refuses limits of zero, and byte limits too small for a request.
    fn validate(&self) -> Result<(), SettingsError> {
        if self.max_body_bytes == 0 {
            return invalid("server.max_body_bytes", "must be at least 1");
        }
        if self.max_in_flight == 0 {
            return invalid("server.max_in_flight", "must be at least 1");
        }
        if self.max_receiving == 0 {
            return invalid("server.max_receiving", "must be at least 1");
        }
        if self.max_in_flight_bytes < self.max_body_bytes.saturating_mul(4)
            || self.max_in_flight_bytes > MAX_IN_FLIGHT_BYTES
        {
            return invalid(
                "server.max_in_flight_bytes",
                &format!(
                    "must be at least 4 x server.max_body_bytes (a quarter of it receives bodies) \
                     and at most {MAX_IN_FLIGHT_BYTES} (512 GiB)"
                ),
            );
        }
        if self.max_header_bytes < 1024 {
            return invalid("server.max_header_bytes", "must be at least 1024");
        }
        if self.max_connections == 0 {
            return invalid("server.max_connections", "must be at least 1");
        }
        if self.request_read_timeout_ms == 0 {
            return invalid("server.request_read_timeout_ms", "must be at least 1");
        }
        if self.drain_delay_ms > MAX_DRAIN_DELAY_MS {
            return invalid(
                "server.drain_delay_ms",
                &format!("must be at most {MAX_DRAIN_DELAY_MS} (5 minutes)"),
            );
        }
        Ok(())
    }
}

/// `[webhook]`: what the platform's requests must carry.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookSettings {
    /// HMAC-SHA1 secrets, any of which may sign. Empty: `run` refuses to start
    /// unless `allow_unsigned` is true.
    pub secrets: Vec<String>,
    /// Serve without secrets, accepting unsigned requests from anyone (local runs and
    /// tests). Has no effect when secrets are set: then every request must be signed.
    pub allow_unsigned: bool,
    /// Most changes one notification may carry; more are refused with 413. Every
    /// change becomes an event carrying the whole entity, so this bounds the
    /// work and memory one request can cause.
    pub max_changes: usize,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            secrets: Vec::new(),
            allow_unsigned: false,
            max_changes: 100,
        }
    }
}

/// Never prints the secrets themselves.
impl std::fmt::Debug for WebhookSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSettings")
            .field("secrets", &format!("<{} secrets>", self.secrets.len()))
            .field("allow_unsigned", &self.allow_unsigned)
            .field("max_changes", &self.max_changes)
            .finish()
    }
}

impl WebhookSettings {
    /// Refuses a limit of zero changes, and empty secrets.
    fn validate(&self) -> Result<(), SettingsError> {
        if self.max_changes == 0 {
            return invalid("webhook.max_changes", "must be at least 1");
        }
        if self.secrets.iter().any(String::is_empty) {
            return invalid("webhook.secrets", "an empty secret is not allowed");
        }
        Ok(())
    }
}

/// `[kafka]`: the producer.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSettings {
    /// Comma-separated `host:port` list of brokers.
    pub bootstrap_servers: String,
    /// How long to wait for Kafka to acknowledge every event of a request; then 503.
    pub delivery_timeout_ms: u64,
    /// Passed to librdkafka as they are (SASL, TLS, compression, batching, ...),
    /// but the connector's own (`RESERVED_PROPERTIES`). `message.max.bytes` also bounds
    /// `server.max_body_bytes` when an archive topic is on.
    pub properties: BTreeMap<String, String>,
    /// The CloudEvents `source` of every record (header `ce_source`): a URI
    /// reference naming where the events come from.
    pub cloudevents_source: String,
}

/// Whether `text` is a non-empty URI reference (RFC 3986's characters, `%` only
/// as an escape) of at most [`MAX_CLOUDEVENTS_SOURCE_BYTES`].
fn is_uri_reference(text: &str) -> bool {
    let bytes = text.as_bytes();
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b"-._~:/?#[]@!$&'()*+,;=".contains(&b);
    !bytes.is_empty()
        && bytes.len() <= MAX_CLOUDEVENTS_SOURCE_BYTES
        && bytes.iter().enumerate().all(|(i, &b)| {
            allowed(b)
                || (b == b'%'
                    && bytes.len() > i + 2
                    && bytes[i + 1].is_ascii_hexdigit()
                    && bytes[i + 2].is_ascii_hexdigit())
        })
}

/// Longest `kafka.cloudevents_source`: it is counted within each record's fixed
/// header bytes.
pub const MAX_CLOUDEVENTS_SOURCE_BYTES: usize = 256;

impl Default for KafkaSettings {
    fn default() -> Self {
        KafkaSettings {
            bootstrap_servers: "127.0.0.1:9092".into(),
            delivery_timeout_ms: 10_000,
            properties: BTreeMap::new(),
            cloudevents_source: "urn:webhook-connector:reservation-platform".into(),
        }
    }
}

/// Never prints the values of properties holding secrets (`is_secret_property`).
impl std::fmt::Debug for KafkaSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let properties: BTreeMap<&str, &str> = (self.properties.iter())
            .map(|(name, value)| match is_secret_property(name) {
                true => (name.as_str(), "<set>"),
                false => (name.as_str(), value.as_str()),
            })
            .collect();
        f.debug_struct("KafkaSettings")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("delivery_timeout_ms", &self.delivery_timeout_ms)
            .field("properties", &properties)
            .field("cloudevents_source", &self.cloudevents_source)
            .finish()
    }
}

impl KafkaSettings {
    pub(crate) fn delivery_timeout(&self) -> Duration {
        Duration::from_millis(self.delivery_timeout_ms)
    }

    /// The largest record the producer sends, as librdkafka counts it:
    /// `kafka.properties."message.max.bytes"`, else librdkafka's default
    /// ([`DEFAULT_MESSAGE_MAX_BYTES`]). Checked at load.
    pub fn max_message_bytes(&self) -> usize {
        (self.properties.get(MESSAGE_MAX_BYTES))
            .and_then(|value| parse_message_max_bytes(value))
            .unwrap_or(DEFAULT_MESSAGE_MAX_BYTES)
    }

    /// Refuses no brokers, a delivery timeout outside 1 ms to an hour, a
    /// source that is not a URI reference, and properties [`check_properties`]
    /// refuses.
    ///
    /// [`check_properties`]: Self::check_properties
    fn validate(&self) -> Result<(), SettingsError> {
        if self.bootstrap_servers.trim().is_empty() {
            return invalid(
                "kafka.bootstrap_servers",
                "must list at least one host:port",
            );
        }
        if !(1..=3_600_000).contains(&self.delivery_timeout_ms) {
            return invalid(
                "kafka.delivery_timeout_ms",
                "must be between 1 and 3600000 (one hour)",
            );
        }
        if !is_uri_reference(&self.cloudevents_source) {
            return invalid(
                "kafka.cloudevents_source",
                "must be a URI reference of 1 to 256 bytes: ASCII letters, digits, \
                 -._~:/?#[]@!$&'()*+,;= and %XX escapes \
                 (e.g. urn:webhook-connector:reservation-platform)",
            );
        }
        self.check_properties()
    }

    /// Refuses properties the connector sets itself, in any spelling, and a
    /// `message.max.bytes` librdkafka would refuse.
    fn check_properties(&self) -> Result<(), SettingsError> {
        for (spelling, property, instead) in RESERVED_PROPERTIES {
            if self.properties.contains_key(spelling) {
                let reads = match spelling == property {
                    true => String::new(),
                    false => format!(" (librdkafka reads it as {property})"),
                };
                return Err(SettingsError::Invalid {
                    key: format!("kafka.properties.\"{spelling}\""),
                    message: format!("is set by the connector{reads}: {instead}"),
                });
            }
        }
        let max = self.properties.get(MESSAGE_MAX_BYTES);
        if max.is_some_and(|value| parse_message_max_bytes(value).is_none()) {
            return Err(SettingsError::Invalid {
                key: format!("kafka.properties.\"{MESSAGE_MAX_BYTES}\""),
                message: format!(
                    "must be a whole number of bytes from {} to {} (librdkafka's range; \
                     its default is {DEFAULT_MESSAGE_MAX_BYTES})",
                    MESSAGE_MAX_BYTES_RANGE.start(),
                    MESSAGE_MAX_BYTES_RANGE.end()
                ),
            });
        }
        Ok(())
    }
}

/// `value` as a `message.max.bytes` librdkafka accepts: decimal digits within
/// [`MESSAGE_MAX_BYTES_RANGE`], without a leading `0` (librdkafka would read
/// `0100000` as octal, and `0x` as hexadecimal: refused rather than read otherwise).
fn parse_message_max_bytes(value: &str) -> Option<usize> {
    let value = value.trim();
    if value.starts_with('0') || value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    (value.parse().ok()).filter(|bytes| MESSAGE_MAX_BYTES_RANGE.contains(bytes))
}

/// `[routing]`: where the routing file is and how often to look for changes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingSettings {
    /// Path of the routing file; a relative path is resolved against the working directory.
    pub file: PathBuf,
    /// How often to check the file for changes and reload it; 0 = only on SIGHUP.
    pub watch_interval_ms: u64,
}

impl Default for RoutingSettings {
    fn default() -> Self {
        RoutingSettings {
            file: PathBuf::from("config/routes.toml"),
            watch_interval_ms: 1000,
        }
    }
}

impl RoutingSettings {
    pub(crate) fn watch_interval(&self) -> Duration {
        Duration::from_millis(self.watch_interval_ms)
    }
}

/// `[log]`: what is logged and how.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// A `tracing` filter: `info`, `debug`, `webhook_connector=debug,rdkafka=warn`, ...
    pub level: String,
    /// `pretty` for people, `json` for log collectors.
    pub format: LogFormat,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            level: "info".into(),
            format: LogFormat::Pretty,
        }
    }
}

impl LogSettings {
    /// Refuses a level that is not a `tracing` filter.
    fn validate(&self) -> Result<(), SettingsError> {
        if tracing_subscriber::EnvFilter::try_new(&self.level).is_err() {
            return invalid(
                "log.level",
                "not a log filter: use error, warn, info, debug, trace or target=level pairs",
            );
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

impl Settings {
    /// The pseudonymisation key (`privacy.key`), when set; its length was checked
    /// at load.
    pub fn privacy_key(&self) -> Option<std::sync::Arc<Key>> {
        let key = self.privacy.key.as_deref()?;
        let key = Key::new(key).expect("checked at load");
        Some(std::sync::Arc::new(
            key.keying_event_ids(self.privacy.keyed_event_ids),
        ))
    }

    /// The most bytes a raw copy of a body (a dead-letter or raw topic record)
    /// takes as Kafka counts it: the largest body, the largest `Content-Type` (at
    /// most `server.max_header_bytes`, three times over: each byte outside ASCII
    /// is kept as U+FFFD, three bytes in UTF-8) and [`RAW_RECORD_MARGIN_BYTES`].
    pub fn max_raw_record_bytes(&self) -> usize {
        (self.server.max_body_bytes)
            .saturating_add(self.server.max_header_bytes.saturating_mul(3))
            .saturating_add(RAW_RECORD_MARGIN_BYTES)
    }

    /// Refuses `[archive]` topics that the routing `table` uses too: each topic
    /// holds one kind of record.
    pub fn check_archive_topics(
        &self,
        table: &crate::routing::RoutingTable,
    ) -> Result<(), SettingsError> {
        let named = table.named_topics();
        for (key, topic) in [
            ("archive.dead_letter_topic", self.archive.dead_letter()),
            ("archive.raw_topic", self.archive.raw()),
        ] {
            if let Some(topic) = topic.filter(|t| named.contains(t)) {
                return Err(SettingsError::Invalid {
                    key: key.into(),
                    message: format!(
                        "{topic:?} is a topic of the routing file too: raw notifications need a topic of their own"
                    ),
                });
            }
        }
        Ok(())
    }

    /// Refuses to serve an open endpoint by accident: without secrets, serving
    /// needs `webhook.allow_unsigned = true`. `run` and `check` call this.
    pub fn check_serving(&self) -> Result<(), SettingsError> {
        if self.webhook.secrets.is_empty() && !self.webhook.allow_unsigned {
            return Err(SettingsError::Invalid {
                key: "webhook.secrets".into(),
                message: "is empty, so anyone could post events. Set the secret shared with \
                          the platform (CONNECTOR__WEBHOOK__SECRETS=secret, or secrets = [\"...\"] \
                          under [webhook]), or set webhook.allow_unsigned = true \
                          (CONNECTOR__WEBHOOK__ALLOW_UNSIGNED=true) to accept unsigned requests"
                    .into(),
            });
        }
        Ok(())
    }

    /// Loads `file` (required when given; built-in defaults when `None`), then the
    /// environment overrides, then validates.
    pub fn load(file: Option<&Path>) -> Result<Settings, SettingsError> {
        Self::load_with_env(file, std::env::vars().collect())
    }

    /// [`load`](Self::load) for a dry run (`explain`) where no `privacy.key` is
    /// set, in the file or the environment (a fresh checkout): what is keyed with
    /// it (keyed event ids, pseudonymised values) is keyed with
    /// [`PLACEHOLDER_PRIVACY_KEY`] instead. `true`: the placeholder is in use.
    pub fn load_for_dry_run(file: Option<&Path>) -> Result<(Settings, bool), SettingsError> {
        let mut vars: HashMap<String, String> = std::env::vars().collect();
        let mut settings = match Self::load_with_env(file, vars.clone()) {
            // Refused only for want of a key: load again with the placeholder.
            Err(SettingsError::Invalid { key, .. }) if key == "privacy.keyed_event_ids" => {
                vars.insert(PRIVACY_KEY_VAR.into(), PLACEHOLDER_PRIVACY_KEY.into());
                return Ok((Self::load_with_env(file, vars)?, true));
            }
            loaded => loaded?,
        };
        let placeholder = settings.privacy.key.is_none();
        (settings.privacy.key).get_or_insert_with(|| PLACEHOLDER_PRIVACY_KEY.into());
        Ok((settings, placeholder))
    }

    fn load_with_env(
        file: Option<&Path>,
        vars: HashMap<String, String>,
    ) -> Result<Settings, SettingsError> {
        let mut builder = config::Config::builder();
        if let Some(file) = file {
            builder = builder.add_source(
                config::File::from(file)
                    .format(config::FileFormat::Toml)
                    .required(true),
            );
        }
        // The secrets list is split here, so that a secret made of digits stays text
        // (the crate's own list parsing would also turn it into a number).
        if let Some(secrets) = vars.get(SECRETS_VAR) {
            let secrets: Vec<String> = secrets.split(',').map(str::to_string).collect();
            builder = builder.set_override("webhook.secrets", secrets)?;
        }
        let env = config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("__")
            .separator("__")
            // Values stay strings; numbers and booleans are converted when the
            // settings are deserialized.
            .try_parsing(false)
            .source(Some(
                vars.into_iter().filter(|(k, _)| k != SECRETS_VAR).collect(),
            ));
        let settings: Settings = (builder.add_source(env).build())
            .and_then(config::Config::try_deserialize)
            .map_err(SettingsError::hiding_secrets)?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks every section, then what sections must agree on; the first
    /// mistake found is the error.
    fn validate(&self) -> Result<(), SettingsError> {
        self.server.validate()?;
        self.kafka.validate()?;
        self.webhook.validate()?;
        self.privacy.validate()?;
        self.archive.validate()?;
        self.check_raw_records_fit()?;
        self.traces.validate()?;
        self.log.validate()
    }

    /// Refuses a `server.max_body_bytes` whose raw copy an archive topic on could
    /// not take: one larger than the producer's `message.max.bytes`.
    fn check_raw_records_fit(&self) -> Result<(), SettingsError> {
        let (raw, max) = (self.max_raw_record_bytes(), self.kafka.max_message_bytes());
        if self.archive.topics().is_empty() || raw <= max {
            return Ok(());
        }
        let room = max.saturating_sub(raw - self.server.max_body_bytes);
        Err(SettingsError::Invalid {
            key: "server.max_body_bytes".into(),
            message: format!(
                "a raw copy of a body for {} could take {raw} bytes (the body, a Content-Type \
                 of up to server.max_header_bytes (three UTF-8 bytes for each byte outside \
                 ASCII), and {RAW_RECORD_MARGIN_BYTES} bytes of \
                 other headers, key and framing), more than the producer sends \
                 (message.max.bytes, {max}). Lower server.max_body_bytes to at most {room} \
                 (or server.max_header_bytes), or raise kafka.properties.\"message.max.bytes\" \
                 and the topic's max.message.bytes on the brokers",
                self.archive.topics().join(" and "),
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The privacy key the shipped file needs (it keys event ids).
    const KEY: (&str, &str) = (
        "CONNECTOR__PRIVACY__KEY",
        "settings-test-key-of-32-bytes-at-least",
    );

    fn env(vars: &[(&str, &str)]) -> HashMap<String, String> {
        vars.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn load_text(text: &str, vars: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("settings.toml");
        std::fs::write(&path, text).unwrap();
        Settings::load_with_env(Some(&path), env(vars))
    }

    #[test]
    fn archive_topics_are_checked() {
        let settings = load_text("[archive]\ndead_letter_topic = \"dead\"\n", &[]).unwrap();
        assert_eq!(settings.archive.dead_letter(), Some("dead"));
        assert_eq!(settings.archive.raw(), None);
        assert_eq!(settings.archive.topics(), ["dead"]);
        assert!(Settings::default().archive.topics().is_empty());
        let err = load_text("[archive]\nraw_topic = \"a b\"\n", &[]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("archive.raw_topic: invalid topic"),
            "{err}"
        );
        let same = "[archive]\nraw_topic = \"t\"\ndead_letter_topic = \"t\"\n";
        let err = load_text(same, &[]).unwrap_err();
        assert!(
            err.to_string().contains("is the dead-letter topic too"),
            "{err}"
        );
        // Not a topic of the routing file.
        let table =
            routing_file::parse("[unmatched]\ntopic = \"dead\"\n", "routes.toml", None).unwrap();
        let err = settings.check_archive_topics(&table).unwrap_err();
        assert!(
            err.to_string().starts_with(
                "archive.dead_letter_topic: \"dead\" is a topic of the routing file too"
            ),
            "{err}"
        );
        let table =
            routing_file::parse("[unmatched]\ntopic = \"u\"\n", "routes.toml", None).unwrap();
        assert!(settings.check_archive_topics(&table).is_ok());
    }

    #[test]
    fn privacy_key_and_keyed_event_ids_are_checked() {
        let settings = load_text("[privacy]\nkeyed_event_ids = true\n", &[KEY]).unwrap();
        assert!(settings.privacy_key().unwrap().keys_event_ids());
        assert!(
            !format!("{settings:?}").contains(KEY.1),
            "the key is never printed"
        );
        let err = load_text("[privacy]\nkeyed_event_ids = true\n", &[]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("privacy.keyed_event_ids: needs privacy.key"),
            "{err}"
        );
        let err = load_text("[privacy]\nkey = \"short\"\n", &[]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("privacy.key: must be at least 32 bytes"),
            "{err}"
        );
        let plain = load_text("", &[KEY]).unwrap();
        assert!(!plain.privacy_key().unwrap().keys_event_ids());
        assert!(load_text("", &[]).unwrap().privacy_key().is_none());
    }

    #[test]
    fn the_shipped_default_file_loads() {
        let settings =
            Settings::load_with_env(Some(Path::new("config/default.toml")), env(&[KEY])).unwrap();
        assert_eq!(settings.server.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(settings.kafka.delivery_timeout_ms, 10_000);
        assert_eq!(settings.routing.file, PathBuf::from("config/routes.toml"));
    }

    #[test]
    fn defaults_apply_without_a_file() {
        let settings = Settings::load_with_env(None, env(&[])).unwrap();
        assert_eq!(settings.server.max_body_bytes, 262_144);
        assert_eq!(settings.server.max_in_flight, 1024);
        assert_eq!(settings.log.format, LogFormat::Pretty);
        assert!(settings.webhook.secrets.is_empty());
    }

    #[test]
    fn environment_overrides_the_file() {
        let settings = load_text(
            "[kafka]\nbootstrap_servers = \"a:1\"\n[kafka.properties]\n\"linger.ms\" = 5\n",
            &[
                ("CONNECTOR__KAFKA__BOOTSTRAP_SERVERS", "b:2,c:3"),
                ("CONNECTOR__SERVER__MAX_BODY_BYTES", "1000"),
                ("CONNECTOR__WEBHOOK__SECRETS", "0123456789,two"),
                ("CONNECTOR__WEBHOOK__MAX_CHANGES", "7"),
                ("CONNECTOR__SERVER__SHUTDOWN_GRACE_MS", "2500"),
                ("CONNECTOR__LOG__FORMAT", "json"),
            ],
        )
        .unwrap();
        assert_eq!(settings.kafka.bootstrap_servers, "b:2,c:3");
        assert_eq!(settings.server.max_body_bytes, 1000);
        assert_eq!(settings.webhook.secrets, ["0123456789", "two"]);
        assert_eq!(settings.webhook.max_changes, 7);
        assert_eq!(settings.server.shutdown_grace_ms, 2500);
        assert_eq!(settings.log.format, LogFormat::Json);
        assert_eq!(settings.kafka.properties["linger.ms"], "5");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = load_text("[server]\nlisten_on = \"127.0.0.1:1\"\n", &[]).unwrap_err();
        assert!(
            err.to_string().contains("unknown field `listen_on`"),
            "{err}"
        );
        let err = load_text("", &[("CONNECTOR__KAFKA__BOOTSTRAP", "x")]).unwrap_err();
        assert!(
            err.to_string().contains("unknown field `bootstrap`"),
            "{err}"
        );
    }

    #[test]
    fn wrong_types_name_the_key() {
        let err = load_text("[server]\nmax_body_bytes = \"big\"\n", &[]).unwrap_err();
        assert!(err.to_string().contains("server.max_body_bytes"), "{err}");
        let err = load_text("[server]\nlisten = \"nowhere\"\n", &[]).unwrap_err();
        assert!(err.to_string().contains("server.listen"), "{err}");
    }

    /// Loading `text` is refused with an error that starts with `key`, the setting to fix.
    fn assert_refused_naming(key: &str, text: &str) {
        let err = load_text(text, &[]).unwrap_err();
        assert!(err.to_string().starts_with(key), "{text}: {err}");
    }

    #[test]
    fn invalid_values_name_the_key() {
        for (key, text) in [
            ("server.max_body_bytes", "[server]\nmax_body_bytes = 0\n"),
            ("server.max_in_flight", "[server]\nmax_in_flight = 0\n"),
            (
                "server.request_read_timeout_ms",
                "[server]\nrequest_read_timeout_ms = 0\n",
            ),
            (
                "kafka.delivery_timeout_ms",
                "[kafka]\ndelivery_timeout_ms = 0\n",
            ),
            (
                "kafka.bootstrap_servers",
                "[kafka]\nbootstrap_servers = \" \"\n",
            ),
            (
                "kafka.properties.\"acks\"",
                "[kafka.properties]\nacks = \"1\"\n",
            ),
            (
                "kafka.properties.\"enable.idempotence\"",
                "[kafka.properties]\n\"enable.idempotence\" = \"false\"\n",
            ),
            ("webhook.secrets", "[webhook]\nsecrets = [\"\"]\n"),
            ("server.max_receiving", "[server]\nmax_receiving = 0\n"),
            (
                "server.drain_delay_ms",
                "[server]\ndrain_delay_ms = 300001\n",
            ),
            (
                "server.max_in_flight_bytes",
                "[server]\nmax_in_flight_bytes = 1000\n",
            ),
            (
                "server.max_header_bytes",
                "[server]\nmax_header_bytes = 1023\n",
            ),
            (
                "kafka.properties.\"queue.buffering.max.kbytes\"",
                "[kafka.properties]\n\"queue.buffering.max.kbytes\" = \"1\"\n",
            ),
            ("log.level", "[log]\nlevel = \"=\"\n"),
        ] {
            assert_refused_naming(key, text);
        }
        let err = load_text("[log]\nformat = \"xml\"\n", &[]).unwrap_err();
        assert!(err.to_string().contains("log.format"), "{err}");
    }

    #[test]
    fn the_cloudevents_source_must_be_a_uri_reference_of_1_to_256_bytes() {
        let too_long = "a".repeat(257);
        for refused in [
            "",
            "a b",
            "caf\u{e9}",
            "a%zz",
            "a%2",
            "a%g1",
            "x%2z",
            &too_long,
        ] {
            let text = format!("[kafka]\ncloudevents_source = \"{refused}\"\n");
            assert_refused_naming("kafka.cloudevents_source", &text);
        }
        for fine in [
            "urn:x:y",
            "https://example.com/a?b=c#d",
            "/a%2Fb",
            "x%2F",
            &"a".repeat(256),
        ] {
            let text = format!("[kafka]\ncloudevents_source = \"{fine}\"\n");
            assert_eq!(
                load_text(&text, &[]).unwrap().kafka.cloudevents_source,
                fine
            );
        }
    }

    #[test]
    fn serving_without_secrets_needs_the_explicit_opt_in() {
        let open = load_text("", &[]).unwrap();
        let err = open.check_serving().unwrap_err().to_string();
        assert!(err.starts_with("webhook.secrets: is empty"), "{err}");
        assert!(err.contains("CONNECTOR__WEBHOOK__SECRETS"), "{err}");
        assert!(err.contains("webhook.allow_unsigned = true"), "{err}");
        let opted_in = load_text("", &[("CONNECTOR__WEBHOOK__ALLOW_UNSIGNED", "true")]).unwrap();
        assert!(opted_in.check_serving().is_ok());
        let signed = load_text("[webhook]\nsecrets = [\"s\"]\n", &[]).unwrap();
        assert!(signed.check_serving().is_ok());
        // The shipped example never opens the endpoint by itself.
        let shipped =
            Settings::load_with_env(Some(Path::new("config/default.toml")), env(&[KEY])).unwrap();
        assert!(shipped.check_serving().is_err());
    }

    #[test]
    fn a_secret_of_the_wrong_type_is_named_with_its_form_but_never_shown() {
        for (text, key, form) in [
            (
                "[webhook]\nsecrets = \"s3cr3t-value\"\n",
                "webhook.secrets",
                "expected a list of strings (secrets = [\"...\"] under [webhook]) or \
                 CONNECTOR__WEBHOOK__SECRETS=a,b",
            ),
            (
                "[webhook]\nsecrets = 1234567890\n",
                "webhook.secrets",
                "expected a list of strings",
            ),
            (
                "[webhook]\nsecrets = [{ s = \"s3cr3t-value\" }]\n",
                "webhook.secrets[0]",
                "expected a list of strings",
            ),
            (
                "[privacy]\nkey = { k = \"s3cr3t-value\" }\n",
                "privacy.key",
                "expected a string of at least 32 bytes, best set with CONNECTOR__PRIVACY__KEY",
            ),
            (
                "[privacy]\nkey = [\"s3cr3t-value\"]\n",
                "privacy.key",
                "expected a string of at least 32 bytes",
            ),
            (
                "[kafka.properties]\n\"sasl.password\" = [\"s3cr3t-value\"]\n",
                "kafka.properties.\"sasl.password\"",
                "expected a string (\"sasl.password\" = \"...\" under [kafka.properties])",
            ),
            (
                "[kafka.properties]\n\"ssl.key.password\" = { p = \"s3cr3t-value\" }\n",
                "kafka.properties.\"ssl.key.password\"",
                "expected a string",
            ),
            (
                "[kafka.properties]\n\"ssl.key.pem\" = [\"s3cr3t-value\"]\n",
                "kafka.properties.\"ssl.key.pem\"",
                "expected a string",
            ),
            (
                "[kafka.properties]\n\"sasl.oauthbearer.client.secret\" = [\"s3cr3t-value\"]\n",
                "kafka.properties.\"sasl.oauthbearer.client.secret\"",
                "expected a string",
            ),
            (
                "[kafka.properties]\n\"SASL.PASSWORD\" = [\"s3cr3t-value\"]\n",
                "kafka.properties.\"SASL.PASSWORD\"",
                "expected a string",
            ),
            (
                "[kafka]\nproperties = \"sasl.password=s3cr3t-value\"\n",
                "kafka.properties",
                "expected a table of librdkafka property names and string values",
            ),
            (
                "webhook = \"s3cr3t-value\"\n",
                "webhook",
                "expected a table ([webhook])",
            ),
        ] {
            let err = load_text(text, &[]).unwrap_err();
            let shown = format!("{err} {err:?}");
            assert!(!shown.contains("s3cr3t-value"), "{text}: {shown}");
            assert!(!shown.contains("1234567890"), "{text}: {shown}");
            assert!(
                err.to_string().starts_with(&format!("{key}: {form}")),
                "{text}: {err}"
            );
            assert!(
                err.to_string().ends_with("; the value is not shown"),
                "{err}"
            );
        }
    }

    #[test]
    fn a_secret_set_in_the_environment_is_never_shown_either() {
        const VALUE: &str = "s3cr3t-value";
        for (var, key) in [
            ("CONNECTOR__PRIVACY__KEY__X", "privacy.key"),
            ("CONNECTOR__WEBHOOK__SECRETS__X", "webhook.secrets"),
            ("CONNECTOR__KAFKA__PROPERTIES", "kafka.properties"),
            ("CONNECTOR__PRIVACY", "privacy"),
        ] {
            let err = load_text("", &[(var, VALUE)]).unwrap_err();
            let shown = format!("{err} {err:?}");
            assert!(!shown.contains(VALUE), "{var}: {shown}");
            assert!(
                shown.contains(&format!("{key}: expected")),
                "{var}: {shown}"
            );
        }
        // Too short is said with its length only.
        let err = load_text("", &[("CONNECTOR__PRIVACY__KEY", VALUE)]).unwrap_err();
        assert!(err
            .to_string()
            .starts_with("privacy.key: must be at least 32 bytes"));
        assert!(!format!("{err} {err:?}").contains(VALUE), "{err}");
        // Settings that hold no secret keep the crate's own message.
        let err = load_text("[kafka.properties]\n\"linger.ms\" = [1]\n", &[]).unwrap_err();
        assert!(
            err.to_string().contains("kafka.properties.linger.ms"),
            "{err}"
        );
        let err = load_text("[webhook]\nsecret = [\"s\"]\n", &[]).unwrap_err();
        assert!(err.to_string().contains("unknown field `secret`"), "{err}");
    }

    #[test]
    fn a_file_that_is_not_toml_gives_the_line_but_not_its_text() {
        let err = load_text("[privacy]\nkey = s3cr3t-value\n", &[]).unwrap_err();
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains("s3cr3t-value"), "{shown}");
        assert!(shown.contains("line 2"), "{shown}");
        assert!(shown.contains("settings.toml"), "{shown}");
    }

    #[test]
    fn debug_never_prints_secrets() {
        let text = "[kafka.properties]\n\"sasl.password\" = \"s3cr3t-sasl\"\n\
                    \"SSL.KEY.PEM\" = \"s3cr3t-pem\"\n\"linger.ms\" = \"3\"\n\
                    \"sasl.username\" = \"s3cr3t-user\"\n";
        let settings =
            load_text(text, &[KEY, ("CONNECTOR__WEBHOOK__SECRETS", "s3cr3t-hmac")]).unwrap();
        let debug = format!("{settings:?}");
        for secret in ["s3cr3t", KEY.1] {
            assert!(!debug.contains(secret), "{debug}");
        }
        assert!(debug.contains("\"sasl.password\": \"<set>\""), "{debug}");
        assert!(debug.contains("\"linger.ms\": \"3\""), "{debug}");
        assert!(debug.contains("<1 secrets>"), "{debug}");
    }

    #[test]
    fn every_spelling_librdkafka_reads_as_a_property_the_connector_sets_is_refused() {
        for (spelling, property, instead) in [
            (
                "bootstrap.servers",
                "metadata.broker.list",
                "set kafka.bootstrap_servers",
            ),
            ("metadata.broker.list", "", "set kafka.bootstrap_servers"),
            (
                "queue.buffering.max.kbytes",
                "",
                "set server.max_in_flight_bytes",
            ),
            (
                "queue.buffering.max.messages",
                "",
                "set server.max_in_flight_bytes",
            ),
            (
                "enable.idempotence",
                "",
                "always produces idempotently; remove it",
            ),
            (
                "request.required.acks",
                "",
                "always waits for acks=all; remove it",
            ),
            ("acks", "request.required.acks", "always waits for acks=all"),
            (
                "topic.acks",
                "request.required.acks",
                "always waits for acks=all",
            ),
            (
                "topic.request.required.acks",
                "request.required.acks",
                "acks=all",
            ),
            ("message.timeout.ms", "", "set kafka.delivery_timeout_ms"),
            (
                "delivery.timeout.ms",
                "message.timeout.ms",
                "set kafka.delivery_timeout_ms",
            ),
            (
                "topic.message.timeout.ms",
                "message.timeout.ms",
                "set kafka.delivery_timeout_ms",
            ),
            (
                "topic.delivery.timeout.ms",
                "message.timeout.ms",
                "set kafka.delivery_timeout_ms",
            ),
        ] {
            let text = format!("[kafka.properties]\n\"{spelling}\" = \"1\"\n");
            let err = load_text(&text, &[]).unwrap_err().to_string();
            let reads = match property {
                "" => String::new(),
                property => format!(" (librdkafka reads it as {property})"),
            };
            let start =
                format!("kafka.properties.\"{spelling}\": is set by the connector{reads}: ");
            assert!(err.starts_with(&start), "{err}");
            assert!(err.contains(instead), "{err}");
            assert!(is_reserved_property(spelling));
        }
        assert_eq!(RESERVED_PROPERTIES.len(), 13);
        // librdkafka matches names exactly: other cases are unknown to it, not these.
        assert!(!is_reserved_property("ACKS"));
        assert!(!is_reserved_property("topic.enable.idempotence"));
    }

    #[test]
    fn message_max_bytes_is_read_from_the_properties_and_checked() {
        let max = |text: &str| load_text(text, &[]).map(|s| s.kafka.max_message_bytes());
        assert_eq!(max("").unwrap(), DEFAULT_MESSAGE_MAX_BYTES);
        assert_eq!(DEFAULT_MESSAGE_MAX_BYTES, 1_000_000);
        for (value, bytes) in [
            ("\"2000000\"", 2_000_000),
            ("2000000", 2_000_000),
            ("\"1000\"", 1000),
            ("1_000_000_000", 1_000_000_000),
            ("\" 5000 \"", 5000),
        ] {
            let text = format!("[kafka.properties]\n\"message.max.bytes\" = {value}\n");
            assert_eq!(max(&text).unwrap(), bytes, "{value}");
        }
        for value in [
            "\"999\"",
            "1000000001",
            "\"\"",
            "\"1e6\"",
            "\"0x1000\"",
            "\"0100000\"",
            "-1000",
            "\"big\"",
        ] {
            let text = format!("[kafka.properties]\n\"message.max.bytes\" = {value}\n");
            let err = max(&text).unwrap_err().to_string();
            assert!(
                err.starts_with(
                    "kafka.properties.\"message.max.bytes\": must be a whole number of bytes \
                     from 1000 to 1000000000"
                ),
                "{value}: {err}"
            );
        }
    }

    #[test]
    fn a_body_whose_raw_copy_kafka_could_not_take_is_refused_when_archived() {
        // 1 MB less the Content-Type and the margin: the largest body that fits.
        let fits = 1_000_000 - 3 * 16_384 - RAW_RECORD_MARGIN_BYTES;
        let server = |body: usize| {
            format!("[server]\nmax_body_bytes = {body}\nmax_in_flight_bytes = 134217728\n")
        };
        for archive in ["dead_letter_topic", "raw_topic"] {
            let archived = |body| format!("{}[archive]\n{archive} = \"kept\"\n", server(body));
            let settings = load_text(&archived(fits), &[]).unwrap();
            assert_eq!(settings.max_raw_record_bytes(), 1_000_000);
            let err = load_text(&archived(fits + 1), &[]).unwrap_err().to_string();
            assert!(
                err.starts_with(
                    "server.max_body_bytes: a raw copy of a body for kept could take 1000001 bytes"
                ),
                "{err}"
            );
            assert!(err.contains(&format!("at most {fits}")), "{err}");
            assert!(
                err.contains("kafka.properties.\"message.max.bytes\""),
                "{err}"
            );
            assert!(err.contains("max.message.bytes on the brokers"), "{err}");
            // A larger message.max.bytes lets it through.
            let raised = format!(
                "{}[kafka.properties]\n\"message.max.bytes\" = \"2000000\"\n",
                archived(fits + 1)
            );
            assert!(load_text(&raised, &[]).is_ok());
        }
        // Without an archive topic no raw copy is written.
        assert!(load_text(&server(fits + 1), &[]).is_ok());
        // The shipped file keeps dead letters and loads.
        let shipped =
            Settings::load_with_env(Some(Path::new("config/default.toml")), env(&[KEY])).unwrap();
        assert!(shipped.archive.dead_letter().is_some());
        assert!(shipped.max_raw_record_bytes() <= shipped.kafka.max_message_bytes());
    }

    #[test]
    fn a_missing_file_is_an_error() {
        let err = Settings::load_with_env(Some(Path::new("/nonexistent/x.toml")), env(&[]));
        assert!(err.is_err());
    }
}
