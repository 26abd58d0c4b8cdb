//! What accepting one body holds at its peak beyond the body and its records (the
//! parsed notification, the flat events): at most
//! [`MAX_WORKING_BYTES_PER_BODY_BYTE`] times the body, whatever its shape. The
//! acceptance step runs on an async worker without yielding, so at most one body
//! per worker thread is being accepted at once: this bounds what the process holds
//! beyond the byte budget (`server.max_in_flight_bytes`), which counts the body and
//! the records. Measured with a counting allocator, so this file is its own test
//! binary with a single test (other threads would be counted too).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use webhook_connector::config::routing_file;
use webhook_connector::entity::{Entity, BOOKING, CUSTOMER};
use webhook_connector::pipeline::{accept, Input, Limits};
use webhook_connector::privacy::Key;

/// The bound the docs state (docs: the byte budget).
const MAX_WORKING_BYTES_PER_BODY_BYTE: usize = 32;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

/// The system allocator, counting the bytes live and their peak.
struct Counting;

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Both blocks may exist while the old one is copied.
        let now = LIVE.fetch_add(new_size, Ordering::Relaxed) + new_size;
        PEAK.fetch_max(now, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const LIMITS: Limits = Limits {
    max_body_bytes: 262_144,
    max_changes: 100,
    max_request_bytes: usize::MAX,
};

/// A body of `entity` with `state` as its fields and `changes` changes, filled with
/// `member` (given its index) up to about `bytes`.
fn body(
    entity: &Entity,
    changes: usize,
    bytes: usize,
    member: impl Fn(usize) -> String,
) -> Vec<u8> {
    let changes: Vec<String> = (0..changes)
        .map(|i| {
            format!(r#"{{"ChangeType":"CustomerEmailChanged","OldValue":{i},"NewValue":"x"}}"#)
        })
        .collect();
    let head = format!(
        r#"{{"ChangeDateTime":"2018-11-16T10:46:20Z","Changes":[{}],"{}":{{"Id":1"#,
        changes.join(","),
        entity.body_key
    );
    let mut text = head;
    let mut i = 0;
    while text.len() + 64 < bytes {
        text.push(',');
        text.push_str(&member(i));
        i += 1;
    }
    text.push_str("}}");
    text.into_bytes()
}

#[test]
fn accepting_a_body_holds_a_bounded_multiple_of_it_beyond_its_records() {
    let key = Arc::new(Key::new("working-memory-test-key-of-32-bytes-or-more").unwrap());
    let routes = std::fs::read_to_string("config/routes.toml").unwrap();
    let table = routing_file::parse(&routes, "config/routes.toml", Some(&key)).unwrap();
    let max = LIMITS.max_body_bytes;
    // (name, entity, changes, the n-th member of its state)
    type Member = fn(usize) -> String;
    let shapes: [(&str, &'static Entity, usize, Member); 8] = [
        ("tiny customer fields", &CUSTOMER, 1, |i| {
            format!(r#""F{i}":1"#)
        }),
        ("tiny fields, 100 changes", &CUSTOMER, 100, |i| {
            format!(r#""F{i}":1"#)
        }),
        ("empty strings", &CUSTOMER, 1, |i| format!(r#""F{i}":"""#)),
        ("one-letter names", &CUSTOMER, 1, |i| {
            format!(r#""{}{i}":1"#, char::from(b'a' + (i % 26) as u8))
        }),
        ("tiny arrays", &CUSTOMER, 1, |i| format!(r#""A{i}":[]"#)),
        ("tiny booking fields", &BOOKING, 1, |i| {
            format!(r#""F{i}":1"#)
        }),
        ("tiny nested booking objects", &BOOKING, 1, |i| {
            format!(r#""O{i}":{{"a":1,"b":2}}"#)
        }),
        ("nested booking, 100 changes", &BOOKING, 100, |i| {
            format!(r#""O{i}":{{"a":{{"b":1}}}}"#)
        }),
    ];
    let seed = std::fs::read("tests/fixtures/seed_sample.json").unwrap();
    let shapes = (shapes.into_iter())
        .map(|(name, entity, changes, member)| (name, entity, body(entity, changes, max, member)))
        .chain([("seed sample", &CUSTOMER, seed)]);
    let mut report = Vec::new();
    for (name, entity, body) in shapes {
        assert!(body.len() <= max, "{name}: {} bytes", body.len());
        let before = LIVE.load(Ordering::Relaxed);
        PEAK.store(before, Ordering::Relaxed);
        let accepted = accept(Input {
            body: &body,
            entity,
            received_at: chrono::Utc::now(),
            limits: &LIMITS,
            table: &table,
        })
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let peak = PEAK.load(Ordering::Relaxed) - before;
        let records = accepted.record_bytes;
        drop(accepted);
        let working = peak.saturating_sub(records);
        let ratio = working as f64 / body.len() as f64;
        report.push(format!(
            "{name}: body {} B, peak {peak} B, records {records} B, working {ratio:.1}x",
            body.len()
        ));
        assert!(
            working <= MAX_WORKING_BYTES_PER_BODY_BYTE * body.len(),
            "{name}: working memory {working} B is {ratio:.1} times the body\n{}",
            report.join("\n")
        );
    }
    println!("{}", report.join("\n"));
}
