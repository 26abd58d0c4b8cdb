//! The routing file (the README's "Routing" section): TOML -> validated [`RoutingTable`].
//!
//! Every error names the file, the route (by position and name) and the key, and
//! says what to fix: unknown keys, missing or empty lists, unknown entities,
//! invalid globs, invalid Kafka topic names and duplicate route names are all
//! refused at load.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::entity::{self, Entity};
use crate::routing::{Route, RoutingTable};

/// Why a routing file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RoutingFileError {
    #[error("{file}: cannot read: {cause}")]
    Read { file: String, cause: std::io::Error },
    #[error("{file}: {location}: {message}")]
    Invalid {
        file: String,
        location: String,
        message: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoutesFile {
    unmatched: Option<toml::Value>,
    #[serde(default)]
    routes: Vec<toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnmatchedEntry {
    /// Topic for events no route matches.
    topic: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteEntry {
    /// Unique name, used in logs and errors.
    name: String,
    /// The entities (`customer`, `booking`) whose events the route takes; all
    /// when absent.
    entities: Option<Vec<String>>,
    /// Change types or glob patterns (`Customer*Marketing*Changed`).
    change_types: Vec<String>,
    /// Kafka topics the matching events are produced to.
    topics: Vec<String>,
}

/// A routing file as loaded: where it is, its text (to tell when it changes) and
/// the validated table.
#[derive(Debug, Clone)]
pub struct RoutingFile {
    pub path: PathBuf,
    pub text: String,
    pub table: RoutingTable,
}

/// Reads a routing file's text; the one place the file is read.
pub fn read(path: &Path) -> Result<String, RoutingFileError> {
    std::fs::read_to_string(path).map_err(|cause| RoutingFileError::Read {
        file: path.display().to_string(),
        cause,
    })
}

/// Reads and validates a routing file.
pub fn load(path: &Path) -> Result<RoutingFile, RoutingFileError> {
    let text = read(path)?;
    let table = parse(&text, &path.display().to_string())?;
    Ok(RoutingFile {
        path: path.to_path_buf(),
        text,
        table,
    })
}

/// Validates the text of a routing file; `file` names it in errors.
pub fn parse(text: &str, file: &str) -> Result<RoutingTable, RoutingFileError> {
    let invalid = |location: &str, message: String| RoutingFileError::Invalid {
        file: file.to_string(),
        location: location.to_string(),
        message,
    };
    let document: RoutesFile =
        toml::from_str(text).map_err(|e| invalid("file", toml_message(&e, Some(text))))?;

    let unmatched = document.unmatched.ok_or_else(|| {
        invalid(
            "[unmatched]",
            "missing: add an [unmatched] table with a `topic` for events no route matches".into(),
        )
    })?;
    let unmatched: UnmatchedEntry = unmatched
        .try_into()
        .map_err(|e: toml::de::Error| invalid("[unmatched]", toml_message(&e, None)))?;
    validate_topic(&unmatched.topic).map_err(|m| invalid("[unmatched].topic", m))?;

    let mut routes: Vec<Route> = Vec::with_capacity(document.routes.len());
    for (index, value) in document.routes.into_iter().enumerate() {
        let position = format!("routes[{index}]");
        let named = value
            .get("name")
            .and_then(|n| n.as_str())
            .map(|n| format!("{position} ({n:?})"))
            .unwrap_or(position);
        let entry: RouteEntry = value
            .try_into()
            .map_err(|e: toml::de::Error| invalid(&named, toml_message(&e, None)))?;
        if entry.name.trim().is_empty() {
            return Err(invalid(
                &format!("{named}.name"),
                "must not be empty".into(),
            ));
        }
        if routes.iter().any(|r| r.name() == entry.name) {
            return Err(invalid(
                &format!("{named}.name"),
                "duplicate route name: each route needs its own name".into(),
            ));
        }
        if entry.change_types.is_empty() {
            return Err(invalid(
                &format!("{named}.change_types"),
                "empty: list at least one change type or pattern".into(),
            ));
        }
        if let Some(pattern) = entry.change_types.iter().find(|p| p.is_empty()) {
            return Err(invalid(
                &format!("{named}.change_types"),
                format!("{pattern:?} is empty: give a change type or pattern"),
            ));
        }
        if entry.topics.is_empty() {
            return Err(invalid(
                &format!("{named}.topics"),
                "empty: list at least one topic".into(),
            ));
        }
        for topic in &entry.topics {
            validate_topic(topic).map_err(|m| invalid(&format!("{named}.topics"), m))?;
        }
        let entities = (entry.entities.as_deref().map(entities_named).transpose())
            .map_err(|m| invalid(&format!("{named}.entities"), m))?;
        let mut route = Route::new(entry.name, entry.change_types, entry.topics).map_err(|e| {
            invalid(
                &format!("{named}.change_types"),
                format!("invalid glob: {e}"),
            )
        })?;
        if let Some(entities) = entities {
            route = route.for_entities(entities);
        }
        routes.push(route);
    }
    Ok(RoutingTable::new(routes, unmatched.topic))
}

/// The entities of a route's `entities` list: known names, at least one, each once.
fn entities_named(names: &[String]) -> Result<Vec<&'static Entity>, String> {
    if names.is_empty() {
        return Err(format!(
            "empty: name at least one of {}, or leave the key out for all",
            entity::names()
        ));
    }
    let mut entities: Vec<&'static Entity> = Vec::with_capacity(names.len());
    for name in names {
        let found = entity::by_name(name)
            .ok_or_else(|| format!("unknown entity {name:?}: use {}", entity::names()))?;
        if entities.contains(&found) {
            return Err(format!("{name:?} is listed twice"));
        }
        entities.push(found);
    }
    Ok(entities)
}

/// Kafka's rule: 1 to 249 characters of `[a-zA-Z0-9._-]`, and not `.` or `..`.
pub(crate) fn validate_topic(topic: &str) -> Result<(), String> {
    if topic.is_empty() || topic.len() > 249 {
        return Err(format!(
            "invalid topic {topic:?}: a topic name has 1 to 249 characters"
        ));
    }
    if topic == "." || topic == ".." {
        return Err(format!(
            "invalid topic {topic:?}: `.` and `..` are not allowed"
        ));
    }
    if let Some(bad) = topic
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "invalid topic {topic:?}: {bad:?} is not allowed (use letters, digits, `.`, `_`, `-`)"
        ));
    }
    Ok(())
}

/// toml's message on one line, with "line L, column C" when it points into `text`.
fn toml_message(err: &toml::de::Error, text: Option<&str>) -> String {
    let message = err.message().trim().replace('\n', " ");
    match (err.span(), text) {
        (Some(span), Some(text)) if span.start <= text.len() => {
            let before = &text[..span.start];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}: {message}")
        }
        _ => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
        [unmatched]
        topic = "webhooks.unrouted"

        [[routes]]
        name = "contact-details"
        change_types = ["CustomerEmailChanged", "CustomerSmsChanged"]
        topics = ["customer.contact-details"]

        [[routes]]
        name = "marketing-opt-ins"
        change_types = ["Customer*Marketing*Changed"]
        topics = ["customer.marketing-opt-ins", "customer.audit"]
    "#;

    fn error_of(text: &str) -> String {
        parse(text, "routes.toml").unwrap_err().to_string()
    }

    #[test]
    fn loads_the_design_example() {
        let table = parse(EXAMPLE, "routes.toml").unwrap();
        assert_eq!(table.routes().len(), 2);
        assert_eq!(table.unmatched_topic(), "webhooks.unrouted");
        assert_eq!(
            table.topics_for(
                &crate::entity::CUSTOMER,
                Some("CustomerGroupEmailMarketingOptinChanged")
            ),
            ["customer.marketing-opt-ins", "customer.audit"]
        );
    }

    #[test]
    fn loads_the_shipped_example_file() {
        let loaded = load(Path::new("config/routes.toml")).unwrap();
        assert_eq!(
            loaded.text,
            std::fs::read_to_string("config/routes.toml").unwrap()
        );
        let table = loaded.table;
        assert!(table.routes().len() >= 3);
        assert_ne!(
            table.topics_for(&crate::entity::CUSTOMER, Some("CustomerEmailChanged")),
            [table.unmatched_topic()]
        );
    }

    #[test]
    fn requires_the_unmatched_topic() {
        let text = EXAMPLE.replace("[unmatched]\n        topic = \"webhooks.unrouted\"", "");
        let err = error_of(&text);
        assert!(
            err.starts_with("routes.toml: [unmatched]: missing"),
            "{err}"
        );
    }

    #[test]
    fn names_file_route_and_key_for_unknown_keys() {
        let text = EXAMPLE.replace("topics = [\"customer.contact-details\"]", "topic = [\"x\"]");
        let err = error_of(&text);
        assert!(
            err.starts_with("routes.toml: routes[0] (\"contact-details\"): unknown field `topic`"),
            "{err}"
        );
        let err = error_of(&format!("{EXAMPLE}\n[extra]\nx = 1\n"));
        assert!(err.contains("unknown field `extra`"), "{err}");
    }

    #[test]
    fn refuses_empty_lists() {
        let err = error_of(&EXAMPLE.replace("[\"Customer*Marketing*Changed\"]", "[]"));
        assert!(
            err.contains("routes[1] (\"marketing-opt-ins\").change_types: empty"),
            "{err}"
        );
        let err = error_of(&EXAMPLE.replace("[\"customer.contact-details\"]", "[]"));
        assert!(
            err.contains("routes[0] (\"contact-details\").topics: empty"),
            "{err}"
        );
    }

    #[test]
    fn refuses_invalid_globs() {
        let err = error_of(&EXAMPLE.replace("Customer*Marketing*Changed", "Customer[Marketing"));
        assert!(err.contains(".change_types: invalid glob"), "{err}");
    }

    #[test]
    fn refuses_duplicate_names() {
        let err = error_of(&EXAMPLE.replace("marketing-opt-ins\"", "contact-details\""));
        assert!(
            err.contains("routes[1] (\"contact-details\").name: duplicate route name"),
            "{err}"
        );
    }

    #[test]
    fn refuses_missing_keys_and_wrong_types() {
        let err = error_of(&EXAMPLE.replace("name = \"contact-details\"", ""));
        assert!(err.contains("routes[0]: missing field `name`"), "{err}");
        let err = error_of(&EXAMPLE.replace("[\"customer.contact-details\"]", "\"one\""));
        assert!(
            err.contains("routes[0] (\"contact-details\"): invalid type"),
            "{err}"
        );
    }

    #[test]
    fn refuses_invalid_topic_names() {
        for (topic, why) in [
            ("bad topic", "' ' is not allowed"),
            ("..", "not allowed"),
            ("", "1 to 249"),
            (&"t".repeat(250), "1 to 249"),
        ] {
            let err = error_of(&EXAMPLE.replace("customer.audit", topic));
            assert!(
                err.contains("routes[1] (\"marketing-opt-ins\").topics: invalid topic"),
                "{err}"
            );
            assert!(err.contains(why), "{err}");
        }
        let err = error_of(&EXAMPLE.replace("webhooks.unrouted", "a/b"));
        assert!(err.contains("[unmatched].topic: invalid topic"), "{err}");
        assert!(validate_topic(&"t".repeat(249)).is_ok());
    }

    #[test]
    fn a_route_may_name_its_entities_and_they_are_checked() {
        use crate::entity::{BOOKING, CUSTOMER};
        let with = |entities: &str| {
            EXAMPLE.replace(
                "name = \"contact-details\"",
                &format!("name = \"contact-details\"\nentities = {entities}"),
            )
        };
        let table = parse(&with("[\"booking\"]"), "routes.toml").unwrap();
        assert_eq!(table.routes()[0].entities(), Some(&[&BOOKING][..]));
        assert_eq!(table.routes()[1].entities(), None);
        assert_eq!(
            table.topics_for(&CUSTOMER, Some("CustomerEmailChanged")),
            ["webhooks.unrouted"]
        );
        for (entities, why) in [
            (
                "[]",
                "entities: empty: name at least one of customer, booking",
            ),
            (
                "[\"Booking\"]",
                "entities: unknown entity \"Booking\": use customer, booking",
            ),
            (
                "[\"booking\", \"booking\"]",
                "entities: \"booking\" is listed twice",
            ),
        ] {
            let err = error_of(&with(entities));
            assert!(
                err.starts_with(&format!(
                    "routes.toml: routes[0] (\"contact-details\").{why}"
                )),
                "{err}"
            );
        }
    }

    #[test]
    fn reports_syntax_errors_with_the_file() {
        let err = error_of("[[routes]\nname=");
        assert!(err.starts_with("routes.toml: file:"), "{err}");
    }
}
