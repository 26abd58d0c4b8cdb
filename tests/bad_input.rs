//! The bad-input corpus of `tests/fixtures/bad/cases.toml`: each request, to the
//! customer or the booking endpoint, gets its documented status and a JSON error
//! body, nothing reaches Kafka, and the connector is still ready afterwards. Its
//! connector takes records of at most 100000 bytes (`message.max.bytes`), and
//! pseudonymises every customer field of the change type `CorpusPseudonymised`.

mod common;

use common::*;
use serde::Deserialize;
use webhook_connector::ingress::signature::{sign, SIGNATURE_HEADER};

const SECRET: &str = "corpus-secret";

#[derive(Deserialize)]
struct Corpus {
    case: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    body: String,
    status: u16,
    error: String,
    message: Option<String>,
    content_type: Option<String>,
    signature: Option<String>,
    /// The webhook posted to: `customer` (default) or `booking`.
    endpoint: Option<String>,
}

fn signature_for(case: &Case, body: &[u8]) -> Option<String> {
    match case.signature.as_deref().unwrap_or("valid") {
        "valid" => Some(sign(SECRET, body)),
        "missing" => None,
        "wrong-secret" => Some(sign("not-the-secret", body)),
        "other-body" => Some(sign(SECRET, b"{}")),
        "malformed" => Some(format!("sha256={}", &sign(SECRET, body)[5..])),
        other => panic!("{}: unknown signature kind {other:?}", case.name),
    }
}

#[tokio::test]
async fn every_bad_request_gets_its_documented_answer_and_produces_nothing() {
    let dir = std::path::Path::new("tests/fixtures/bad");
    let corpus: Corpus =
        toml::from_str(&std::fs::read_to_string(dir.join("cases.toml")).unwrap()).unwrap();
    assert!(
        corpus.case.len() >= 40,
        "the corpus has {} cases",
        corpus.case.len()
    );
    let to_booking = |case: &&Case| case.endpoint.as_deref() == Some("booking");
    let bookings = corpus.case.iter().filter(to_booking).count();
    assert!(bookings >= 15, "the corpus has {bookings} booking cases");

    let [topic, pseudonymised] = new_topics(["corpus", "corpus-pseudonymised"]).await;
    let mut settings = test_settings();
    settings.webhook.secrets = vec![SECRET.into()];
    settings.server.max_body_bytes = 65536;
    // Records larger than this are refused before anything is enqueued.
    (settings.kafka.properties).insert("message.max.bytes".into(), "100000".into());
    settings.privacy.key = Some("corpus-privacy-key-of-at-least-32-bytes".into());
    let mut routes = routes_toml(&topic, &[("all", &["*"], &[&topic])]);
    routes.push_str(&format!(
        "\n[[routes]]\nname = \"pseudonymised\"\nchange_types = [\"CorpusPseudonymised\"]\n\
         topics = [{pseudonymised:?}]\npseudonymise = [\"customer_*\"]\n"
    ));
    let connector = start_connector(settings, &routes).await;
    let client = http_client();

    let mut failures = Vec::new();
    for case in &corpus.case {
        let body = std::fs::read(dir.join(&case.body)).unwrap();
        let endpoint = case.endpoint.as_deref().unwrap_or("customer");
        let mut request = client.post(connector.webhook(endpoint));
        request = request.header(
            "content-type",
            case.content_type.as_deref().unwrap_or("application/json"),
        );
        if let Some(signature) = signature_for(case, &body) {
            request = request.header(SIGNATURE_HEADER, signature);
        }
        let answer = answer(request.body(body).send().await.unwrap()).await;
        let message = answer.json["message"].as_str().unwrap_or_default();
        let expected_message = case.message.as_deref().unwrap_or_default();
        if answer.status != case.status
            || answer.json["error"] != case.error.as_str()
            || message.is_empty()
            || !message.contains(expected_message)
        {
            failures.push(format!(
                "{} (/webhooks/{endpoint}): expected {} {} {:?}, got {} {}",
                case.name, case.status, case.error, expected_message, answer.status, answer.json
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // Still ready, and the only events in the topic are those of one valid request
    // to each endpoint.
    let ready = get_json(&format!("{}/readyz", connector.url)).await;
    assert_eq!(ready.status, 200, "{:?}", ready.json);
    for (endpoint, body) in [("customer", seed_sample()), ("booking", booking_sample())] {
        let valid = post(
            &connector.webhook(endpoint),
            body.clone(),
            &[(SIGNATURE_HEADER, &sign(SECRET, &body))],
        )
        .await;
        assert_eq!(valid.status, 200, "{endpoint}: {:?}", valid.json);
    }
    let entities: Vec<Option<String>> = read_exactly(&topic, 6)
        .into_iter()
        .map(|record| record.headers["entity"].clone())
        .collect();
    let expected = [&["customer"; 4][..], &["booking"; 2]].concat();
    let expected: Vec<Option<String>> = expected.iter().map(|e| Some(e.to_string())).collect();
    assert_eq!(entities, expected);
    connector.stop().await;
}
