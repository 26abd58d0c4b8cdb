//! `forget`: erase an entity on request, a tombstone to its state topic and an
//! erasure event to the `[erasure]` topic.

use webhook_connector::config::routing_file::RoutingFile;
use webhook_connector::entity::Entity;
use webhook_connector::forget;

use super::{init_telemetry, load, out, parse_entity, runtime, ConfigArg, Failure};

#[derive(clap::Args)]
pub(super) struct Args {
    #[command(flatten)]
    config: ConfigArg,
    /// The entity (customer, booking).
    #[arg(long, value_name = "NAME", value_parser = parse_entity)]
    entity: &'static Entity,
    /// The entity's id (Customer.Id, Booking.Id).
    #[arg(long, value_name = "ID", allow_negative_numbers = true)]
    id: i64,
}

pub(super) fn run(args: &Args) -> Result<(), Failure> {
    let (settings, RoutingFile { table, .. }) = load(&args.config)?;
    let exporter = init_telemetry(&settings)?;
    let (entity, id) = (args.entity, args.id);
    let now = chrono::Utc::now();
    let done = runtime()?.block_on(forget::forget(&settings, &table, entity, id, now));
    if let Some(exporter) = exporter {
        exporter.shutdown();
    }
    let done = done?;
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
