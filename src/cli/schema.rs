//! `schema`: print the JSON Schema of an entity's flat event.

use webhook_connector::contract;
use webhook_connector::entity::Entity;

use super::{parse_entity, print_json, Failure};

#[derive(clap::Args)]
pub(super) struct Args {
    /// The entity (customer, booking).
    #[arg(long, value_name = "NAME", value_parser = parse_entity, default_value = "customer")]
    entity: &'static Entity,
}

pub(super) fn run(args: &Args) -> Result<(), Failure> {
    print_json(&contract::schema::flat_event(args.entity))
}
