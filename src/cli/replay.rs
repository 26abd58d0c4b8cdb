//! `replay`: run raw notifications from the raw topic or the dead-letter topic
//! through the current acceptance step and routing again (docs/replay.md).

use indicatif::{ProgressBar, ProgressStyle};
use webhook_connector::config::routing_file::RoutingFile;
use webhook_connector::replay::{self, Summary};

use super::{init_telemetry, load, out, parse_time, runtime, ConfigArg, Failure};

type Time = chrono::DateTime<chrono::Utc>;

#[derive(clap::Args)]
pub(super) struct Args {
    #[command(flatten)]
    config: ConfigArg,
    /// The topic to read: archive.raw_topic or archive.dead_letter_topic.
    #[arg(long, value_name = "TOPIC")]
    from: String,
    /// Only notifications received at or after this time (RFC 3339).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    since: Option<Time>,
    /// Only notifications received before this time (RFC 3339).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    until: Option<Time>,
    /// Write only to this topic (repeat for several): to fill a new route's
    /// topic without writing the others again.
    #[arg(long = "only-topic", value_name = "TOPIC")]
    only_topics: Vec<String>,
    /// Print what would be written, one line per record, and write nothing.
    #[arg(long)]
    dry_run: bool,
}

/// Runs the replay with a progress bar on a terminal, prints the summary and
/// fails when a notification was not acknowledged or was refused again.
pub(super) fn run(args: Args) -> Result<(), Failure> {
    let (settings, RoutingFile { table, .. }) = load(&args.config)?;
    let exporter = init_telemetry(&settings)?;
    let options = replay::Options {
        from: args.from,
        since: args.since,
        until: args.until,
        only_topics: args.only_topics,
        dry_run: args.dry_run,
        // A notification accepted now is archived as a live one would be
        // (counted always; not written into the raw topic it is read from).
        raw_topic: settings.archive.raw().map(String::from),
    };
    let bar = progress_bar();
    let runtime = runtime()?;
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
    let summary = runtime.block_on(replay::replay(&settings, &table, &options, progress, print));
    if let Some(exporter) = exporter {
        exporter.shutdown();
    }
    let summary = summary?;
    bar.finish_and_clear();
    out(&summary.render(options.dry_run))?;
    outcome(&summary)
}

fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} notifications read")
            .expect("a valid template"),
    );
    bar
}

/// Whether every notification read was replayed.
fn outcome(summary: &Summary) -> Result<(), Failure> {
    if summary.failed > 0 {
        return Err(Failure::NotAcknowledged(summary.failed));
    }
    let refused: usize = summary.refused.values().sum();
    if refused > 0 {
        return Err(Failure::RefusedAgain(refused));
    }
    Ok(())
}
