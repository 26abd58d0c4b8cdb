//! The commands: their arguments, which module runs each (one per command), and
//! what they share: loading the settings and the routing file, printing, the runtime.

mod asyncapi;
mod check;
mod create_topics;
mod exit;
mod explain;
mod forget;
mod replay;
mod run;
mod schema;

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};
use rdkafka::producer::BaseProducer;
use webhook_connector::config::routing_file::{self, RoutingFile};
use webhook_connector::config::traces::Export;
use webhook_connector::config::Settings;
use webhook_connector::entity::{self, Entity};
use webhook_connector::{sink, telemetry};

pub(crate) use exit::Failure;

#[derive(Parser)]
#[command(
    version,
    about = "Receives the reservation platform's change webhooks (customers, bookings) and produces one flat event per change to the Kafka topics of a routing file.",
    after_help = "Settings can be overridden with environment variables CONNECTOR__SECTION__KEY,\n\
                  e.g. CONNECTOR__KAFKA__BOOTSTRAP_SERVERS=broker:9092."
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct ConfigArg {
    /// Settings file (TOML). Without it, config/default.toml is used when it exists,
    /// built-in defaults otherwise.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

/// The commands; each one's options are in its module.
#[derive(Subcommand)]
enum Command {
    /// Serve the webhook endpoints (POST /webhooks/customer, /webhooks/booking)
    /// until SIGINT or SIGTERM.
    Run(ConfigArg),
    /// Validate the settings and the routing file, then print the route table.
    Check(check::Args),
    /// Print the flat events of a webhook body and the topics each goes to; needs no Kafka.
    Explain(explain::Args),
    /// Print the JSON Schema (draft 2020-12) of an entity's flat event; the same as
    /// schema/<entity>-event.v1.json.
    Schema(schema::Args),
    /// Print the AsyncAPI 3.0 document (JSON) of the topics the routing file feeds:
    /// servers, one channel per topic with its routes, the event, key and headers.
    Asyncapi(ConfigArg),
    /// Erase an entity on request: write a tombstone for its id to its state topic
    /// (when it has one) and an erasure event to the routing file's [erasure]
    /// topic, so consumers can erase it too.
    Forget(forget::Args),
    /// Run raw notifications from the raw topic or the dead-letter topic through
    /// the current acceptance step and routing again, producing the records (with
    /// the same event ids) a live request would have produced. Exit 0: every
    /// notification read was replayed (or skipped by --since/--until); 65: some
    /// were refused again (they stay where they are); 69: Kafka did not
    /// acknowledge everything (run it again: the ids are the same).
    Replay(replay::Args),
    /// Create every topic the routing file and [archive] name that does not exist
    /// yet: routed, unmatched, state (compacted: cleanup.policy=compact), erasure,
    /// dead-letter and raw topics.
    CreateTopics(create_topics::Args),
}

impl Cli {
    /// Runs the command the arguments name.
    pub(crate) fn run(self) -> Result<(), Failure> {
        match self.command {
            Command::Run(config) => run::run(&config),
            Command::Check(args) => check::run(&args),
            Command::Explain(args) => explain::run(&args),
            Command::Schema(args) => schema::run(&args),
            Command::Asyncapi(config) => asyncapi::run(&config),
            Command::Forget(args) => forget::run(&args),
            Command::Replay(args) => replay::run(args),
            Command::CreateTopics(args) => create_topics::run(&args),
        }
    }
}

/// `--since TIME`: RFC 3339.
fn parse_time(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| format!("not an RFC 3339 time ({e}), e.g. 2026-11-29T10:00:00Z"))
}

/// `--entity NAME`.
fn parse_entity(name: &str) -> Result<&'static Entity, String> {
    entity::by_name(name).ok_or_else(|| format!("unknown entity; use {}", entity::names()))
}

/// The async runtime of a command that talks to Kafka or serves.
fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    Ok(tokio::runtime::Runtime::new()?)
}

/// Prints `value` as indented JSON.
fn print_json(value: &impl serde::Serialize) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(value)?;
    out(&format!("{text}\n"))
}

/// Writes `text` to standard output; a reader that has gone (`| head`) ends the
/// output quietly instead of a panic.
fn out(text: &str) -> Result<(), Failure> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// The settings file in effect: `--config`, else `config/default.toml` if present.
fn settings_file(arg: &ConfigArg) -> Option<PathBuf> {
    let default = Path::new("config/default.toml");
    arg.config
        .clone()
        .or_else(|| default.exists().then(|| default.to_path_buf()))
}

/// The settings file in effect, or "built-in defaults", as the user reads it.
fn describe_source(arg: &ConfigArg) -> String {
    settings_file(arg).map_or_else(
        || "built-in defaults".to_string(),
        |p| p.display().to_string(),
    )
}

/// Loads the settings and the routing file they name: the one place both are
/// read at start-up.
fn load(arg: &ConfigArg) -> Result<(Settings, RoutingFile), Failure> {
    let file = settings_file(arg);
    let settings = Settings::load(file.as_deref()).map_err(|cause| Failure::Settings {
        origin: describe_source(arg),
        cause,
    })?;
    load_routing_file(settings)
}

/// Installs logging and, when `[traces]` or the `OTEL_*` variables name an OTLP
/// endpoint, trace export; the exporter to shut down before exiting, if any.
fn init_telemetry(settings: &Settings) -> Result<Option<telemetry::traces::Exporter>, Failure> {
    let export = trace_export(settings)?;
    telemetry::init(&settings.log, export.as_ref()).map_err(Failure::Traces)
}

/// Where spans are exported, from `[traces]` and the `OTEL_*` variables; `None`: off.
fn trace_export(settings: &Settings) -> Result<Option<Export>, Failure> {
    (settings.traces)
        .export(|name| std::env::var(name).ok())
        .map_err(|err| Failure::Traces(err.to_string()))
}

/// [`load`] for `explain`: without a privacy key set, a placeholder keys what
/// the key would (said on stderr), so a fresh checkout can try it.
fn load_for_dry_run(arg: &ConfigArg) -> Result<(Settings, RoutingFile), Failure> {
    let file = settings_file(arg);
    let (settings, placeholder) =
        Settings::load_for_dry_run(file.as_deref()).map_err(|cause| Failure::Settings {
            origin: describe_source(arg),
            cause,
        })?;
    if placeholder {
        eprintln!(
            "note: privacy.key is not set (CONNECTOR__PRIVACY__KEY): keyed event ids and \
             pseudonymised values below are keyed with a public placeholder key, so they \
             differ from those a deployment keyed with its own privacy.key writes (the \
             same body there gives other, but equally stable, ids); unkeyed event ids \
             are the same"
        );
    }
    load_routing_file(settings)
}

/// The routing file of `settings`, and the checks `load` makes across both.
fn load_routing_file(settings: Settings) -> Result<(Settings, RoutingFile), Failure> {
    let routing_file = routing_file::load(&settings.routing.file, settings.privacy_key().as_ref())
        .map_err(Failure::RoutingFile)?;
    settings
        .check_archive_topics(&routing_file.table)
        .map_err(Failure::SettingsForRoutes)?;
    // librdkafka validates its properties when a client is created; do it here so
    // `check` refuses what `run` would (e.g. an alias of acks set to 1).
    sink::producer_config(&settings.kafka, settings.server.max_in_flight_bytes)
        .create::<BaseProducer>()
        .map_err(|error| Failure::KafkaProperties(sink::without_values(&error)))?;
    Ok((settings, routing_file))
}
