//! A steady load of distinct signed or unsigned notifications, each request's
//! outcome kept (when it started, how it ended, its event ids), and the checks
//! made on outcomes: every 200's events are in Kafka, every outcome passes.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use webhook_connector::ingress::signature::{sign, SIGNATURE_HEADER};

use super::kafka::read_all_before_now_on;

/// One request of a load run.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub started: Instant,
    pub elapsed: Duration,
    /// `None` when no HTTP answer came (connection refused or reset, or no answer
    /// within the client's timeout): then `failure` says why.
    pub status: Option<u16>,
    pub event_ids: Vec<String>,
    /// The `error` code of an error answer.
    pub error: String,
    /// The `message` of an error answer.
    pub message: String,
    /// Why no HTTP answer came.
    pub failure: Option<String>,
}

impl Outcome {
    pub fn ended(&self) -> Instant {
        self.started + self.elapsed
    }

    /// Whether it started before `at` and ended after it.
    pub fn spans(&self, at: Instant) -> bool {
        self.started < at && self.ended() > at
    }

    /// Whether it is a 200, or a 503 with one of `codes`.
    pub fn is_200_or_503(&self, codes: &[&str]) -> bool {
        match self.status {
            Some(200) => true,
            Some(503) => codes.contains(&self.error.as_str()),
            _ => false,
        }
    }
}

/// Who sends: `clients` concurrent senders of distinct two-change notifications
/// to `endpoint`, signed with `secret` when set.
#[derive(Debug, Clone)]
pub struct Senders {
    pub endpoint: String,
    pub clients: usize,
    pub secret: Option<String>,
}

impl Senders {
    pub fn unsigned(endpoint: String, clients: usize) -> Self {
        Senders {
            endpoint,
            clients,
            secret: None,
        }
    }
}

/// Runs `senders` until `stop` is set; returns every request's outcome.
async fn run_load(senders: Senders, stop: Arc<AtomicBool>) -> Vec<Outcome> {
    static NEXT_CUSTOMER: AtomicI64 = AtomicI64::new(1);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..senders.clients {
        let (http, senders, stop) = (http.clone(), senders.clone(), Arc::clone(&stop));
        tasks.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let customer = NEXT_CUSTOMER.fetch_add(1, Ordering::Relaxed);
                let body = json!({
                    "ChangeDateTime": "2018-11-16T10:46:20.7741026Z",
                    "Customer": {"Id": customer, "Email": "x@example.com"},
                    "Changes": [
                        {"ChangeType": "CustomerEmailChanged", "OldValue": "a", "NewValue": "b"},
                        {"ChangeType": "CustomerSmsChanged", "OldValue": "1", "NewValue": "2"},
                    ],
                })
                .to_string();
                let mut request = http
                    .post(&senders.endpoint)
                    .header("content-type", "application/json");
                if let Some(secret) = &senders.secret {
                    request = request.header(SIGNATURE_HEADER, sign(secret, body.as_bytes()));
                }
                let started = Instant::now();
                let response = request.body(body).send().await;
                let outcome = match response {
                    Ok(response) => answered(started, response).await,
                    Err(error) => not_answered(started, &error),
                };
                if outcome.status.is_none() {
                    // Refused while the connector is down: do not spin.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                outcomes.push(outcome);
            }
            outcomes
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("a load client does not panic"));
    }
    all
}

/// The outcome of a request started at `started` and answered with `response`.
async fn answered(started: Instant, response: reqwest::Response) -> Outcome {
    let status = response.status().as_u16();
    let body = response.bytes().await;
    let elapsed = started.elapsed();
    let json: serde_json::Value = match &body {
        Ok(bytes) => serde_json::from_slice(bytes).unwrap_or_default(),
        Err(_) => serde_json::Value::Null,
    };
    let text = |field: &str| json[field].as_str().unwrap_or_default().to_string();
    let event_ids = json["event_ids"]
        .as_array()
        .map(|a| a.iter().map(|i| i.as_str().unwrap().to_string()).collect())
        .unwrap_or_default();
    Outcome {
        started,
        elapsed,
        // An answer whose body broke off is no answer.
        status: body.is_ok().then_some(status),
        event_ids,
        error: text("error"),
        message: text("message"),
        failure: body
            .err()
            .map(|e| format!("{status}, then the body broke off: {e:?}")),
    }
}

/// The outcome of a request started at `started` that got no answer.
fn not_answered(started: Instant, error: &reqwest::Error) -> Outcome {
    Outcome {
        started,
        elapsed: started.elapsed(),
        status: None,
        event_ids: Vec::new(),
        error: String::new(),
        message: String::new(),
        failure: Some(format!("{error:?}")),
    }
}

/// Asserts every 200 among `outcomes` has both its events in `topic`.
pub fn assert_acknowledged_are_in_kafka(bootstrap: &str, topic: &str, outcomes: &[&Outcome]) {
    let in_kafka: BTreeSet<String> = read_all_before_now_on(bootstrap, topic)
        .into_iter()
        .map(|r| r.value["event_id"].as_str().unwrap().to_string())
        .collect();
    let mut checked = 0;
    for outcome in outcomes.iter().filter(|o| o.status == Some(200)) {
        assert_eq!(outcome.event_ids.len(), 2, "{outcome:?}");
        for id in &outcome.event_ids {
            assert!(
                in_kafka.contains(id),
                "answered 200 but {id} is not in Kafka: {outcome:?}"
            );
            checked += 1;
        }
    }
    assert!(checked > 0, "no request was answered 200");
}

/// The outcomes that started at an instant `when` holds for.
pub fn started<'a>(all: &[&'a Outcome], when: impl Fn(Instant) -> bool) -> Vec<&'a Outcome> {
    all.iter().copied().filter(|o| when(o.started)).collect()
}

/// Counts of outcomes by status and error (or by why no answer came).
pub fn summary(outcomes: &[&Outcome]) -> String {
    let mut counts = std::collections::BTreeMap::new();
    for o in outcomes {
        let failure = o.failure.as_deref().unwrap_or_default();
        let key = format!("{:?} {} {}{failure}", o.status, o.error, o.message);
        *counts.entry(key).or_insert(0) += 1;
    }
    format!("{counts:#?}")
}

/// Asserts every outcome passes `check`, showing a few that do not.
pub fn assert_all(outcomes: &[&Outcome], what: &str, check: impl Fn(&Outcome) -> bool) {
    let failing: Vec<&&Outcome> = outcomes.iter().filter(|o| !check(o)).collect();
    assert!(
        failing.is_empty(),
        "{what}: {} of {} fail, e.g. {:#?}\n{}",
        failing.len(),
        outcomes.len(),
        &failing[..failing.len().min(3)],
        summary(outcomes)
    );
}

/// A load of [`run_load`] senders, flowing.
pub struct Load {
    stop: Arc<AtomicBool>,
    senders: tokio::task::JoinHandle<Vec<Outcome>>,
}

impl Load {
    /// Starts `senders`.
    pub fn start(senders: Senders) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let senders = tokio::spawn(run_load(senders, Arc::clone(&stop)));
        Load { stop, senders }
    }

    /// Stops the senders; every request's outcome.
    pub async fn stop(self) -> Vec<Outcome> {
        self.stop.store(true, Ordering::Relaxed);
        self.senders.await.unwrap()
    }
}
