//! `create-topics`: create every topic the routing file and `[archive]` name that
//! does not exist yet, the state topics compacted.

use webhook_connector::config::routing_file::RoutingFile;
use webhook_connector::sink::admin::{self, TopicOutcome};

use super::check::check_compacted;
use super::{load, out, runtime, ConfigArg, Failure};

#[derive(clap::Args)]
pub(super) struct Args {
    #[command(flatten)]
    config: ConfigArg,
    /// Partitions of each new topic.
    #[arg(long, default_value_t = 3)]
    partitions: i32,
    /// Replication factor of each new topic.
    #[arg(long, default_value_t = 1)]
    replication_factor: i32,
}

pub(super) fn run(args: &Args) -> Result<(), Failure> {
    let (settings, RoutingFile { table, .. }) = load(&args.config)?;
    let mut topics: Vec<&str> = table.named_topics().into_iter().collect();
    topics.extend(settings.archive.topics());
    let compacted: Vec<&str> = table.states().iter().map(|s| s.topic.as_str()).collect();
    let runtime = runtime()?;
    let outcomes = runtime.block_on(admin::create_topics(
        &settings.kafka,
        &topics,
        &compacted,
        args.partitions,
        args.replication_factor,
    ))?;
    print_outcomes(&outcomes, &compacted)?;
    // A state topic that existed already is left as it is: check it.
    let existing: Vec<&str> = (outcomes.iter())
        .filter(|(t, o)| *o == TopicOutcome::AlreadyExisted && compacted.contains(&t.as_str()))
        .map(|(t, _)| t.as_str())
        .collect();
    runtime.block_on(check_compacted(&settings, &existing))
}

/// One line per topic: created (how, when compacted) or already there.
fn print_outcomes(outcomes: &[(String, TopicOutcome)], compacted: &[&str]) -> Result<(), Failure> {
    let lag = admin::STATE_MAX_COMPACTION_LAG_MS;
    for (topic, outcome) in outcomes {
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
    Ok(())
}
