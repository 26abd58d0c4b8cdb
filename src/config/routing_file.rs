//! The routing file (docs/routing.md): TOML -> validated [`RoutingTable`].
//!
//! Every error names the file, the route (by position and name) and the key, and
//! says what to fix: unknown keys, missing or empty lists, unknown entities,
//! invalid globs, invalid Kafka topic names, duplicate route names, field rules
//! that contradict themselves, name the envelope or pseudonymise without a key,
//! two record shapes for one topic and a topic used for two kinds of records are all
//! refused at load. A field rule matching no field the contract names is a
//! warning ([`RoutingTable::warnings`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::entity::{self, Entity, ENTITIES};
use crate::normalize::{envelope_keys, STATE_ENVELOPE};
use crate::privacy::{FieldRules, Key, Treatment};
use crate::routing::{ChangeTypes, Route, RoutingTable, StateTopic};

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
    #[serde(default)]
    state: Vec<toml::Value>,
    erasure: Option<toml::Value>,
}

/// `include`, `exclude` and `pseudonymise`: glob lists over flat field names
/// (keys of a route or a state topic).
struct RulesEntry {
    include: Option<Vec<String>>,
    exclude: Vec<String>,
    pseudonymise: Vec<String>,
}

impl RulesEntry {
    fn is_empty(&self) -> bool {
        self.include.is_none() && self.exclude.is_empty() && self.pseudonymise.is_empty()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StateEntry {
    /// The entity whose state the topic holds.
    entity: String,
    /// The compacted topic.
    topic: String,
    /// Change types (globs) that delete the entity; `<Body>*Deleted` when absent.
    deletions: Option<Vec<String>>,
    include: Option<Vec<String>>,
    #[serde(default)]
    exclude: Vec<String>,
    #[serde(default)]
    pseudonymise: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ErasureEntry {
    /// Where `forget` writes erasure events.
    topic: String,
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
    /// Field rules: which fields its topics receive, which pseudonymised.
    include: Option<Vec<String>>,
    #[serde(default)]
    exclude: Vec<String>,
    #[serde(default)]
    pseudonymise: Vec<String>,
}

/// A routing file as loaded: where it is, its text (to tell when it changes) and
/// the validated table.
#[derive(Debug, Clone)]
pub struct RoutingFile {
    pub path: PathBuf,
    pub text: String,
    pub table: RoutingTable,
    /// `privacy.key`, for the rules of a reloaded file.
    pub key: Option<Arc<Key>>,
}

/// Reads a routing file's text; the one place the file is read.
pub fn read(path: &Path) -> Result<String, RoutingFileError> {
    std::fs::read_to_string(path).map_err(|cause| RoutingFileError::Read {
        file: path.display().to_string(),
        cause,
    })
}

/// Reads and validates a routing file; `key` is `privacy.key`, which rules that
/// pseudonymise need.
pub fn load(path: &Path, key: Option<&Arc<Key>>) -> Result<RoutingFile, RoutingFileError> {
    let text = read(path)?;
    let table = parse(&text, &path.display().to_string(), key)?;
    Ok(RoutingFile {
        path: path.to_path_buf(),
        text,
        table,
        key: key.cloned(),
    })
}

/// Validates the text of a routing file; `file` names it in errors.
pub fn parse(
    text: &str,
    file: &str,
    key: Option<&Arc<Key>>,
) -> Result<RoutingTable, RoutingFileError> {
    let invalid = |location: &str, message: String| RoutingFileError::Invalid {
        file: file.to_string(),
        location: location.to_string(),
        message,
    };
    let document: RoutesFile =
        toml::from_str(text).map_err(|e| invalid("file", toml_message(&e, Some(text))))?;
    let unmatched = unmatched_topic(document.unmatched)
        .map_err(|(at, message)| invalid(&format!("[unmatched]{at}"), message))?;

    let mut warnings: Vec<String> = Vec::new();
    let mut routes: Vec<Route> = Vec::with_capacity(document.routes.len());
    for (index, value) in document.routes.into_iter().enumerate() {
        let named = named(&value, format!("routes[{index}]"), "name");
        let route = route(value, &named, &routes, &unmatched, key, &mut warnings)
            .map_err(|(at, message)| invalid(&format!("{named}{at}"), message))?;
        routes.push(route);
    }
    let table = RoutingTable::new(routes, unmatched);

    let mut states: Vec<StateTopic> = Vec::with_capacity(document.state.len());
    for (index, value) in document.state.into_iter().enumerate() {
        let named = named(&value, format!("state[{index}]"), "entity");
        let state = state_topic(value, &named, &table, &states, key, &mut warnings)
            .map_err(|(at, message)| invalid(&format!("{named}{at}"), message))?;
        states.push(state);
    }
    let erasure_topic = (document.erasure)
        .map(|value| erasure_topic(value, &table, &states))
        .transpose()
        .map_err(|(at, message)| invalid(&format!("[erasure]{at}"), message))?;
    Ok(table
        .with_privacy(states, erasure_topic, warnings)
        .with_event_id_key(key))
}

/// `position` with the entry's `key` (its name or entity) when it has one:
/// `routes[2] ("contact")`.
fn named(value: &toml::Value, position: String, key: &str) -> String {
    let name = value.get(key).and_then(|n| n.as_str());
    name.map_or(position.clone(), |n| format!("{position} ({n:?})"))
}

/// Where in an entry something is wrong (`.topic`, empty for the entry) and why.
type EntryError = (String, String);

/// `.key` and the message, for an error in an entry's `key`.
fn at(key: &str, message: String) -> EntryError {
    (format!(".{key}"), message)
}

/// The `[unmatched]` table's topic; the table is required.
fn unmatched_topic(value: Option<toml::Value>) -> Result<String, EntryError> {
    let value = value.ok_or_else(|| {
        let message =
            "missing: add an [unmatched] table with a `topic` for events no route matches";
        (String::new(), message.to_string())
    })?;
    let entry: UnmatchedEntry = value
        .try_into()
        .map_err(|e: toml::de::Error| (String::new(), toml_message(&e, None)))?;
    validate_topic(&entry.topic).map_err(|m| at("topic", m))?;
    Ok(entry.topic)
}

/// A `[[routes]]` entry (`named` in warnings), checked against the `earlier`
/// routes and the `unmatched` topic.
fn route(
    value: toml::Value,
    named: &str,
    earlier: &[Route],
    unmatched: &str,
    key: Option<&Arc<Key>>,
    warnings: &mut Vec<String>,
) -> Result<Route, EntryError> {
    let entry: RouteEntry = value
        .try_into()
        .map_err(|e: toml::de::Error| (String::new(), toml_message(&e, None)))?;
    check_route_lists(&entry, earlier)?;
    let entities = (entry.entities.as_deref().map(entities_named).transpose())
        .map_err(|m| at("entities", m))?;
    let applies_to = entities.clone().unwrap_or_else(|| ENTITIES.to_vec());
    let rules = RulesEntry {
        include: entry.include,
        exclude: entry.exclude,
        pseudonymise: entry.pseudonymise,
    };
    let (envelope, known) = route_fields(&applies_to);
    let rules = field_rules(rules, &envelope, &known, key).map_err(|(list, m)| at(list, m))?;
    let mut route = Route::new(entry.name, entry.change_types, entry.topics)
        .map_err(|e| at("change_types", format!("invalid glob: {e}")))?;
    if let Some(entities) = entities {
        route = route.for_entities(entities);
    }
    if let Some((rules, unmatched)) = rules {
        warn_unmatched(warnings, named, unmatched);
        warn_guessable_values(warnings, named, &rules, key);
        route = route.with_rules(rules);
    }
    one_record_shape_per_topic(&route, earlier, unmatched).map_err(|m| at("topics", m))?;
    Ok(route)
}

/// A route's name (set, and not one of the `earlier` routes'), change types and
/// topics (at least one each, none empty, every topic a valid name).
fn check_route_lists(entry: &RouteEntry, earlier: &[Route]) -> Result<(), EntryError> {
    if entry.name.trim().is_empty() {
        return Err(at("name", "must not be empty".into()));
    }
    if earlier.iter().any(|r| r.name() == entry.name) {
        return Err(at(
            "name",
            "duplicate route name: each route needs its own name".into(),
        ));
    }
    if entry.change_types.is_empty() {
        return Err(at(
            "change_types",
            "empty: list at least one change type or pattern".into(),
        ));
    }
    if let Some(pattern) = entry.change_types.iter().find(|p| p.is_empty()) {
        return Err(at(
            "change_types",
            format!("{pattern:?} is empty: give a change type or pattern"),
        ));
    }
    if entry.topics.is_empty() {
        return Err(at("topics", "empty: list at least one topic".into()));
    }
    for topic in &entry.topics {
        validate_topic(topic).map_err(|m| at("topics", m))?;
    }
    Ok(())
}

/// Warns when a route's `rules` hide `old_value` or `new_value` but event ids,
/// hashes of them, are not keyed.
fn warn_guessable_values(
    warnings: &mut Vec<String>,
    named: &str,
    rules: &FieldRules,
    key: Option<&Arc<Key>>,
) {
    let hides_values = ["old_value", "new_value"]
        .iter()
        .any(|field| rules.treatment(field) != Treatment::Keep);
    if hides_values && !key.is_some_and(|k| k.keys_event_ids()) {
        warnings.push(format!(
            "{named}: its topics do not receive old_value and new_value as sent, but event_id is a hash of them: whoever sees it can test guesses of them; set privacy.keyed_event_ids = true"
        ));
    }
}

/// A `[[state]]` entry (`named` in messages and warnings), checked against the
/// routes' `table` and the `earlier` state topics.
fn state_topic(
    value: toml::Value,
    named: &str,
    table: &RoutingTable,
    earlier: &[StateTopic],
    key: Option<&Arc<Key>>,
    warnings: &mut Vec<String>,
) -> Result<StateTopic, EntryError> {
    let entry: StateEntry = value
        .try_into()
        .map_err(|e: toml::de::Error| (String::new(), toml_message(&e, None)))?;
    let entity = entity::by_name(&entry.entity).ok_or_else(|| {
        let message = format!("unknown entity {:?}: use {}", entry.entity, entity::names());
        at("entity", message)
    })?;
    if earlier.iter().any(|s| s.entity == entity) {
        let message = format!(
            "{:?} has a state topic already: one per entity",
            entity.name
        );
        return Err(at("entity", message));
    }
    validate_topic(&entry.topic).map_err(|m| at("topic", m))?;
    if table.all_topics().contains(entry.topic.as_str())
        || earlier.iter().any(|s| s.topic == entry.topic)
    {
        return Err(at(
            "topic",
            format!(
                "{:?} is already used: a state topic is compacted and holds state records only, give it a topic of its own",
                entry.topic
            ),
        ));
    }
    let deletions = entry
        .deletions
        .unwrap_or_else(|| vec![format!("{}*Deleted", entity.body_key)]);
    if deletions.is_empty() || deletions.iter().any(String::is_empty) {
        return Err(at(
            "deletions",
            "empty: list the change types that delete the entity, or leave the key out for the default".into(),
        ));
    }
    let deletions =
        ChangeTypes::new(deletions).map_err(|e| at("deletions", format!("invalid glob: {e}")))?;
    let known: Vec<&str> = entity.known.iter().map(|f| f.key).collect();
    let envelope: Vec<&str> = STATE_ENVELOPE
        .iter()
        .copied()
        .chain([entity.id_key])
        .collect();
    let rules = RulesEntry {
        include: entry.include,
        exclude: entry.exclude,
        pseudonymise: entry.pseudonymise,
    };
    let rules = field_rules(rules, &envelope, &known, key).map_err(|(list, m)| at(list, m))?;
    let rules = rules.map(|(rules, unmatched)| {
        warn_unmatched(warnings, named, unmatched);
        Arc::new(rules)
    });
    Ok(StateTopic {
        entity,
        topic: entry.topic,
        deletions,
        rules,
    })
}

/// The `[erasure]` table's topic, which no other table may use.
fn erasure_topic(
    value: toml::Value,
    table: &RoutingTable,
    states: &[StateTopic],
) -> Result<String, EntryError> {
    let entry: ErasureEntry = value
        .try_into()
        .map_err(|e: toml::de::Error| (String::new(), toml_message(&e, None)))?;
    validate_topic(&entry.topic).map_err(|m| at("topic", m))?;
    if table.all_topics().contains(entry.topic.as_str())
        || states.iter().any(|s| s.topic == entry.topic)
    {
        let message = format!(
            "{:?} is already used: erasure events need a topic of their own",
            entry.topic
        );
        return Err(at("topic", message));
    }
    Ok(entry.topic)
}

/// Compiled rules and their patterns that match no field the contract names.
type CheckedRules = (FieldRules, Vec<String>);

/// A route's or state topic's rules, compiled, with the patterns that match none
/// of `known`; `None` when it has none. Errors name the list.
fn field_rules(
    entry: RulesEntry,
    envelope: &[&str],
    known: &[&str],
    key: Option<&Arc<Key>>,
) -> Result<Option<CheckedRules>, (&'static str, String)> {
    if entry.is_empty() {
        return Ok(None);
    }
    let rules = FieldRules::new(
        entry.include,
        entry.exclude,
        entry.pseudonymise,
        envelope,
        key,
    )
    .map_err(|e| (e.list, e.message))?;
    let unmatched = (rules.unmatched_patterns(known).into_iter())
        .map(|(list, pattern)| format!("{list}: {pattern:?}"))
        .collect();
    Ok(Some((rules, unmatched)))
}

/// The envelope and the contract's other fields of the events of `entities`.
fn route_fields(entities: &[&'static Entity]) -> (Vec<&'static str>, Vec<&'static str>) {
    let mut envelope: Vec<&str> = entities.iter().flat_map(|e| envelope_keys(e)).collect();
    envelope.sort_unstable();
    envelope.dedup();
    let known = ["old_value", "new_value"].into_iter();
    let known = known.chain(entities.iter().flat_map(|e| e.known.iter().map(|f| f.key)));
    (envelope, known.collect())
}

fn warn_unmatched(warnings: &mut Vec<String>, named: &str, unmatched: Vec<String>) {
    for pattern in unmatched {
        warnings.push(format!(
            "{named}: {pattern} matches no field the contract names (a typo, or a field of another entity?)"
        ));
    }
}

/// A topic has one record shape: every route naming it has the same rules, and the
/// unmatched topic, which takes whole events, gets no rules.
fn one_record_shape_per_topic(
    route: &Route,
    before: &[Route],
    unmatched: &str,
) -> Result<(), String> {
    for topic in route.topics() {
        if topic == unmatched && route.rules().is_some() {
            return Err(format!(
                "{topic:?} is the [unmatched] topic, which receives whole events: a route with field rules needs topics of its own"
            ));
        }
        let other = before.iter().find(|r| {
            r.topics().contains(topic)
                && match (r.rules(), route.rules()) {
                    (None, None) => false,
                    (Some(a), Some(b)) => !a.same_as(b),
                    _ => true,
                }
        });
        if let Some(other) = other {
            return Err(format!(
                "{topic:?} is also fed by route {:?} with other field rules (include, exclude, pseudonymise): a topic has one record shape, so give both routes the same rules or use another topic",
                other.name()
            ));
        }
    }
    Ok(())
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

    fn test_key() -> Arc<Key> {
        Arc::new(Key::new(&"k".repeat(32)).unwrap())
    }

    fn error_of(text: &str) -> String {
        parse(text, "routes.toml", None).unwrap_err().to_string()
    }

    #[test]
    fn loads_the_design_example() {
        let table = parse(EXAMPLE, "routes.toml", None).unwrap();
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
        let loaded = load(Path::new("config/routes.toml"), Some(&test_key())).unwrap();
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
        let table = parse(&with("[\"booking\"]"), "routes.toml", None).unwrap();
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

    /// EXAMPLE with `extra` added to the contact route, then `tail` appended.
    fn with_rules(extra: &str, tail: &str) -> String {
        let route = "topics = [\"customer.contact-details\"]";
        format!(
            "{}\n{tail}",
            EXAMPLE.replace(route, &format!("{route}\n{extra}"))
        )
    }

    fn rules_error(extra: &str, tail: &str) -> String {
        parse(&with_rules(extra, tail), "routes.toml", Some(&test_key()))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn field_rules_load_and_shape_their_topics_only() {
        let text = with_rules(
            "include = [\"new_value\", \"customer_email\"]\npseudonymise = [\"new_value\"]",
            "",
        );
        let table = parse(&text, "routes.toml", Some(&test_key())).unwrap();
        let rules = table.rules_for("customer.contact-details").unwrap();
        assert_eq!(rules.treatment("customer_surname"), Treatment::Remove);
        assert_eq!(rules.treatment("new_value"), Treatment::Pseudonymise);
        assert!(table.rules_for("customer.audit").is_none());
        // The values are hidden but the plain event id is a hash of them.
        assert_eq!(table.warnings().len(), 1, "{:?}", table.warnings());
        assert!(table.warnings()[0].contains("event_id is a hash of them"));
        assert!(table.event_id_key().is_none());
        let keyed = Arc::new(Key::new(&"k".repeat(32)).unwrap().keying_event_ids(true));
        let table = parse(&text, "routes.toml", Some(&keyed)).unwrap();
        assert!(table.warnings().is_empty(), "{:?}", table.warnings());
        assert!(table.event_id_key().is_some());
        // No rules at all: no rules object, whole events.
        let table = parse(EXAMPLE, "routes.toml", None).unwrap();
        assert!(table.routes().iter().all(|r| r.rules().is_none()));
    }

    #[test]
    fn field_rule_errors_name_file_route_and_key() {
        let at = "routes.toml: routes[0] (\"contact-details\")";
        for (extra, key, why) in [
            (
                "exclude = [\"customer_id\"]",
                "exclude",
                "\"customer_id\" is part of the envelope",
            ),
            (
                "include = [\"event_id\"]",
                "include",
                "\"event_id\" is part of the envelope",
            ),
            (
                "pseudonymise = [\"received_at\"]",
                "pseudonymise",
                "part of the envelope",
            ),
            (
                "exclude = [\"customer_*\"]\npseudonymise = [\"customer_email\"]",
                "pseudonymise",
                "also removed by exclude",
            ),
            (
                "include = [\"customer_email\"]\nexclude = [\"customer_email\"]",
                "include",
                "also removed by exclude",
            ),
            (
                "include = [\"customer_email\"]\npseudonymise = [\"new_value\"]",
                "pseudonymise",
                "not kept by include",
            ),
            ("exclude = [\"customer_[\"]", "exclude", "invalid glob"),
            ("exclude = [\"a\", \"a\"]", "exclude", "listed twice"),
            ("exclude = [\"\"]", "exclude", "empty pattern"),
            ("include = \"customer_email\"", "", "invalid type"),
        ] {
            let err = rules_error(extra, "");
            let expected = if key.is_empty() {
                format!("{at}: ")
            } else {
                format!("{at}.{key}: ")
            };
            assert!(err.starts_with(&expected), "{err}");
            assert!(err.contains(why), "{err}");
        }
        // Pseudonymising needs the key.
        let text = with_rules("pseudonymise = [\"new_value\"]", "");
        let err = parse(&text, "routes.toml", None).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "{at}.pseudonymise: needs privacy.key (CONNECTOR__PRIVACY__KEY)"
            )),
            "{err}"
        );
    }

    #[test]
    fn a_topic_has_one_record_shape() {
        let at = "routes.toml: routes[1] (\"marketing-opt-ins\").topics";
        // Another route feeding the same topic with other rules (or none).
        let shared = EXAMPLE.replace("\"customer.audit\"", "\"customer.contact-details\"");
        let text = shared.replace(
            "topics = [\"customer.contact-details\"]\n",
            "topics = [\"customer.contact-details\"]\nexclude = [\"customer_email\"]\n",
        );
        let err = parse(&text, "routes.toml", None).unwrap_err().to_string();
        assert!(err.starts_with(at), "{err}");
        assert!(
            err.contains("also fed by route \"contact-details\" with other field rules"),
            "{err}"
        );
        // The same rules in another order are the same record shape.
        let both = text.replace(
            "topics = [\"customer.contact-details\", \"customer.marketing-opt-ins\"]",
            "topics = [\"customer.contact-details\", \"customer.marketing-opt-ins\"]\nexclude = [\"customer_email\"]",
        );
        let both = both.replace("[\"customer.marketing-opt-ins\", \"customer.contact-details\"]", "[\"customer.marketing-opt-ins\", \"customer.contact-details\"]\nexclude = [\"customer_email\"]");
        assert!(parse(&both, "routes.toml", None).is_ok(), "{both}");
        // The unmatched topic takes whole events.
        let text = EXAMPLE.replace(
            "topics = [\"customer.contact-details\"]",
            "topics = [\"webhooks.unrouted\"]\nexclude = [\"customer_email\"]",
        );
        let err = parse(&text, "routes.toml", None).unwrap_err().to_string();
        assert!(err.contains("routes[0] (\"contact-details\").topics: \"webhooks.unrouted\" is the [unmatched] topic"), "{err}");
    }

    #[test]
    fn rules_matching_no_field_of_the_contract_are_warnings() {
        let text = with_rules(
            "entities = [\"customer\"]\nexclude = [\"customer_emial\", \"booking_*\"]",
            "",
        );
        let table = parse(&text, "routes.toml", None).unwrap();
        assert_eq!(
            table.warnings(),
            [
                "routes[0] (\"contact-details\"): exclude: \"customer_emial\" matches no field the contract names (a typo, or a field of another entity?)",
                "routes[0] (\"contact-details\"): exclude: \"booking_*\" matches no field the contract names (a typo, or a field of another entity?)",
            ]
        );
        // booking_* is known on a route that takes bookings (all, by default).
        let text = with_rules("exclude = [\"booking_*\"]", "");
        assert!(parse(&text, "routes.toml", None)
            .unwrap()
            .warnings()
            .is_empty());
    }

    #[test]
    fn state_and_erasure_topics_load_and_are_checked() {
        let tail = "[[state]]\nentity = \"customer\"\ntopic = \"customer.state\"\nexclude = [\"customer_email\"]\n[erasure]\ntopic = \"privacy.erasures\"\n";
        let table = parse(&with_rules("", tail), "routes.toml", None).unwrap();
        let state = table.state_for(&crate::entity::CUSTOMER).unwrap();
        assert_eq!(state.topic, "customer.state");
        assert_eq!(state.deletions.patterns(), ["Customer*Deleted"]);
        assert!(state.rules.is_some());
        assert!(table.state_for(&crate::entity::BOOKING).is_none());
        assert_eq!(table.erasure_topic(), Some("privacy.erasures"));
        assert!(table.all_topics().contains("customer.state"));
        assert!(!table.all_topics().contains("privacy.erasures"));
        let booking = "[[state]]\nentity = \"booking\"\ntopic = \"booking.state\"\n";
        let table = parse(&with_rules("", booking), "routes.toml", None).unwrap();
        let state = table.state_for(&crate::entity::BOOKING).unwrap();
        assert_eq!(state.deletions.patterns(), ["Booking*Deleted"]);

        for (tail, at, why) in [
            ("[[state]]\nentity = \"table\"\ntopic = \"s\"\n", "state[0] (\"table\").entity", "unknown entity \"table\""),
            ("[[state]]\nentity = \"customer\"\ntopic = \"s\"\n[[state]]\nentity = \"customer\"\ntopic = \"t\"\n", "state[1] (\"customer\").entity", "has a state topic already"),
            ("[[state]]\nentity = \"customer\"\ntopic = \"customer.audit\"\n", "state[0] (\"customer\").topic", "already used"),
            ("[[state]]\nentity = \"customer\"\ntopic = \"a b\"\n", "state[0] (\"customer\").topic", "invalid topic"),
            ("[[state]]\nentity = \"customer\"\ntopic = \"s\"\ndeletions = []\n", "state[0] (\"customer\").deletions", "empty"),
            ("[[state]]\nentity = \"customer\"\ntopic = \"s\"\ndeletions = [\"[\"]\n", "state[0] (\"customer\").deletions", "invalid glob"),
            ("[[state]]\nentity = \"customer\"\ntopic = \"s\"\nexclude = [\"customer_id\"]\n", "state[0] (\"customer\").exclude", "part of the envelope"),
            ("[[state]]\nentity = \"customer\"\ntopic = \"s\"\nexclude = [\"event_ids\"]\n", "state[0] (\"customer\").exclude", "part of the envelope"),
            ("[[state]]\nentity = \"customer\"\ntopic = \"s\"\npseudonymise = [\"customer_email\"]\n", "state[0] (\"customer\").pseudonymise", "needs privacy.key"),
            ("[[state]]\nentity = \"customer\"\ntopic = \"s\"\nretention = 1\n", "state[0] (\"customer\")", "unknown field `retention`"),
            ("[erasure]\ntopic = \"webhooks.unrouted\"\n", "[erasure].topic", "already used"),
            ("[[state]]\nentity = \"customer\"\ntopic = \"s\"\n[erasure]\ntopic = \"s\"\n", "[erasure].topic", "already used"),
            ("[erasure]\ntopics = \"e\"\n", "[erasure]", "unknown field `topics`"),
        ] {
            let err = parse(&with_rules("", tail), "routes.toml", None).unwrap_err().to_string();
            assert!(err.starts_with(&format!("routes.toml: {at}: ")), "{err}");
            assert!(err.contains(why), "{err}");
        }
        // A state rule naming a field the entity does not have is a warning.
        let tail = "[[state]]\nentity = \"customer\"\ntopic = \"s\"\nexclude = [\"new_value\"]\n";
        let table = parse(&with_rules("", tail), "routes.toml", None).unwrap();
        assert_eq!(table.warnings().len(), 1, "{:?}", table.warnings());
        assert!(table.warnings()[0].starts_with("state[0] (\"customer\"): exclude: \"new_value\""));
    }
}
