//! The bad-input corpus of `tests/fixtures/bad/cases.toml`: each request gets its
//! documented status and a JSON error body, nothing reaches Kafka, and the
//! connector is still ready afterwards.

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

    let topic = unique_topic("corpus");
    create_topics(&[&topic]).await;
    let mut settings = test_settings();
    settings.webhook.secrets = vec![SECRET.into()];
    settings.server.max_body_bytes = 65536;
    let connector = start_connector(
        settings,
        &routes_toml(&topic, &[("all", &["*"], &[&topic])]),
    )
    .await;
    let client = reqwest::Client::new();

    let mut failures = Vec::new();
    for case in &corpus.case {
        let body = std::fs::read(dir.join(&case.body)).unwrap();
        let mut request = client.post(connector.endpoint());
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
                "{}: expected {} {} {:?}, got {} {}",
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

    // Still ready, and the only events in the topic are those of one valid request.
    let ready = get_json(&format!("{}/readyz", connector.url)).await;
    assert_eq!(ready.status, 200, "{:?}", ready.json);
    let body = seed_sample();
    let valid = post(
        &connector.endpoint(),
        body.clone(),
        &[(SIGNATURE_HEADER, &sign(SECRET, &body))],
    )
    .await;
    assert_eq!(valid.status, 200, "{:?}", valid.json);
    read_exactly(&topic, 4);
    connector.stop().await;
}
