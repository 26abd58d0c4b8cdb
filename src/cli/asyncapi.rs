//! `asyncapi`: print the AsyncAPI document of the topics the routing file feeds.

use webhook_connector::config::routing_file::RoutingFile;
use webhook_connector::contract;

use super::{load, print_json, ConfigArg, Failure};

pub(super) fn run(config: &ConfigArg) -> Result<(), Failure> {
    let (settings, RoutingFile { table, .. }) = load(config)?;
    let document =
        contract::asyncapi::document_with_archive(&settings.kafka, &settings.archive, &table);
    print_json(&document)
}
