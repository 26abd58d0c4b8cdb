//! The `replay` command (docs/replay.md): raw notifications, read from the
//! raw topic or the dead-letter topic, through the current acceptance step and
//! routing again, produced with the ids a live request would get.
//!
//! [`plan`] is pure: one raw record in, the records to write (or why it is
//! refused again) out. [`replay`] reads the topic from its beginning to its end,
//! plans each record and delivers what the plan says (unless it is a dry run),
//! then says what it did in a [`Summary`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use opentelemetry::trace::SpanContext;
use prometheus_client::metrics::counter::Counter;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::config::Settings;
use crate::entity;
use crate::pipeline::{self, Limits};
use crate::records::{Kind, RawMeta, Record, Records};
use crate::routing::RoutingTable;
use crate::sink::{first_oversized, without_values, DeliveryError, KafkaSink, ProducerError};
use crate::telemetry::traces;

/// Notifications delivered at once.
const CONCURRENCY: usize = 32;
/// How long the topic must stay silent, once its end is reached, before the
/// read stops (a broker may report its end early).
const QUIET: Duration = Duration::from_millis(1500);
/// How long a read may wait for a record before the end the topic had at the
/// start, before it fails (rather than report a partial replay as complete).
const STALLED: Duration = Duration::from_secs(30);

/// What to replay.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The raw topic or dead-letter topic to read.
    pub from: String,
    /// Only notifications received at or after this.
    pub since: Option<DateTime<Utc>>,
    /// Only notifications received before this.
    pub until: Option<DateTime<Utc>>,
    /// Write only to these topics (all when empty).
    pub only_topics: Vec<String>,
    /// Print what would be written instead of writing it.
    pub dry_run: bool,
    /// The raw topic, when on: a notification accepted now is counted
    /// with its raw copy and archived, as a live request would be (unless
    /// `only_topics` leaves it out, or it is the topic read).
    pub raw_topic: Option<String>,
}

/// Why a replay could not run (or not to the end).
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("--only-topic {0:?} is not a topic of the routing file (or the raw topic)")]
    UnknownTopic(String),
    #[error("cannot read {topic}: {cause}")]
    Read { topic: String, cause: String },
    #[error(transparent)]
    Producer(#[from] ProducerError),
}

/// A raw record as read: its value and the headers the connector wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRecord {
    pub body: Vec<u8>,
    /// Header name -> value (`None`: a header without value).
    pub headers: BTreeMap<String, Option<String>>,
}

impl RawRecord {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(Option::as_deref)
    }

    /// When the connector received it (its `received_at` header).
    fn received_at(&self) -> Option<DateTime<Utc>> {
        let at = DateTime::parse_from_rfc3339(self.header("received_at")?).ok()?;
        Some(at.with_timezone(&Utc))
    }
}

/// What replaying one raw record comes to.
pub enum Plan<'t> {
    /// Outside `--since`/`--until`.
    Skipped,
    /// Refused again: the `error` code it is refused with.
    Refused(&'static str),
    /// The records to write (only those for `--only-topic`, when given).
    Write(Records<'t>),
}

/// Plans the replay of `raw` with the current `table` and `limits`: the records a
/// live request would have produced, received when it was, restricted to `only`
/// (all topics when empty). Pure.
pub fn plan<'t>(
    raw: &RawRecord,
    table: &'t RoutingTable,
    limits: &Limits,
    options: &'t Options,
) -> Plan<'t> {
    let Some(entity) = raw.header("entity").and_then(entity::by_name) else {
        return Plan::Refused("unknown_entity");
    };
    let Some(received_at) = raw.received_at() else {
        return Plan::Refused("no_received_at");
    };
    let outside = options.since.is_some_and(|since| received_at < since)
        || options.until.is_some_and(|until| received_at >= until);
    if outside {
        return Plan::Skipped;
    }
    let content_type = raw.header("request_content_type").map(str::as_bytes);
    if !pipeline::content_type_accepted(content_type) {
        return Plan::Refused("unsupported_media_type");
    }
    // The raw topic's copy is counted as live counts it, so replay accepts
    // exactly what the endpoint accepts.
    let copy = options.raw_topic.as_deref().map(|topic| {
        let meta = RawMeta {
            entity: entity.name,
            request_id: raw.header("request_id").unwrap_or_default().to_string(),
            received_at: raw.header("received_at").unwrap_or_default().to_string(),
            content_type: raw.header("request_content_type").map(String::from),
            refusal: None,
        };
        (topic, meta)
    });
    let accepted = pipeline::accept_within(
        pipeline::Input {
            body: &raw.body,
            entity,
            received_at,
            limits,
            table,
        },
        copy,
        &mut |_| true,
    );
    match accepted {
        Err(refusal) => Plan::Refused(refusal_code(&refusal)),
        Ok(accepted) => {
            let mut records = accepted.into_records();
            // Read from the raw topic: it holds the notification already.
            records.records.retain(|r| r.topic != options.from);
            if !options.only_topics.is_empty() {
                records
                    .records
                    .retain(|r| options.only_topics.iter().any(|t| t == r.topic));
            }
            Plan::Write(records)
        }
    }
}

/// The `error` code the endpoint answers `refusal` with.
fn refusal_code(refusal: &pipeline::AcceptError) -> &'static str {
    crate::ingress::ApiError::Accept(refusal.clone()).code()
}

/// What a replay did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub read: usize,
    /// Accepted and, unless a dry run, acknowledged by Kafka.
    pub replayed: usize,
    /// Outside `--since`/`--until`.
    pub skipped: usize,
    /// Refused again, by `error` code.
    pub refused: BTreeMap<&'static str, usize>,
    /// Records acknowledged by Kafka (or, in a dry run, that would be written), by topic.
    pub records: BTreeMap<String, usize>,
    /// Notifications whose records Kafka did not acknowledge, with the first reason.
    pub failed: usize,
    pub first_failure: Option<String>,
}

impl Summary {
    /// Counts what Kafka acknowledged and what it did not.
    fn delivered(&mut self, results: Vec<(Vec<String>, Result<(), DeliveryError>)>) {
        for (topics, result) in results {
            match result {
                Ok(()) => {
                    self.replayed += 1;
                    topics.iter().for_each(|topic| self.count(topic));
                }
                // Kafka refuses the records for what they are: refused again, as
                // the endpoint would refuse the notification now.
                Err(error) if error.is_content_refusal() => {
                    let code = crate::ingress::ApiError::Delivery(error).code();
                    *self.refused.entry(code).or_default() += 1;
                }
                Err(error) => {
                    self.failed += 1;
                    self.first_failure.get_or_insert(error.to_string());
                }
            }
        }
    }

    fn count(&mut self, topic: &str) {
        *self.records.entry(topic.to_string()).or_default() += 1;
    }

    /// The summary for people.
    pub fn render(&self, dry_run: bool) -> String {
        let written = if dry_run { "would write" } else { "written" };
        let mut text = format!(
            "read       {}\nreplayed   {}\nskipped    {} (outside --since/--until)\n",
            self.read, self.replayed, self.skipped
        );
        let refused: usize = self.refused.values().sum();
        let reasons: Vec<String> = (self.refused.iter())
            .map(|(code, n)| format!("{code} {n}"))
            .collect();
        text.push_str(&format!("refused    {refused}"));
        if !reasons.is_empty() {
            text.push_str(&format!(" ({})", reasons.join(", ")));
        }
        text.push('\n');
        if self.failed > 0 {
            let why = self.first_failure.as_deref().unwrap_or_default();
            text.push_str(&format!("failed     {} (first: {why})\n", self.failed));
        }
        text.push_str(&format!("{written}:\n"));
        for (topic, count) in &self.records {
            text.push_str(&format!("  {topic}  {count}\n"));
        }
        text
    }
}

/// Replays `options.from` with the current `settings` and routing `table`, a
/// batch of records at a time (memory stays bounded however long the topic);
/// `progress` is told how many records were read of about how many,
/// `dry_run_line` receives what a dry run would write, one line per record.
pub async fn replay(
    settings: &Settings,
    table: &RoutingTable,
    options: &Options,
    progress: impl Fn(u64, u64),
    mut dry_run_line: impl FnMut(String),
) -> Result<Summary, ReplayError> {
    let mut named = table.named_topics();
    named.extend(options.raw_topic.as_deref());
    if let Some(unknown) = (options.only_topics.iter()).find(|t| !named.contains(t.as_str())) {
        return Err(ReplayError::UnknownTopic(unknown.clone()));
    }
    let mut reader = Reader::open(settings, &options.from, Utc::now())?;
    let limits = Limits::of(settings);
    let sink = Arc::new(KafkaSink::new(
        &settings.kafka,
        settings.server.max_in_flight_bytes,
        Counter::default(),
    )?);
    let mut summary = Summary::default();
    // A batch's records are held until Kafka answered: at most the bytes one
    // request may hold at the endpoint (beyond one notification's).
    let budget = limits.max_request_bytes;
    while let Some(batch) = reader.next_batch(BATCH)? {
        summary.read += batch.len();
        progress(summary.read as u64, reader.expected());
        let (mut deliveries, mut held) = (Vec::new(), 0);
        for record in &batch {
            let planned = plan(record, table, &limits, options);
            // A dry run checks sizes with the context the records would carry.
            let planned = if options.dry_run {
                traced(planned, record)
            } else {
                planned
            };
            match planned {
                Plan::Skipped => summary.skipped += 1,
                Plan::Refused(code) => *summary.refused.entry(code).or_default() += 1,
                // The check the sink makes before enqueuing anything.
                Plan::Write(records)
                    if options.dry_run && first_oversized(&records, &settings.kafka).is_some() =>
                {
                    *summary.refused.entry("record_too_large").or_default() += 1;
                }
                Plan::Write(records) if options.dry_run => {
                    summary.replayed += 1;
                    for record in &records.records {
                        summary.count(record.topic);
                        dry_run_line(describe(record));
                    }
                }
                Plan::Write(records) => {
                    let bytes = records.held_bytes();
                    if held + bytes > budget && !deliveries.is_empty() {
                        let sent = std::mem::take(&mut deliveries);
                        summary.delivered(deliver_all(&sink, sent).await);
                        held = 0;
                    }
                    held += bytes;
                    deliveries.push((records, traces::archived(&record.headers)));
                }
            }
        }
        summary.delivered(deliver_all(&sink, deliveries).await);
    }
    Ok(summary)
}

/// `plan` with the trace context its records will carry (that of `raw`, or a
/// new trace's; the span id comes when they are delivered), so that a dry run
/// checks their size as the sink will.
fn traced<'t>(plan: Plan<'t>, raw: &RawRecord) -> Plan<'t> {
    let Plan::Write(mut records) = plan else {
        return plan;
    };
    let archived = traces::archived(&raw.headers).unwrap_or(SpanContext::empty_context());
    records.trace = Some(traces::record_headers(&archived));
    Plan::Write(records)
}

/// Records read, planned and delivered at once.
const BATCH: usize = 256;

/// One line of a dry run: where a record would go.
fn describe(record: &Record<'_>) -> String {
    let what = match &record.kind {
        Kind::Event { event_id, .. } => format!("event_id {event_id}"),
        _ => record.what().to_string(),
    };
    format!("{}  key {}  {what}", record.topic, record.key)
}

/// Delivers every notification's records (with the trace context it was archived
/// with): one entity's notifications one after the other, in the order read (so
/// its events and state keep their order), [`CONCURRENCY`] entities at a time;
/// for each notification, the topics of its records and whether Kafka
/// acknowledged them all.
async fn deliver_all(
    sink: &Arc<KafkaSink>,
    deliveries: Vec<Delivery<'_>>,
) -> Vec<(Vec<String>, Result<(), DeliveryError>)> {
    // Each notification's records share its entity's id as their key.
    let mut by_entity: Vec<Vec<Delivery<'_>>> = Vec::new();
    let mut chain_of: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for (records, archived) in deliveries {
        let key = records
            .records
            .first()
            .map(|r| r.key.clone())
            .unwrap_or_default();
        let chain = *chain_of.entry(key).or_insert_with(|| {
            by_entity.push(Vec::new());
            by_entity.len() - 1
        });
        by_entity[chain].push((records, archived));
    }
    // Each delivery holds a permit of a pool that is never short: the byte budget
    // is the live endpoint's; a replay is bounded by its batch instead.
    let pool = Arc::new(Semaphore::new(CONCURRENCY));
    let chains: Vec<Vec<_>> = futures::stream::iter(by_entity)
        .map(|chain| {
            let pool = Arc::clone(&pool);
            async move {
                let mut results = Vec::with_capacity(chain.len());
                for (records, archived) in chain {
                    let topics = records
                        .records
                        .iter()
                        .map(|r| r.topic.to_string())
                        .collect();
                    let held = Arc::clone(&pool)
                        .acquire_owned()
                        .await
                        .expect("never closed");
                    let delivered = deliver_traced(sink, records, held, archived.as_ref());
                    results.push((topics, delivered.await));
                }
                results
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    chains.into_iter().flatten().collect()
}

/// A notification's records and the trace context it was archived with.
type Delivery<'t> = (Records<'t>, Option<SpanContext>);

/// Delivers `records` within a `replay` span in the trace of `archived` (the
/// request that was archived; a new trace without one), linked to it: the
/// records carry the replay span's context.
async fn deliver_traced(
    sink: &Arc<KafkaSink>,
    mut records: Records<'_>,
    held: OwnedSemaphorePermit,
    archived: Option<&SpanContext>,
) -> Result<(), DeliveryError> {
    let span = traces::replay_span();
    let context = traces::start(&span, archived);
    if let Some(archived) = archived {
        span.add_link(archived.clone());
    }
    records.trace = Some(traces::record_headers(&context));
    sink.deliver(records, held).instrument(span).await
}

/// Reads a topic from its beginning to its end: the high watermarks at the
/// start, and then [`QUIET`] without a record (a broker may report its end
/// early). A partition ends early at its first record received after the replay
/// started: what a running connector writes meanwhile is not read.
struct Reader {
    consumer: BaseConsumer,
    topic: String,
    started: DateTime<Utc>,
    ends: BTreeMap<i32, i64>,
    /// The low watermarks at the start.
    low: BTreeMap<i32, i64>,
    next: BTreeMap<i32, i64>,
    /// Partitions past the start (their later records are not read).
    done: BTreeSet<i32>,
    last_seen: Instant,
}

impl Reader {
    fn open(
        settings: &Settings,
        topic: &str,
        started: DateTime<Utc>,
    ) -> Result<Reader, ReplayError> {
        let failed = |cause: String| ReplayError::Read {
            topic: topic.to_string(),
            cause,
        };
        let mut config = crate::sink::client_config(&settings.kafka);
        let group = format!("webhook-connector-replay-{}", uuid::Uuid::new_v4());
        config
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest");
        let consumer: BaseConsumer = config.create().map_err(|e| failed(without_values(&e)))?;
        let timeout = Duration::from_secs(10);
        let metadata = consumer.fetch_metadata(Some(topic), timeout);
        let metadata = metadata.map_err(|e| failed(e.to_string()))?;
        let partitions: Vec<i32> = (metadata.topics().iter())
            .filter(|t| t.name() == topic && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if partitions.is_empty() {
            return Err(failed("the topic does not exist".into()));
        }
        let (mut ends, mut starts) = (BTreeMap::new(), BTreeMap::new());
        let mut assignment = TopicPartitionList::new();
        for &partition in &partitions {
            let watermarks = consumer.fetch_watermarks(topic, partition, timeout);
            let (low, high) = watermarks.map_err(|e| failed(e.to_string()))?;
            // Records before the low watermark are gone (retention).
            starts.insert(partition, low.max(0));
            ends.insert(partition, high);
            assignment
                .add_partition_offset(topic, partition, Offset::Beginning)
                .map_err(|e| failed(e.to_string()))?;
        }
        consumer
            .assign(&assignment)
            .map_err(|e| failed(e.to_string()))?;
        Ok(Reader {
            consumer,
            topic: topic.to_string(),
            started,
            done: BTreeSet::new(),
            low: starts.clone(),
            next: starts,
            ends,
            last_seen: Instant::now(),
        })
    }

    /// About how many records the topic holds (between its watermarks at the start).
    fn expected(&self) -> u64 {
        self.ends
            .values()
            .map(|&high| high.max(0) as u64)
            .sum::<u64>()
            - self.low.values().map(|&low| low.max(0) as u64).sum::<u64>()
    }

    /// Up to `most` records; `None` once the end is reached. Blocking.
    fn next_batch(&mut self, most: usize) -> Result<Option<Vec<RawRecord>>, ReplayError> {
        let mut batch = Vec::new();
        while batch.len() < most && !self.at_end()? {
            let (partition, offset, record) = match self.consumer.poll(Duration::from_millis(100)) {
                None if !batch.is_empty() => break,
                None => continue,
                Some(Err(e)) => return Err(self.failed(e.to_string())),
                Some(Ok(message)) if self.done.contains(&message.partition()) => continue,
                Some(Ok(message)) => (message.partition(), message.offset(), raw_record(&message)),
            };
            if let Some(record) = self.admit(partition, offset, record) {
                batch.push(record);
            }
        }
        Ok((!batch.is_empty()).then_some(batch))
    }

    /// Whether the read is over: every partition is past the start, or the end
    /// the topic had at the start is reached and [`QUIET`] (a broker may report
    /// its end early). Short of that end and nothing for [`STALLED`]: not the
    /// end, an error.
    fn at_end(&self) -> Result<bool, ReplayError> {
        if self.done.len() == self.next.len() {
            return Ok(true);
        }
        let reached =
            (self.next.iter()).all(|(p, offset)| *offset >= self.ends[p] || self.done.contains(p));
        let quiet = self.last_seen.elapsed();
        if !reached && quiet >= STALLED {
            return Err(self.stalled());
        }
        Ok(reached && quiet >= QUIET)
    }

    /// The error of a read that stalled short of the end, naming the partitions behind.
    fn stalled(&self) -> ReplayError {
        let behind: Vec<String> = (self.next.iter())
            .filter(|(p, offset)| **offset < self.ends[p] && !self.done.contains(p))
            .map(|(p, offset)| format!("partition {p} at offset {offset} of {}", self.ends[p]))
            .collect();
        self.failed(format!(
            "no record for {} s before the end the topic had at the start ({}); nothing after what was replayed so far was read",
            STALLED.as_secs(),
            behind.join(", ")
        ))
    }

    /// The record read at `offset` of `partition`, unless it ends the partition:
    /// past the end it had at the start, a record received after the replay
    /// started ends the partition, so what a running connector writes meanwhile
    /// is not read. Everything before that end is read, whatever the clocks.
    fn admit(&mut self, partition: i32, offset: i64, record: RawRecord) -> Option<RawRecord> {
        self.last_seen = Instant::now();
        self.next.insert(partition, offset + 1);
        let late = record.received_at().is_some_and(|at| at >= self.started);
        if offset >= self.ends[&partition] && late {
            self.done.insert(partition);
            return None;
        }
        Some(record)
    }

    /// A read error of this topic.
    fn failed(&self, cause: String) -> ReplayError {
        ReplayError::Read {
            topic: self.topic.clone(),
            cause,
        }
    }
}

/// A message's value and headers.
fn raw_record(message: &impl Message) -> RawRecord {
    let headers = (message.headers())
        .map(|headers| {
            (headers.iter())
                .map(|h| {
                    let value = h.value.map(|v| String::from_utf8_lossy(v).into_owned());
                    (h.key.to_string(), value)
                })
                .collect()
        })
        .unwrap_or_default();
    RawRecord {
        body: message.payload().unwrap_or_default().to_vec(),
        headers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::routing_file;

    const ROUTES: &str = "[unmatched]\ntopic = \"u\"\n\
        [[routes]]\nname = \"sms\"\nchange_types = [\"CustomerSmsChanged\"]\ntopics = [\"sms\", \"all\"]\n\
        [[routes]]\nname = \"all\"\nchange_types = [\"*\"]\ntopics = [\"all\"]\n";

    fn table() -> RoutingTable {
        routing_file::parse(ROUTES, "routes.toml", None).unwrap()
    }

    fn raw(body: &[u8], headers: &[(&str, &str)]) -> RawRecord {
        RawRecord {
            body: body.to_vec(),
            headers: (headers.iter())
                .map(|(k, v)| (k.to_string(), Some(v.to_string())))
                .collect(),
        }
    }

    const SEED: &[u8] = include_bytes!("../tests/fixtures/seed_sample.json");
    const AT: &str = "2026-11-29T10:00:00.5Z";

    fn seed() -> RawRecord {
        raw(
            SEED,
            &[
                ("entity", "customer"),
                ("received_at", AT),
                ("request_content_type", "application/json"),
            ],
        )
    }

    fn write(plan: Plan<'_>) -> Records<'_> {
        match plan {
            Plan::Write(records) => records,
            Plan::Skipped => panic!("skipped"),
            Plan::Refused(code) => panic!("refused: {code}"),
        }
    }

    #[test]
    fn a_replayed_notification_gives_what_the_live_request_gave() {
        let table = table();
        let limits = Limits::of(&Settings::default());
        let at = DateTime::parse_from_rfc3339(AT)
            .unwrap()
            .with_timezone(&Utc);
        let live = pipeline::accept(pipeline::Input {
            body: SEED,
            entity: &entity::CUSTOMER,
            received_at: at,
            limits: &limits,
            table: &table,
        })
        .unwrap();
        let live = live.records;
        let all = Options::default();
        let replayed = write(plan(&seed(), &table, &limits, &all));
        assert_eq!(
            replayed.buffers, live.buffers,
            "same values, received_at included"
        );
        let topics = |r: &Records<'_>| -> Vec<(String, Kind)> {
            (r.records.iter())
                .map(|r| (r.topic.to_string(), r.kind.clone()))
                .collect()
        };
        assert_eq!(topics(&replayed), topics(&live));
        // Only the topics asked for.
        let only = Options {
            only_topics: vec!["sms".into()],
            ..Options::default()
        };
        let replayed = write(plan(&seed(), &table, &limits, &only));
        assert_eq!(replayed.records.len(), 1);
        assert_eq!(replayed.records[0].topic, "sms");
        assert_eq!(replayed.records[0].kind, live.records[0].kind);
    }

    #[test]
    fn records_outside_the_window_are_skipped_and_bad_ones_refused_again() {
        let (table, limits) = (table(), Limits::of(&Settings::default()));
        let time = |t: &str| Some(DateTime::parse_from_rfc3339(t).unwrap().with_timezone(&Utc));
        let window = |since: &str, until: &str| Options {
            since: time(since),
            until: time(until),
            ..Options::default()
        };
        let plan_in = |options: &Options| match plan(&seed(), &table, &limits, options) {
            Plan::Skipped => "skipped",
            Plan::Refused(code) => code,
            Plan::Write(_) => "write",
        };
        assert_eq!(
            plan_in(&window("2026-11-29T10:00:00.5Z", "2026-11-29T10:00:01Z")),
            "write"
        );
        assert_eq!(
            plan_in(&window("2026-11-29T10:00:00.6Z", "2026-11-30T00:00:00Z")),
            "skipped"
        );
        assert_eq!(
            plan_in(&window("2026-11-28T00:00:00Z", "2026-11-29T10:00:00.5Z")),
            "skipped"
        );
        let refused = |record: RawRecord| match plan(&record, &table, &limits, &Options::default())
        {
            Plan::Refused(code) => code,
            _ => "not refused",
        };
        assert_eq!(refused(raw(SEED, &[("received_at", AT)])), "unknown_entity");
        assert_eq!(
            refused(raw(SEED, &[("entity", "table"), ("received_at", AT)])),
            "unknown_entity"
        );
        assert_eq!(
            refused(raw(SEED, &[("entity", "customer")])),
            "no_received_at"
        );
        assert_eq!(
            refused(raw(
                SEED,
                &[("entity", "customer"), ("received_at", "yesterday")]
            )),
            "no_received_at"
        );
        let plain = [
            ("entity", "customer"),
            ("received_at", AT),
            ("request_content_type", "text/plain"),
        ];
        assert_eq!(refused(raw(SEED, &plain)), "unsupported_media_type");
        assert_eq!(
            refused(raw(b"{", &[("entity", "customer"), ("received_at", AT)])),
            "invalid_json"
        );
        assert_eq!(
            refused(raw(SEED, &[("entity", "booking"), ("received_at", AT)])),
            "invalid_payload"
        );
        // No content type at all is accepted, as live.
        assert!(matches!(
            plan(
                &raw(SEED, &[("entity", "customer"), ("received_at", AT)]),
                &table,
                &limits,
                &Options::default()
            ),
            Plan::Write(_)
        ));
    }

    #[test]
    fn a_notification_accepted_now_is_archived_as_a_live_one_would_be() {
        let (table, limits) = (table(), Limits::of(&Settings::default()));
        let archiving = Options {
            raw_topic: Some("raw".into()),
            ..Options::default()
        };
        let mut dead = seed();
        dead.headers
            .insert("request_id".into(), Some("req-7".into()));
        dead.headers
            .insert("error_code".into(), Some("too_many_changes".into()));
        let records = write(plan(&dead, &table, &limits, &archiving));
        let last = records.records.last().unwrap();
        assert_eq!((last.topic, last.key.as_str()), ("raw", "862"));
        assert_eq!(records.value(last), Some(SEED));
        let Kind::Raw(meta) = &last.kind else {
            panic!("a raw record")
        };
        assert_eq!(meta.request_id, "req-7");
        assert_eq!(meta.received_at, AT);
        assert_eq!(meta.refusal, None);
        // --only-topic without the raw topic leaves it out.
        let only = Options {
            only_topics: vec!["sms".into()],
            ..archiving
        };
        let records = write(plan(&dead, &table, &limits, &only));
        assert!(records.records.iter().all(|r| r.topic == "sms"));
    }

    #[test]
    fn replay_counts_the_raw_archive_copy_as_live_does_and_refuses_what_live_refuses() {
        let table = table();
        let archiving = Options {
            raw_topic: Some("raw".into()),
            ..Options::default()
        };
        // The most a request may hold: the body and its records, without the copy.
        let plain = Options::default();
        let events_only = write(plan(
            &seed(),
            &table,
            &Limits::of(&Settings::default()),
            &plain,
        ));
        let limits = Limits {
            max_request_bytes: SEED.len() + events_only.held_bytes(),
            ..Limits::of(&Settings::default())
        };
        assert!(matches!(
            plan(&seed(), &table, &limits, &plain),
            Plan::Write(_)
        ));
        // The copy does not fit beside them: refused, as the endpoint refuses it,
        // also when replaying the raw topic itself (where nothing is archived).
        let from_raw_topic = Options {
            from: "raw".into(),
            ..archiving.clone()
        };
        for options in [&archiving, &from_raw_topic] {
            assert!(matches!(
                plan(&seed(), &table, &limits, options),
                Plan::Refused("payload_too_large")
            ));
        }
        let records = write(plan(
            &seed(),
            &table,
            &Limits::of(&Settings::default()),
            &from_raw_topic,
        ));
        assert!(!records.records.is_empty());
        assert!(records.records.iter().all(|r| r.topic != "raw"));
        let live = pipeline::accept_within(
            pipeline::Input {
                body: SEED,
                entity: &entity::CUSTOMER,
                received_at: Utc::now(),
                limits: &limits,
                table: &table,
            },
            Some((
                "raw",
                RawMeta {
                    entity: "customer",
                    request_id: String::new(),
                    received_at: AT.into(),
                    content_type: Some("application/json".into()),
                    refusal: None,
                },
            )),
            &mut |_| true,
        );
        assert!(matches!(
            live,
            Err(pipeline::AcceptError::TooLargeToDeliver { .. })
        ));
    }

    #[test]
    fn records_kafka_refuses_for_their_content_count_as_refused_not_failed() {
        let mut summary = Summary::default();
        let refused = DeliveryError::Refused {
            topic: "t".into(),
            change_type: "X".into(),
            reason: "too large".into(),
            retriable: false,
            code: Some(rdkafka::types::RDKafkaErrorCode::MessageSizeTooLarge),
        };
        let timed_out = DeliveryError::TimedOut {
            topics: "t".into(),
            timeout_ms: 1,
        };
        summary.delivered(vec![
            (vec!["t".into()], Err(refused)),
            (vec!["t".into()], Err(timed_out)),
        ]);
        assert_eq!(summary.refused.get("record_too_large"), Some(&1));
        assert_eq!(summary.failed, 1);
        assert_eq!(summary.replayed, 0);
    }

    #[test]
    fn the_summary_says_what_was_done() {
        let summary = Summary {
            read: 5,
            replayed: 2,
            skipped: 1,
            refused: [("invalid_json", 1), ("too_many_changes", 1)]
                .into_iter()
                .collect(),
            records: [("sms".to_string(), 2), ("all".to_string(), 8)]
                .into_iter()
                .collect(),
            failed: 0,
            first_failure: None,
        };
        assert_eq!(
            summary.render(false),
            "read       5\nreplayed   2\nskipped    1 (outside --since/--until)\n\
             refused    2 (invalid_json 1, too_many_changes 1)\nwritten:\n  all  8\n  sms  2\n"
        );
        assert!(summary.render(true).contains("would write:\n"));
        let failed = Summary {
            failed: 1,
            first_failure: Some("timed out".into()),
            ..Summary::default()
        };
        assert!(failed
            .render(false)
            .contains("failed     1 (first: timed out)\n"));
    }
}
