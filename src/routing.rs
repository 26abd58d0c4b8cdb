//! Which Kafka topics an event goes to, by its entity and change type. Pure: no I/O.
//!
//! An event goes to every topic of every route that applies to its entity (all
//! entities unless the route names some) and whose patterns match its change type
//! (fan-out, each topic once, in route order), or to the unmatched topic when none
//! matches. An event with no change type (a notification without changes) matches
//! no route and goes to the unmatched topic. The table is built by
//! [`crate::config::routing_file`], which validates the routing file.
//!
//! A route may carry field rules ([`FieldRules`]): its topics receive the events
//! shaped by them. Every route feeding a topic has the same rules (checked at
//! load), so a topic has one payload. An entity may have a state topic
//! ([`StateTopic`]) and the file may name an erasure topic.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::entity::Entity;
use crate::privacy::{FieldRules, Key};

/// Change-type glob patterns, as written and compiled.
#[derive(Debug, Clone)]
pub struct ChangeTypes {
    patterns: Vec<String>,
    matcher: GlobSet,
}

impl ChangeTypes {
    /// Compiles the patterns (globs: `*`, `?`, `[abc]`, `{a,b}`).
    pub fn new(patterns: Vec<String>) -> Result<Self, globset::Error> {
        let mut builder = GlobSetBuilder::new();
        for pattern in &patterns {
            builder.add(Glob::new(pattern)?);
        }
        Ok(ChangeTypes {
            matcher: builder.build()?,
            patterns,
        })
    }

    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    pub fn matches(&self, change_type: &str) -> bool {
        self.matcher.is_match(change_type)
    }
}

/// One `[[routes]]` entry with its patterns compiled.
#[derive(Debug, Clone)]
pub struct Route {
    name: String,
    /// The entities it applies to; `None`: all.
    entities: Option<Vec<&'static Entity>>,
    change_types: ChangeTypes,
    topics: Vec<String>,
    /// What its topics receive of each event; `None`: the whole event.
    rules: Option<Arc<FieldRules>>,
}

impl Route {
    /// Compiles the change type patterns (globs: `*`, `?`, `[abc]`, `{a,b}`).
    /// Topics are kept in order with repeats removed.
    pub fn new(
        name: impl Into<String>,
        patterns: Vec<String>,
        topics: Vec<String>,
    ) -> Result<Self, globset::Error> {
        let mut unique_topics: Vec<String> = Vec::with_capacity(topics.len());
        for topic in topics {
            if !unique_topics.contains(&topic) {
                unique_topics.push(topic);
            }
        }
        Ok(Route {
            name: name.into(),
            entities: None,
            change_types: ChangeTypes::new(patterns)?,
            topics: unique_topics,
            rules: None,
        })
    }

    /// The same route, its topics receiving events shaped by `rules`.
    pub fn with_rules(self, rules: FieldRules) -> Self {
        Route {
            rules: Some(Arc::new(rules)),
            ..self
        }
    }

    /// Its field rules; `None`: its topics receive whole events.
    pub fn rules(&self) -> Option<&FieldRules> {
        self.rules.as_deref()
    }

    /// The same route, applying only to `entities`.
    pub fn for_entities(self, entities: Vec<&'static Entity>) -> Self {
        Route {
            entities: Some(entities),
            ..self
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The entities the route names; `None` when it applies to all.
    pub fn entities(&self) -> Option<&[&'static Entity]> {
        self.entities.as_deref()
    }

    /// Whether the route takes events of `entity`.
    pub fn applies_to(&self, entity: &Entity) -> bool {
        self.entities
            .as_ref()
            .is_none_or(|named| named.iter().any(|e| e.name == entity.name))
    }

    pub fn patterns(&self) -> &[String] {
        self.change_types.patterns()
    }

    pub fn topics(&self) -> &[String] {
        &self.topics
    }

    fn matches(&self, change_type: &str) -> bool {
        self.change_types.matches(change_type)
    }
}

/// An entity's compacted state topic: after a notification's events, one record
/// keyed by the entity's id with its latest fields, or a tombstone when a change
/// is a deletion.
#[derive(Debug, Clone)]
pub struct StateTopic {
    pub entity: &'static Entity,
    pub topic: String,
    /// The change types that delete the entity (`Customer*Deleted`).
    pub deletions: ChangeTypes,
    /// What the state records hold of the entity's fields; `None`: all.
    pub rules: Option<Arc<FieldRules>>,
}

impl StateTopic {
    /// Whether a notification with these change types deletes the entity.
    pub fn deletes<'c>(&self, mut change_types: impl Iterator<Item = Option<&'c str>>) -> bool {
        change_types.any(|c| c.is_some_and(|c| self.deletions.matches(c)))
    }
}

/// The routes of a routing file plus the topic for events no route matches.
#[derive(Debug, Clone)]
pub struct RoutingTable {
    routes: Vec<Route>,
    unmatched_topic: String,
    /// The rules of each topic that has some (from its routes, which agree).
    topic_rules: HashMap<String, Arc<FieldRules>>,
    states: Vec<StateTopic>,
    erasure_topic: Option<String>,
    /// What loading the file found worth saying but not refusing.
    warnings: Vec<String>,
    /// Set when event ids are keyed (`privacy.keyed_event_ids`).
    event_id_key: Option<Arc<Key>>,
}

impl RoutingTable {
    pub fn new(routes: Vec<Route>, unmatched_topic: impl Into<String>) -> Self {
        let mut topic_rules = HashMap::new();
        for route in &routes {
            for topic in &route.topics {
                if let Some(rules) = &route.rules {
                    topic_rules
                        .entry(topic.clone())
                        .or_insert_with(|| Arc::clone(rules));
                }
            }
        }
        RoutingTable {
            routes,
            unmatched_topic: unmatched_topic.into(),
            topic_rules,
            states: Vec::new(),
            erasure_topic: None,
            warnings: Vec::new(),
            event_id_key: None,
        }
    }

    /// The same table, keying event ids with `key` when it says so.
    pub fn with_event_id_key(self, key: Option<&Arc<Key>>) -> Self {
        RoutingTable {
            event_id_key: key.filter(|k| k.keys_event_ids()).cloned(),
            ..self
        }
    }

    /// The key event ids are keyed with, when they are.
    pub fn event_id_key(&self) -> Option<&Key> {
        self.event_id_key.as_deref()
    }

    /// The same table with state topics, an erasure topic and load warnings.
    pub fn with_privacy(
        self,
        states: Vec<StateTopic>,
        erasure_topic: Option<String>,
        warnings: Vec<String>,
    ) -> Self {
        RoutingTable {
            states,
            erasure_topic,
            warnings,
            ..self
        }
    }

    /// The field rules of `topic`; `None`: it receives whole events.
    pub fn rules_for(&self, topic: &str) -> Option<&FieldRules> {
        if self.topic_rules.is_empty() {
            return None;
        }
        self.topic_rules.get(topic).map(Arc::as_ref)
    }

    /// The state topic of `entity`, when it has one.
    pub fn state_for(&self, entity: &Entity) -> Option<&StateTopic> {
        self.states.iter().find(|s| s.entity.name == entity.name)
    }

    pub fn states(&self) -> &[StateTopic] {
        &self.states
    }

    /// Where `forget` writes erasure events, when configured.
    pub fn erasure_topic(&self) -> Option<&str> {
        self.erasure_topic.as_deref()
    }

    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    pub fn unmatched_topic(&self) -> &str {
        &self.unmatched_topic
    }

    /// The topics an event of `entity` and this change type goes to; never empty.
    pub fn topics_for(&self, entity: &Entity, change_type: Option<&str>) -> Vec<&str> {
        let mut topics: Vec<&str> = Vec::new();
        if let Some(change_type) = change_type {
            let routes = self.routes.iter();
            for route in routes.filter(|r| r.applies_to(entity) && r.matches(change_type)) {
                for topic in &route.topics {
                    if !topics.contains(&topic.as_str()) {
                        topics.push(topic);
                    }
                }
            }
        }
        if topics.is_empty() {
            topics.push(&self.unmatched_topic);
        }
        topics
    }

    /// Every topic the routing file names: [`all_topics`](Self::all_topics) and the
    /// erasure topic.
    pub fn named_topics(&self) -> BTreeSet<&str> {
        let mut named = self.all_topics();
        named.extend(self.erasure_topic());
        named
    }

    /// Every topic a request can write to: routed, unmatched and state topics.
    pub fn all_topics(&self) -> BTreeSet<&str> {
        self.routes
            .iter()
            .flat_map(|r| r.topics.iter().map(String::as_str))
            .chain([self.unmatched_topic.as_str()])
            .chain(self.states.iter().map(|s| s.topic.as_str()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entity::{BOOKING, CUSTOMER};
    use crate::privacy::tests::{arb_word_of, glob_matches};
    use proptest::prelude::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn example() -> RoutingTable {
        RoutingTable::new(
            vec![
                Route::new(
                    "contact",
                    strings(&["CustomerEmailChanged", "CustomerSmsChanged"]),
                    strings(&["contact"]),
                )
                .unwrap(),
                Route::new(
                    "marketing",
                    strings(&["Customer*Marketing*Changed"]),
                    strings(&["marketing", "audit"]),
                )
                .unwrap(),
                Route::new(
                    "email-audit",
                    strings(&["*Email*"]),
                    strings(&["audit", "email"]),
                )
                .unwrap(),
            ],
            "unrouted",
        )
    }

    /// The topics of [`example`] for a customer event of `change_type`.
    fn example_topics(change_type: Option<&str>) -> Vec<String> {
        let table = example();
        let topics = table.topics_for(&CUSTOMER, change_type);
        topics.into_iter().map(String::from).collect()
    }

    #[test]
    fn exact_names_and_globs_match() {
        assert_eq!(example_topics(Some("CustomerSmsChanged")), ["contact"]);
        assert_eq!(
            example_topics(Some("CustomerGroupSmsMarketingOptinChanged")),
            ["marketing", "audit"]
        );
    }

    #[test]
    fn fans_out_across_routes_with_each_topic_once() {
        assert_eq!(
            example_topics(Some("CustomerEmailChanged")),
            ["contact", "audit", "email"]
        );
        assert_eq!(
            example_topics(Some("CustomerRestaurantEmailMarketingDateChanged")),
            ["marketing", "audit", "email"]
        );
    }

    #[test]
    fn unmatched_and_missing_change_types_go_to_the_unmatched_topic() {
        for change_type in [Some("CustomerCreated"), None, Some("")] {
            assert_eq!(example_topics(change_type), ["unrouted"], "{change_type:?}");
        }
    }

    #[test]
    fn a_route_naming_entities_takes_only_their_events() {
        let bookings = Route::new("b", strings(&["*Changed"]), strings(&["bookings"]))
            .unwrap()
            .for_entities(vec![&BOOKING]);
        let all = Route::new("all", strings(&["*Status*"]), strings(&["status"])).unwrap();
        let table = RoutingTable::new(vec![bookings, all], "unrouted");
        assert_eq!(
            table.topics_for(&BOOKING, Some("BookingStatusChanged")),
            ["bookings", "status"]
        );
        assert_eq!(
            table.topics_for(&CUSTOMER, Some("CustomerStatusChanged")),
            ["status"]
        );
        assert_eq!(
            table.topics_for(&CUSTOMER, Some("CustomerSmsChanged")),
            ["unrouted"]
        );
        assert_eq!(table.topics_for(&BOOKING, None), ["unrouted"]);
        assert!(table.routes()[0].applies_to(&BOOKING));
        assert!(!table.routes()[0].applies_to(&CUSTOMER));
        assert!(table.routes()[1].applies_to(&CUSTOMER));
    }

    #[test]
    fn matching_is_case_sensitive() {
        assert_eq!(example_topics(Some("customersmschanged")), ["unrouted"]);
    }

    #[test]
    fn repeated_topics_in_a_route_are_kept_once() {
        let route = Route::new("r", strings(&["A"]), strings(&["t", "u", "t"])).unwrap();
        assert_eq!(route.topics(), ["t", "u"]);
    }

    #[test]
    fn invalid_globs_are_refused() {
        assert!(Route::new("r", strings(&["Customer[Email"]), strings(&["t"])).is_err());
    }

    #[test]
    fn all_topics_lists_each_topic_once() {
        let table = example();
        let all: Vec<&str> = table.all_topics().into_iter().collect();
        assert_eq!(all, ["audit", "contact", "email", "marketing", "unrouted"]);
    }

    /// Words of the platform's change types, and made-up ones now and then.
    fn arb_word() -> impl Strategy<Value = String> {
        let words = &[
            "Customer",
            "Booking",
            "Email",
            "Sms",
            "Marketing",
            "Group",
            "Status",
            "Changed",
        ];
        arb_word_of(words, "[A-Z][a-z]{1,3}")
    }

    /// A change type as the platform names them: an entity, words, an action
    /// (`CustomerGroupSmsMarketingChanged`); sometimes anything else.
    fn arb_change_type() -> impl Strategy<Value = String> {
        let entity = prop_oneof![
            Just("Customer".to_string()),
            Just("Booking".into()),
            arb_word()
        ];
        let action = prop_oneof![
            3 => Just("Changed".to_string()),
            1 => Just("Created".into()),
            1 => arb_word(),
        ];
        let words = proptest::collection::vec(arb_word(), 0..3);
        let named = (entity, words, action).prop_map(|(e, w, a)| format!("{e}{}{a}", w.concat()));
        prop_oneof![9 => named, 1 => "[A-Za-z]{0,12}"]
    }

    /// A change-type glob: words, `*` and `?` (`Customer*Sms*`, `*Email*`, `Bo?king*`).
    fn arb_pattern() -> impl Strategy<Value = String> {
        let part = prop_oneof![
            3 => arb_word(),
            4 => Just("*".to_string()),
            1 => arb_word().prop_map(|w| format!("{}?", &w[..w.len() - 1])),
        ];
        proptest::collection::vec(part, 1..4).prop_map(|parts| parts.concat().replace("**", "*"))
    }

    /// A route as the routing file writes it, for the table and the oracle.
    #[derive(Debug, Clone)]
    struct RouteSpec {
        patterns: Vec<String>,
        topics: Vec<String>,
        /// The entities it names; `None`: all.
        entities: Option<Vec<&'static str>>,
    }

    fn arb_route() -> impl Strategy<Value = RouteSpec> {
        let topic = proptest::sample::select(vec!["a", "b", "c", "d"]).prop_map(String::from);
        let entities = prop_oneof![
            2 => Just(None),
            1 => Just(Some(vec!["customer"])),
            1 => Just(Some(vec!["booking"])),
            1 => Just(Some(vec!["customer", "booking"])),
        ];
        (
            proptest::collection::vec(arb_pattern(), 1..3),
            proptest::collection::vec(topic, 1..4),
            entities,
        )
            .prop_map(|(patterns, topics, entities)| RouteSpec {
                patterns,
                topics,
                entities,
            })
    }

    /// The routes that take an event of `entity` with `change_type`: they apply
    /// to its entity and a pattern matches (none without a change type).
    fn matching<'r>(
        routes: &'r [RouteSpec],
        entity: &Entity,
        change_type: Option<&str>,
    ) -> Vec<&'r RouteSpec> {
        let Some(change_type) = change_type else {
            return Vec::new();
        };
        let applies =
            |r: &RouteSpec| (r.entities.as_ref()).is_none_or(|e| e.contains(&entity.name));
        let matches = |r: &RouteSpec| {
            (r.patterns.iter()).any(|p| glob_matches(p.as_bytes(), change_type.as_bytes()))
        };
        routes.iter().filter(|r| applies(r) && matches(r)).collect()
    }

    /// The topics the module's rules give, worked out from the routes alone:
    /// every topic of every matching route, in route order, each once; the
    /// unmatched topic when there are none.
    fn expected_topics(
        routes: &[RouteSpec],
        entity: &Entity,
        change_type: Option<&str>,
    ) -> Vec<String> {
        let mut topics: Vec<String> = Vec::new();
        for route in matching(routes, entity, change_type) {
            for topic in &route.topics {
                if !topics.contains(topic) {
                    topics.push(topic.clone());
                }
            }
        }
        if topics.is_empty() {
            topics.push("unrouted".into());
        }
        topics
    }

    #[test]
    fn the_oracle_matcher_reads_globs_as_the_routing_file_does() {
        for (glob, text, matched) in [
            ("Customer*Sms*", "CustomerGroupSmsMarketingChanged", true),
            ("*Email*", "CustomerEmailChanged", true),
            ("*", "", true),
            ("Bo?king*", "BookingStatusChanged", true),
            ("Bo?king*", "BokingStatusChanged", false),
            ("*Sms", "CustomerSmsChanged", false),
            ("Customer", "CustomerX", false),
        ] {
            assert_eq!(
                glob_matches(glob.as_bytes(), text.as_bytes()),
                matched,
                "{glob} {text}"
            );
            let route = Route::new("r", strings(&[glob]), strings(&["t"])).unwrap();
            assert_eq!(route.matches(text), matched, "{glob} {text}");
        }
    }

    /// The routing table of `routes`, unmatched topic `unrouted`.
    fn table_of(routes: &[RouteSpec]) -> RoutingTable {
        let route = |(n, spec): (usize, &RouteSpec)| {
            let route = Route::new(format!("r{n}"), spec.patterns.clone(), spec.topics.clone());
            let route = route.expect("the generated globs compile");
            match &spec.entities {
                None => route,
                Some(names) => {
                    let entities = names.iter().map(|n| crate::entity::by_name(n).unwrap());
                    route.for_entities(entities.collect())
                }
            }
        };
        RoutingTable::new(routes.iter().enumerate().map(route).collect(), "unrouted")
    }

    /// How often the routing rules were exercised across the cases.
    #[derive(Debug, Default)]
    struct Tally {
        cases: usize,
        /// More than one topic, from more than one route.
        fan_out: usize,
        /// A topic of a matching route left out: an earlier one had it.
        repeat_dropped: usize,
        /// A change type no route matched (or none).
        unmatched: usize,
        /// A route whose patterns match, left out for its entities.
        other_entity: usize,
    }

    impl Tally {
        /// Counts what routing an event of `entity` with `change_type` by
        /// `routes` to `topics` exercised.
        fn add(
            &mut self,
            routes: &[RouteSpec],
            entity: &Entity,
            change_type: Option<&str>,
            topics: &[&str],
        ) {
            let matched = matching(routes, entity, change_type);
            let offered: usize = matched.iter().map(|r| r.topics.len()).sum();
            let for_others: Vec<RouteSpec> = (routes.iter())
                .filter(|r| (r.entities.as_ref()).is_some_and(|e| !e.contains(&entity.name)))
                .map(|r| RouteSpec {
                    entities: None,
                    ..r.clone()
                })
                .collect();
            self.cases += 1;
            self.fan_out += usize::from(matched.len() > 1 && topics.len() > 1);
            self.repeat_dropped += usize::from(matched.len() > 1 && offered > topics.len());
            self.unmatched += usize::from(matched.is_empty());
            self.other_entity +=
                usize::from(!matching(&for_others, entity, change_type).is_empty());
        }
    }

    #[test]
    fn every_event_goes_to_each_topic_of_every_matching_route_once_or_to_the_unmatched_topic() {
        let entity = proptest::sample::select(vec![&CUSTOMER, &BOOKING]);
        let change_type = proptest::option::weighted(0.95, arb_change_type());
        let routes = proptest::collection::vec(arb_route(), 1..6);
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
            failure_persistence: None,
            ..ProptestConfig::with_cases(512)
        });
        let tally = std::cell::RefCell::new(Tally::default());
        let outcome = runner.run(
            &(routes, entity, change_type),
            |(routes, entity, change_type)| {
                let change_type = change_type.as_deref();
                let table = table_of(&routes);
                let topics = table.topics_for(entity, change_type);
                let expected = expected_topics(&routes, entity, change_type);
                prop_assert_eq!(
                    &topics,
                    &expected,
                    "{:?} {:?} {:#?}",
                    entity.name,
                    change_type,
                    routes
                );
                tally
                    .borrow_mut()
                    .add(&routes, entity, change_type, &topics);
                Ok(())
            },
        );
        if let Err(failure) = outcome {
            panic!("{failure}");
        }
        // Each rule was exercised by a good share of the cases, not by luck.
        let tally = tally.into_inner();
        for (rule, n) in [
            ("fan-out", tally.fan_out),
            ("a repeated topic dropped", tally.repeat_dropped),
            ("the unmatched topic", tally.unmatched),
            ("a route for other entities", tally.other_entity),
        ] {
            let cases = tally.cases;
            assert!(n * 10 >= cases, "{rule}: {n} of {cases} cases: {tally:?}");
        }
    }

    proptest! {
        #[test]
        fn a_star_route_takes_everything(change_type in "[A-Za-z0-9]{1,30}") {
            let table = RoutingTable::new(
                vec![Route::new("all", strings(&["*"]), strings(&["all"])).unwrap()],
                "unrouted",
            );
            prop_assert_eq!(table.topics_for(&CUSTOMER, Some(&change_type)), vec!["all"]);
        }

        #[test]
        fn prefix_globs_match_exactly_the_prefixed(suffix in "[A-Za-z]{0,20}", other in "[a-z][A-Za-z]{0,20}") {
            let table = RoutingTable::new(
                vec![Route::new("p", strings(&["Customer*"]), strings(&["p"])).unwrap()],
                "unrouted",
            );
            let prefixed = format!("Customer{suffix}");
            prop_assert_eq!(table.topics_for(&CUSTOMER, Some(&prefixed)), vec!["p"]);
            prop_assert_eq!(table.topics_for(&CUSTOMER, Some(&other)), vec!["unrouted"]);
        }
    }
}
