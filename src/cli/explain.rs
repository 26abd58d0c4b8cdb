//! `explain`: print the flat events of a webhook body and the topics each goes to,
//! as `run` would produce them; needs no Kafka.

use std::path::PathBuf;

use webhook_connector::config::routing_file::RoutingFile;
use webhook_connector::entity::Entity;
use webhook_connector::explain;

use super::{load_for_dry_run, parse_entity, print_json, ConfigArg, Failure};

#[derive(clap::Args)]
pub(super) struct Args {
    #[command(flatten)]
    config: ConfigArg,
    /// A webhook body (JSON) as the platform would POST it.
    body: PathBuf,
    /// The webhook it is for (customer, booking); detected from the body's
    /// `Customer` or `Booking` key when not given.
    #[arg(long, value_name = "NAME", value_parser = parse_entity)]
    entity: Option<&'static Entity>,
}

pub(super) fn run(args: &Args) -> Result<(), Failure> {
    let (settings, RoutingFile { table, .. }) = load_for_dry_run(&args.config)?;
    let file = || args.body.display().to_string();
    let bytes = std::fs::read(&args.body).map_err(|cause| Failure::ReadInput {
        file: file(),
        cause,
    })?;
    let now = chrono::Utc::now();
    let events =
        explain::explain_as_run(&bytes, args.entity, &settings, &table, now).map_err(|cause| {
            Failure::Explain {
                file: file(),
                cause,
            }
        })?;
    print_json(&events)
}
