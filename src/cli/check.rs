//! `check`: validate the settings and the routing file and print the route table;
//! with `--kafka`, also that every topic exists and the state topics are compacted.

use webhook_connector::config::routing_file::RoutingFile;
use webhook_connector::config::traces::redacted;
use webhook_connector::config::Settings;
use webhook_connector::explain;
use webhook_connector::routing::RoutingTable;
use webhook_connector::sink::admin;

use super::{describe_source, load, out, runtime, trace_export, ConfigArg, Failure};

#[derive(clap::Args)]
pub(super) struct Args {
    #[command(flatten)]
    config: ConfigArg,
    /// Also connect to Kafka and verify that every routed topic exists.
    #[arg(long)]
    kafka: bool,
}

pub(super) fn run(args: &Args) -> Result<(), Failure> {
    let (settings, RoutingFile { table, .. }) = load(&args.config)?;
    settings.check_serving().map_err(Failure::NotServable)?;
    let traces = match trace_export(&settings)? {
        Some(export) => redacted(&export.traces_url),
        None => "off".into(),
    };
    let source = describe_source(&args.config);
    let file = settings.routing.file.display();
    let kafka_servers = &settings.kafka.bootstrap_servers;
    let route_table = explain::route_table(&table);
    let archive = |topic: Option<&str>| topic.unwrap_or("off").to_string();
    let dead_letter = archive(settings.archive.dead_letter());
    let raw = archive(settings.archive.raw());
    out(&format!(
        "settings: {source}\nrouting file: {file}\nkafka: {kafka_servers}\n\
         dead-letter topic: {dead_letter}\nraw topic: {raw}\ntraces: {traces}\n\n{route_table}"
    ))?;
    if args.kafka {
        check_topics(&settings, &table)?;
    }
    Ok(())
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
    )?;
    if !missing.is_empty() {
        return Err(Failure::MissingTopics(
            missing.into_iter().map(String::from).collect(),
        ));
    }
    let states: Vec<&str> = table.states().iter().map(|s| s.topic.as_str()).collect();
    runtime()?.block_on(check_compacted(settings, &states))?;
    let compacted = if states.is_empty() {
        ""
    } else {
        ", the state topics compacted"
    };
    out(&format!(
        "\nkafka: all {} topics exist{compacted}\n",
        wanted.len()
    ))
}

/// Fails when a state topic among `topics` is not compacted: tombstones would
/// then not remove a deleted entity's earlier states.
pub(super) async fn check_compacted(settings: &Settings, topics: &[&str]) -> Result<(), Failure> {
    let not_compacted = admin::not_compacted(&settings.kafka, topics).await?;
    if not_compacted.is_empty() {
        return Ok(());
    }
    Err(Failure::NotCompacted(
        not_compacted.into_iter().map(String::from).collect(),
    ))
}
