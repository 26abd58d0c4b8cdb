//! The `webhook-connector` command: parse arguments, load settings, run a command,
//! turn the outcome into an exit code (64: configuration, 65: bad input file,
//! 69: Kafka unavailable, 1: anything else).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing::{info, warn};

use rdkafka::producer::BaseProducer;
use webhook_connector::config::routing_file::{self, RoutingFile};
use webhook_connector::config::Settings;
use webhook_connector::entity::{self, Entity};
use webhook_connector::routing::RoutingTable;
use webhook_connector::sink;
use webhook_connector::sink::admin::{self, TopicOutcome};
use webhook_connector::{app, contract, explain, forget, reload, replay, telemetry};

/// mimalloc instead of the system allocator: the request path allocates many small
/// short-lived objects across threads, where glibc malloc spent a fifth of the CPU
/// (see bench/HISTORY.md, "Earlier changes").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const EXIT_CONFIG: u8 = 64;
const EXIT_DATA: u8 = 65;
const EXIT_UNAVAILABLE: u8 = 69;

/// How long past the grace period shutdown may take before the process exits anyway.
const SHUTDOWN_LEFTOVER: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Parser)]
#[command(
    version,
    about = "Receives the reservation platform's change webhooks (customers, bookings) and produces one flat event per change to the Kafka topics of a routing file.",
    after_help = "Settings can be overridden with environment variables CONNECTOR__SECTION__KEY,\n\
                  e.g. CONNECTOR__KAFKA__BOOTSTRAP_SERVERS=broker:9092."
)]
struct Cli {
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

#[derive(Subcommand)]
enum Command {
    /// Serve the webhook endpoints (POST /webhooks/customer, /webhooks/booking)
    /// until SIGINT or SIGTERM.
    Run(ConfigArg),
    /// Validate the settings and the routing file, then print the route table.
    Check {
        #[command(flatten)]
        config: ConfigArg,
        /// Also connect to Kafka and verify that every routed topic exists.
        #[arg(long)]
        kafka: bool,
    },
    /// Print the flat events of a webhook body and the topics each goes to; needs no Kafka.
    Explain {
        #[command(flatten)]
        config: ConfigArg,
        /// A webhook body (JSON) as the platform would POST it.
        body: PathBuf,
        /// The webhook it is for (customer, booking); detected from the body's
        /// `Customer` or `Booking` key when not given.
        #[arg(long, value_name = "NAME", value_parser = parse_entity)]
        entity: Option<&'static Entity>,
    },
    /// Print the JSON Schema (draft 2020-12) of an entity's flat event; the same as
    /// schema/<entity>-event.v1.json.
    Schema {
        /// The entity (customer, booking).
        #[arg(long, value_name = "NAME", value_parser = parse_entity, default_value = "customer")]
        entity: &'static Entity,
    },
    /// Print the AsyncAPI 3.0 document (JSON) of the topics the routing file feeds:
    /// servers, one channel per topic with its routes, the event, key and headers.
    Asyncapi(ConfigArg),
    /// Erase an entity on request: write a tombstone for its id to its state topic
    /// (when it has one) and an erasure event to the routing file's [erasure]
    /// topic, so consumers can erase it too.
    Forget {
        #[command(flatten)]
        config: ConfigArg,
        /// The entity (customer, booking).
        #[arg(long, value_name = "NAME", value_parser = parse_entity)]
        entity: &'static Entity,
        /// The entity's id (Customer.Id, Booking.Id).
        #[arg(long, value_name = "ID", allow_negative_numbers = true)]
        id: i64,
    },
    /// Run raw notifications from the raw archive or the dead-letter topic through
    /// the current acceptance step and routing again, producing the records (with
    /// the same event ids) a live request would have produced. Exit 0: every
    /// notification read was replayed (or skipped by --since/--until); 65: some
    /// were refused again (they stay where they are); 69: Kafka did not
    /// acknowledge everything (run it again: the ids are the same).
    Replay {
        #[command(flatten)]
        config: ConfigArg,
        /// The topic to read: archive.raw_topic or archive.dead_letter_topic.
        #[arg(long, value_name = "TOPIC")]
        from: String,
        /// Only notifications received at or after this time (RFC 3339).
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// Only notifications received before this time (RFC 3339).
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        until: Option<chrono::DateTime<chrono::Utc>>,
        /// Write only to this topic (repeat for several): to fill a new route's
        /// topic without writing the others again.
        #[arg(long = "only-topic", value_name = "TOPIC")]
        only_topics: Vec<String>,
        /// Print what would be written, one line per record, and write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Create every topic the routing file and [archive] name that does not exist
    /// yet: routed, unmatched, state (compacted: cleanup.policy=compact), erasure,
    /// dead-letter and raw archive topics.
    CreateTopics {
        #[command(flatten)]
        config: ConfigArg,
        /// Partitions of each new topic.
        #[arg(long, default_value_t = 3)]
        partitions: i32,
        /// Replication factor of each new topic.
        #[arg(long, default_value_t = 1)]
        replication_factor: i32,
    },
}

/// An error with the exit code it maps to.
struct Failure(u8, anyhow::Error);

fn config_failure(error: impl Into<anyhow::Error>) -> Failure {
    Failure(EXIT_CONFIG, error.into())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(code, error)) => {
            eprintln!("error: {error:#}");
            ExitCode::from(code)
        }
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Run(arg) => {
            let (settings, routes) = load(&arg)?;
            telemetry::init(&settings.log);
            reload::log_warnings(&routes.table);
            let runtime = tokio::runtime::Runtime::new().map_err(|e| Failure(1, e.into()))?;
            let result = runtime.block_on(serve(settings, routes));
            // Work still running (a readiness probe, an acknowledgement wait) may not
            // hold the process past its grace period.
            runtime.shutdown_timeout(SHUTDOWN_LEFTOVER);
            result
        }
        Command::Check { config, kafka } => {
            let (settings, RoutingFile { table, .. }) = load(&config)?;
            settings
                .check_serving()
                .context("`run` would refuse these settings")
                .map_err(config_failure)?;
            let source = describe_source(&config);
            let file = settings.routing.file.display();
            let kafka_servers = &settings.kafka.bootstrap_servers;
            let routes = explain::route_table(&table);
            let archive = |topic: Option<&str>| topic.unwrap_or("off").to_string();
            let dead_letter = archive(settings.archive.dead_letter());
            let raw = archive(settings.archive.raw());
            out(&format!(
                "settings: {source}\nrouting file: {file}\nkafka: {kafka_servers}\n\
                 dead-letter topic: {dead_letter}\nraw archive topic: {raw}\n\n{routes}"
            ))?;
            if kafka {
                check_topics(&settings, &table)?;
            }
            Ok(())
        }
        Command::Explain {
            config,
            body,
            entity,
        } => {
            let (settings, RoutingFile { table, .. }) = load_for_dry_run(&config)?;
            let bytes = std::fs::read(&body)
                .with_context(|| format!("cannot read {}", body.display()))
                .map_err(|e| Failure(EXIT_DATA, e))?;
            let events =
                explain::explain_as_run(&bytes, entity, &settings, &table, chrono::Utc::now())
                    .map_err(|e| Failure(EXIT_DATA, anyhow::anyhow!("{}: {e}", body.display())))?;
            print_json(&events)
        }
        Command::Schema { entity } => print_json(&contract::schema::flat_event(entity)),
        Command::Asyncapi(config) => {
            let (settings, RoutingFile { table, .. }) = load(&config)?;
            let document = contract::asyncapi::document_with_archive(
                &settings.kafka,
                &settings.archive,
                &table,
            );
            print_json(&document)
        }
        Command::CreateTopics {
            config,
            partitions,
            replication_factor,
        } => {
            let (settings, RoutingFile { table, .. }) = load(&config)?;
            let mut topics: Vec<&str> = table.named_topics().into_iter().collect();
            topics.extend(settings.archive.topics());
            let compacted: Vec<&str> = table.states().iter().map(|s| s.topic.as_str()).collect();
            let runtime = tokio::runtime::Runtime::new().map_err(|e| Failure(1, e.into()))?;
            let outcomes = runtime
                .block_on(admin::create_topics(
                    &settings.kafka,
                    &topics,
                    &compacted,
                    partitions,
                    replication_factor,
                ))
                .map_err(|e| Failure(EXIT_UNAVAILABLE, e.into()))?;
            let lag = admin::STATE_MAX_COMPACTION_LAG_MS;
            for (topic, outcome) in &outcomes {
                let (what, compact) = match outcome {
                    TopicOutcome::Created if compacted.contains(&topic.as_str()) => (
                        "created",
                        format!("  (cleanup.policy=compact, max.compaction.lag.ms={lag})"),
                    ),
                    TopicOutcome::Created => ("created", String::new()),
                    TopicOutcome::AlreadyExisted => ("exists", String::new()),
                };
                out(&format!("{what:<8} {topic}{compact}\n"))?;
            }
            // A state topic that existed already is left as it is: check it.
            let existing: Vec<&str> = (outcomes.iter())
                .filter(|(t, o)| {
                    *o == TopicOutcome::AlreadyExisted && compacted.contains(&t.as_str())
                })
                .map(|(t, _)| t.as_str())
                .collect();
            runtime.block_on(check_compacted(&settings, &existing))
        }
        Command::Replay {
            config,
            from,
            since,
            until,
            only_topics,
            dry_run,
        } => {
            let (settings, RoutingFile { table, .. }) = load(&config)?;
            // A notification accepted now is archived as a live one would be
            // (counted always; not written into the archive it is read from).
            let raw_topic = settings.archive.raw().map(String::from);
            let options = replay::Options {
                from,
                since,
                until,
                only_topics,
                dry_run,
                raw_topic,
            };
            replay_command(&settings, &table, &options)
        }
        Command::Forget { config, entity, id } => {
            let (settings, RoutingFile { table, .. }) = load(&config)?;
            if table.erasure_topic().is_none() {
                return Err(config_failure(forget::ForgetError::NoErasureTopic));
            }
            let runtime = tokio::runtime::Runtime::new().map_err(|e| Failure(1, e.into()))?;
            let now = chrono::Utc::now();
            let done = runtime
                .block_on(forget::forget(&settings, &table, entity, id, now))
                .map_err(|e| Failure(EXIT_UNAVAILABLE, e.into()))?;
            let name = entity.name;
            match &done.state_topic {
                Some(topic) => out(&format!("tombstone  {topic}  key {}\n", done.key))?,
                None => out(&format!("tombstone  (none: {name} has no state topic)\n"))?,
            }
            out(&format!(
                "erasure    {}  key {}  erasure_id {}\n",
                done.erasure_topic, done.key, done.erasure_id
            ))
        }
    }
}

/// `replay`: runs it with a progress bar on a terminal, prints the summary and
/// maps the outcome to the exit code.
fn replay_command(
    settings: &Settings,
    table: &RoutingTable,
    options: &replay::Options,
) -> Result<(), Failure> {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} notifications read")
            .expect("a valid template"),
    );
    let runtime = tokio::runtime::Runtime::new().map_err(|e| Failure(1, e.into()))?;
    let progress = |read: u64, expected: u64| {
        bar.set_length(expected.max(read));
        bar.set_position(read);
    };
    // Printed as they come (a dry run of a long topic holds nothing), above the bar.
    let print = |line: String| {
        bar.suspend(|| {
            let _ = out(&format!("would write  {line}\n"));
        })
    };
    let summary = runtime
        .block_on(replay::replay(settings, table, options, progress, print))
        .map_err(|e| match e {
            replay::ReplayError::UnknownTopic(_) => config_failure(e),
            _ => Failure(EXIT_UNAVAILABLE, e.into()),
        })?;
    bar.finish_and_clear();
    out(&summary.render(options.dry_run))?;
    if summary.failed > 0 {
        return Err(Failure(
            EXIT_UNAVAILABLE,
            anyhow::anyhow!(
                "notifications not all acknowledged by Kafka: {}; run replay again (the ids are the same)",
                summary.failed
            ),
        ));
    }
    let refused: usize = summary.refused.values().sum();
    if refused > 0 {
        return Err(Failure(
            EXIT_DATA,
            anyhow::anyhow!("notifications refused again: {refused}; they stay where they are"),
        ));
    }
    Ok(())
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

/// Prints `value` as indented JSON.
fn print_json(value: &impl serde::Serialize) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Failure(1, e.into()))?;
    out(&format!("{text}\n"))
}

/// Writes `text` to standard output; a reader that has gone (`| head`) ends the
/// output quietly instead of a panic.
fn out(text: &str) -> Result<(), Failure> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Failure(1, e.into())),
        _ => Ok(()),
    }
}

/// Fails when a state topic among `topics` is not compacted: tombstones would
/// then not remove a deleted entity's earlier states.
async fn check_compacted(settings: &Settings, topics: &[&str]) -> Result<(), Failure> {
    let not_compacted = admin::not_compacted(&settings.kafka, topics)
        .await
        .map_err(|e| Failure(EXIT_UNAVAILABLE, e.into()))?;
    if not_compacted.is_empty() {
        return Ok(());
    }
    Err(Failure(
        EXIT_UNAVAILABLE,
        anyhow::anyhow!(
            "state topics without cleanup.policy=compact: {} (a tombstone would not remove the earlier states; set it, e.g. kafka-configs.sh --alter --entity-type topics --entity-name TOPIC --add-config cleanup.policy=compact)",
            not_compacted.join(", ")
        ),
    ))
}

/// `check --kafka`: every topic the routing file and `[archive]` name must exist
/// in the cluster.
fn check_topics(settings: &Settings, table: &RoutingTable) -> Result<(), Failure> {
    let mut wanted: Vec<&str> = table.named_topics().into_iter().collect();
    wanted.extend(settings.archive.topics());
    let missing = admin::missing_routed_topics(
        &settings.kafka,
        wanted.iter().copied(),
        std::time::Duration::from_secs(10),
    )
    .map_err(|e| Failure(EXIT_UNAVAILABLE, e.into()))?;
    if missing.is_empty() {
        let states: Vec<&str> = table.states().iter().map(|s| s.topic.as_str()).collect();
        let runtime = tokio::runtime::Runtime::new().map_err(|e| Failure(1, e.into()))?;
        runtime.block_on(check_compacted(settings, &states))?;
        let compacted = if states.is_empty() {
            ""
        } else {
            ", the state topics compacted"
        };
        out(&format!(
            "\nkafka: all {} topics exist{compacted}\n",
            wanted.len()
        ))?;
        return Ok(());
    }
    Err(Failure(
        EXIT_UNAVAILABLE,
        anyhow::anyhow!(
            "routed topics missing in Kafka: {} (create them, e.g. with `webhook-connector create-topics`)",
            missing.join(", ")
        ),
    ))
}

/// The settings file in effect: `--config`, else `config/default.toml` if present.
fn settings_file(arg: &ConfigArg) -> Option<PathBuf> {
    let default = Path::new("config/default.toml");
    arg.config
        .clone()
        .or_else(|| default.exists().then(|| default.to_path_buf()))
}

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
    let settings = Settings::load(file.as_deref())
        .with_context(|| format!("invalid settings ({})", describe_source(arg)))
        .map_err(config_failure)?;
    load_routes(settings)
}

/// [`load`] for `explain`: without a privacy key set, a placeholder keys what
/// the key would (said on stderr), so a fresh checkout can try it.
fn load_for_dry_run(arg: &ConfigArg) -> Result<(Settings, RoutingFile), Failure> {
    let file = settings_file(arg);
    let (settings, placeholder) = Settings::load_for_dry_run(file.as_deref())
        .with_context(|| format!("invalid settings ({})", describe_source(arg)))
        .map_err(config_failure)?;
    if placeholder {
        eprintln!(
            "note: privacy.key is not set (CONNECTOR__PRIVACY__KEY): keyed event ids and \
             pseudonymised values below are keyed with a public placeholder key, so they \
             differ from those a deployment keyed with its own privacy.key writes (the \
             same body there gives other, but equally stable, ids); unkeyed event ids \
             are the same"
        );
    }
    load_routes(settings)
}

/// The routing file of `settings`, and the checks `load` makes across both.
fn load_routes(settings: Settings) -> Result<(Settings, RoutingFile), Failure> {
    let routes = routing_file::load(&settings.routing.file, settings.privacy_key().as_ref())
        .context("invalid routing file")
        .map_err(config_failure)?;
    settings
        .check_archive_topics(&routes.table)
        .context("invalid settings")
        .map_err(config_failure)?;
    // librdkafka validates its properties when a client is created; do it here so
    // `check` refuses what `run` would (e.g. an alias of acks set to 1).
    sink::producer_config(&settings.kafka, settings.server.max_in_flight_bytes)
        .create::<BaseProducer>()
        .map_err(|e| config_failure(anyhow::anyhow!("invalid settings: kafka.properties: {e}")))?;
    Ok((settings, routes))
}

async fn serve(settings: Settings, routes: RoutingFile) -> Result<(), Failure> {
    let topics = routes.table.all_topics().len();
    let server = app::start(&settings, routes).await.map_err(|e| match e {
        app::StartError::Settings(_) => config_failure(e),
        _ => Failure(1, e.into()),
    })?;
    info!(
        listen = %server.addr(),
        kafka = %settings.kafka.bootstrap_servers,
        topics,
        endpoints = %entity::endpoints(),
        "webhook-connector listening"
    );
    wait_for_stop_signal().await;
    info!(
        grace_ms = settings.server.shutdown_grace_ms,
        "stopping: draining in-flight requests"
    );
    let grace = settings.server.shutdown_grace();
    match tokio::time::timeout(grace + SHUTDOWN_LEFTOVER, server.shutdown()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(panicked)) => Err(Failure(
            1,
            anyhow::anyhow!("the server stopped with an error: {panicked}"),
        )),
        Err(_) => {
            warn!("shutdown took longer than the grace period; exiting anyway");
            Ok(())
        }
    }
}

async fn wait_for_stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
        }
        Err(error) => {
            warn!(%error, "cannot watch SIGTERM; stopping on SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
