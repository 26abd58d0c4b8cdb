//! A consumer of the connector's events that does it right, for downstream teams to copy.
//!
//! ```sh
//! cargo run --example consumer -- --topic customer.contact-details --group my-team
//! cargo run --example consumer -- --pattern '^customer\..*' --group my-team
//! ```
//!
//! - **A consumer group** (`--group`, one per team and purpose) remembers where it is:
//!   a restarted consumer resumes after the last committed record; a new group starts
//!   at the beginning of each topic (`auto.offset.reset=earliest`).
//! - **Commit after processing** (`enable.auto.commit=false`): a record is committed
//!   only once handled, so none is lost; after a crash some may come again
//!   (at-least-once).
//! - **Deduplication by `event_id`**: the connector delivers at least once too. When the
//!   platform retries a notification (a timeout, a `503`), the connector writes its
//!   events again, with the same ids. The last `--dedup-capacity` ids are remembered
//!   (the oldest forgotten first): that catches retries, which come seconds or minutes
//!   apart, not a replay from long ago, and it starts empty at each start. A consumer
//!   that must never apply an event twice stores the ids with its own data. An event
//!   routed to two topics has the same id in both: a consumer of both prints it once.
//! - **The schema version**: an event whose `schema_version` is not 1 is logged and
//!   skipped (and committed), never misread.
//! - **Output**: each new event as one line on stdout, the record value (compact JSON);
//!   logs on stderr. One customer's records (the record key) share a partition, so they
//!   come in the order they were written; records of different partitions or topics
//!   have no order between them.
//!
//! - **The trace goes on**: the connector writes each record with a W3C `traceparent`
//!   header (docs/tracing.md). Handling a record is a consumer span, a child of the
//!   connector's span that wrote it; its ids are logged for each new event, and the
//!   span is exported over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
//!
//! `--exit-when-idle-ms N` exits (0) once no record came for N ms since the group
//! gave this member its partitions, for scripts and tests; otherwise it runs until
//! Ctrl-C.

use std::collections::{HashSet, VecDeque};
use std::error::Error;
use std::io::Write;
use std::num::NonZeroUsize;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Parser;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{
    Span as _, SpanKind, TraceContextExt, Tracer as _, TracerProvider as _,
};
use opentelemetry::KeyValue;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaResult;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{ClientConfig, ClientContext, TopicPartitionList};
use serde_json::Value;
use tokio::time::Instant;

/// The only schema this consumer understands.
const SCHEMA_VERSION: u64 = 1;

#[derive(Parser)]
struct Args {
    /// A topic to read; repeat for several.
    #[arg(long, required_unless_present = "pattern")]
    topic: Vec<String>,
    /// Read every topic whose name matches this regex (it must start with `^`). Topics
    /// created later are picked up at the next metadata refresh (librdkafka's
    /// `topic.metadata.refresh.interval.ms`, 5 minutes by default).
    #[arg(long, conflicts_with = "topic", value_parser = regex_subscription)]
    pattern: Option<String>,
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap_servers: String,
    /// The consumer group id: its committed offsets are where this consumer resumes.
    #[arg(long)]
    group: String,
    /// How many recent event ids are remembered to skip duplicates.
    #[arg(long, default_value_t = NonZeroUsize::new(100_000).unwrap())]
    dedup_capacity: NonZeroUsize,
    /// Exit (status 0) once no record came for this many milliseconds since the group
    /// assigned this member its partitions.
    #[arg(long, value_name = "MS")]
    exit_when_idle_ms: Option<u64>,
}

/// The most recent event ids, at most `capacity` of them: the oldest is forgotten first.
struct RecentIds {
    capacity: usize,
    ids: HashSet<String>,
    order: VecDeque<String>,
}

impl RecentIds {
    fn new(capacity: NonZeroUsize) -> RecentIds {
        RecentIds {
            capacity: capacity.get(),
            ids: HashSet::new(),
            order: VecDeque::new(),
        }
    }

    /// Remembers `id`; whether it was new.
    fn insert(&mut self, id: &str) -> bool {
        if self.ids.contains(id) {
            return false;
        }
        if self.order.len() == self.capacity {
            let oldest = self.order.pop_front().expect("capacity is not zero");
            self.ids.remove(&oldest);
        }
        self.ids.insert(id.to_owned());
        self.order.push_back(id.to_owned());
        true
    }
}

/// librdkafka takes a subscription starting with `^` as a regex, others as names.
fn regex_subscription(pattern: &str) -> Result<String, String> {
    if pattern.starts_with('^') {
        Ok(pattern.to_owned())
    } else {
        Err("a pattern must start with `^`".to_owned())
    }
}

/// Logs the partitions this member is given and loses when the group rebalances,
/// and remembers whether it was given any yet.
#[derive(Default)]
struct LogRebalances {
    assigned: AtomicBool,
}

impl ClientContext for LogRebalances {}

impl ConsumerContext for LogRebalances {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let names = |list: &TopicPartitionList| {
            let elements = list.elements();
            let names = elements
                .iter()
                .map(|p| format!("{}/{}", p.topic(), p.partition()));
            names.collect::<Vec<_>>().join(", ")
        };
        match rebalance {
            Rebalance::Assign(list) => {
                self.assigned.store(true, Ordering::Relaxed);
                eprintln!("assigned: {}", names(list))
            }
            Rebalance::Revoke(list) => eprintln!("revoked: {}", names(list)),
            Rebalance::Error(e) => eprintln!("rebalance error: {e}"),
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn Error>> {
    let subscription: Vec<&str> = match &args.pattern {
        Some(pattern) => vec![pattern.as_str()],
        None => args.topic.iter().map(String::as_str).collect(),
    };
    let consumer: StreamConsumer<LogRebalances> = ClientConfig::new()
        .set("bootstrap.servers", &args.bootstrap_servers)
        .set("group.id", &args.group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create_with_context(LogRebalances::default())?;
    consumer.subscribe(&subscription)?;
    eprintln!("subscribed to {subscription:?} as group {:?}", args.group);

    let (provider, tracer) = tracing()?;
    let result = consume(&args, &consumer, &tracer).await;
    // Sends the spans still queued.
    let _ = provider.shutdown();
    result
}

/// The tracer of the consumer spans: exported over OTLP/HTTP when
/// `OTEL_EXPORTER_OTLP_ENDPOINT` is set, only logged otherwise.
fn tracing() -> Result<(SdkTracerProvider, SdkTracer), Box<dyn Error>> {
    let mut provider = SdkTracerProvider::builder().with_resource(
        Resource::builder()
            .with_service_name("example-consumer")
            .build(),
    );
    if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some() {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()?;
        provider = provider.with_batch_exporter(exporter);
    }
    let provider = provider.build();
    let tracer = provider.tracer("example-consumer");
    Ok((provider, tracer))
}

/// Reads, handles and commits records until interrupted or idle.
async fn consume(
    args: &Args,
    consumer: &StreamConsumer<LogRebalances>,
    tracer: &SdkTracer,
) -> Result<(), Box<dyn Error>> {
    let mut recent = RecentIds::new(args.dedup_capacity);
    let idle = args.exit_when_idle_ms.map(Duration::from_millis);
    let mut last_record = Instant::now();
    let mut interrupted = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        let received = tokio::select! {
            _ = &mut interrupted => {
                eprintln!("interrupted: leaving the group");
                return Ok(()); // dropping the consumer leaves the group
            }
            received = next(consumer, idle.map(|idle| last_record + idle)) => received,
        };
        let message = match received {
            // Idle time counts once the group has given this member its partitions.
            None if !consumer.context().assigned.load(Ordering::Relaxed) => {
                last_record = Instant::now();
                continue;
            }
            None => {
                eprintln!("no record for {:?}: exiting", last_record.elapsed());
                return Ok(());
            }
            // librdkafka retries by itself (broker down, topic missing): keep polling.
            Some(Err(e)) => {
                eprintln!("consumer error: {e}");
                continue;
            }
            Some(Ok(message)) => message,
        };
        last_record = Instant::now();
        // If printing fails, exit without committing: the record is read again.
        let (mut span, trace) = consumer_span(tracer, &message);
        handle(&message, &mut recent, &trace)?;
        span.end();
        // At-least-once: commit only now that the record is handled. This commits
        // offset + 1 (the next record to read) and waits for the broker's answer, so
        // a restart or a rebalance resumes right after this record, and a failed
        // commit is logged. A crash between handling and committing reads the record
        // again. One commit per record costs a round trip. For more throughput, set
        // `enable.auto.commit=true` with `enable.auto.offset.store=false` and call
        // `store_offset_from_message` here instead: librdkafka commits what was stored
        // every 5 s and on a rebalance, and a crash reads up to 5 s of records again.
        if let Err(e) = consumer.commit_message(&message, CommitMode::Sync) {
            eprintln!("{}: commit failed, it may come again: {e}", place(&message));
        }
    }
}

/// The next record or error, or `None` when none came by `deadline`.
async fn next(
    consumer: &StreamConsumer<LogRebalances>,
    deadline: Option<Instant>,
) -> Option<KafkaResult<BorrowedMessage<'_>>> {
    let Some(deadline) = deadline else {
        return Some(consumer.recv().await);
    };
    tokio::time::timeout_at(deadline, consumer.recv())
        .await
        .ok()
}

/// The span of handling `message`: a child of the span whose context the record
/// carries (a new trace when it carries none), as the messaging conventions say;
/// and where it is, for the log.
fn consumer_span(
    tracer: &SdkTracer,
    message: &BorrowedMessage<'_>,
) -> (opentelemetry_sdk::trace::Span, String) {
    let parent = TraceContextPropagator::new().extract(&RecordHeaders(message));
    let parent_span = parent.span().span_context().clone();
    let span = tracer
        .span_builder(format!("process {}", message.topic()))
        .with_kind(SpanKind::Consumer)
        .with_attributes([
            KeyValue::new("messaging.system", "kafka"),
            KeyValue::new("messaging.operation.type", "process"),
            KeyValue::new("messaging.destination.name", message.topic().to_string()),
            KeyValue::new("messaging.kafka.offset", message.offset()),
        ])
        .start_with_context(tracer, &parent);
    let context = span.span_context();
    let parent = match parent_span.is_valid() {
        true => format!("child of span {}", parent_span.span_id()),
        false => "a new trace".to_string(),
    };
    let trace = format!(
        "in trace {} as span {}, {parent}",
        context.trace_id(),
        context.span_id()
    );
    (span, trace)
}

/// A record's headers, for the W3C propagator.
struct RecordHeaders<'m, 'r>(&'r BorrowedMessage<'m>);

impl Extractor for RecordHeaders<'_, '_> {
    fn get(&self, key: &str) -> Option<&str> {
        let header = self.0.headers()?.iter().find(|h| h.key == key)?;
        std::str::from_utf8(header.value?).ok()
    }

    fn keys(&self) -> Vec<&str> {
        (self.0.headers()).map_or(Vec::new(), |h| h.iter().map(|h| h.key).collect())
    }
}

/// Prints a new event of a known schema; logs and skips anything else. `trace`:
/// where its handling is in its trace, logged with a new event.
fn handle(
    message: &BorrowedMessage<'_>,
    recent: &mut RecentIds,
    trace: &str,
) -> std::io::Result<()> {
    let value = message.payload().unwrap_or_default();
    let event = match serde_json::from_slice::<Value>(value) {
        Ok(Value::Object(event)) => event,
        _ => {
            eprintln!("{}: skipped: not a JSON object", place(message));
            return Ok(());
        }
    };
    let version = event.get("schema_version");
    if version.and_then(Value::as_u64) != Some(SCHEMA_VERSION) {
        let version = version.map_or("missing".to_owned(), Value::to_string);
        eprintln!("{}: skipped: schema_version {version}", place(message));
        return Ok(());
    }
    let Some(id) = event.get("event_id").and_then(Value::as_str) else {
        eprintln!("{}: skipped: no event_id", place(message));
        return Ok(());
    };
    if !recent.insert(id) {
        eprintln!("{}: duplicate of event {id}: skipped", place(message));
        return Ok(());
    }
    eprintln!("{}: event {id} handled {trace}", place(message));
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(value)?;
    stdout.write_all(b"\n")?;
    stdout.flush()
}

/// `topic/partition@offset`, for the log.
fn place(message: &BorrowedMessage<'_>) -> String {
    let (topic, partition) = (message.topic(), message.partition());
    format!("{topic}/{partition}@{}", message.offset())
}
