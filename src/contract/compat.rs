//! Compatibility between two versions of an event schema of one
//! `schema_version`, both ways: consumers holding either version must accept the
//! events of the other. So within a version the only changes allowed are naming
//! an optional field the older version's open set (`patternProperties`) already
//! allowed, with the open set's own schema, and changing descriptions. A field
//! under a name the older version did not allow breaks consumers validating with
//! it whenever it refuses other fields (`additionalProperties: false`), as this
//! project's schemas do. Everything else breaks someone and needs a new
//! `schema_version`: a field removed or no longer required, a required field
//! added, a type narrowed (old events refused) or widened (consumers receive
//! values they do not expect), a format, pattern, constant or bound changed, the
//! open set changed, any other keyword added, removed or changed.
//!
//! Schemas are compared keyword by keyword, values exactly (numbers by their
//! digits), so nothing this module does not know about passes unseen.

use serde_json::{Map, Value};

/// Every way `new` breaks consumers of `old` (or `old`'s events break consumers
/// of `new`), as readable lines; empty when they are compatible.
pub fn breaking_changes(old: &Value, new: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let (empty, none) = (Map::new(), Value::Null);
    let object =
        |schema: &'_ Value| -> Map<String, Value> { schema.as_object().unwrap_or(&empty).clone() };
    let (old_top, new_top) = (object(old), object(new));
    // Everything but the field lists must stay as it is.
    for keyword in union_of_keys(&old_top, &new_top) {
        let free = ["properties", "$id", "title", "description"];
        if free.contains(&keyword.as_str()) || keyword == "patternProperties" {
            continue;
        }
        let (before, after) = (
            old_top.get(&keyword).unwrap_or(&none),
            new_top.get(&keyword).unwrap_or(&none),
        );
        if keyword == "required" {
            compare_required(before, after, &mut problems);
        } else if before != after {
            problems.push(format!("{keyword} changed from {before} to {after}"));
        }
    }

    let (old_fields, new_fields) = (
        object(&old_top.get("properties").cloned().unwrap_or_default()),
        object(&new_top.get("properties").cloned().unwrap_or_default()),
    );
    for (name, before) in &old_fields {
        match new_fields.get(name) {
            Some(after) => compare_fields(name, before, after, &mut problems),
            None => problems.push(format!("{name}: removed")),
        }
    }
    // The open set keeps its patterns and their schemas, but for descriptions.
    let patterns_of = |top: &Map<String, Value>| {
        object(&top.get("patternProperties").cloned().unwrap_or_default())
    };
    let (old_patterns, new_patterns) = (patterns_of(&old_top), patterns_of(&new_top));
    for pattern in union_of_keys(&old_patterns, &new_patterns) {
        let name = format!("patternProperties {pattern}");
        match (old_patterns.get(&pattern), new_patterns.get(&pattern)) {
            (Some(before), Some(after)) => compare_fields(&name, before, after, &mut problems),
            (Some(_), None) => problems.push(format!("{name}: removed")),
            _ => problems.push(format!("{name}: added")),
        }
    }
    // A new field must be one the old open set allowed, with the same schema.
    let closed = old_top.get("additionalProperties") == Some(&Value::Bool(false));
    for (name, after) in new_fields
        .iter()
        .filter(|(n, _)| !old_fields.contains_key(*n))
    {
        let mut allowed = !closed;
        for (pattern, before) in &old_patterns {
            match prefix_of(pattern) {
                Some(prefix) if name.starts_with(prefix) => {
                    allowed = true;
                    compare_fields(name, before, after, &mut problems)
                }
                Some(_) => {}
                None => problems.push(format!(
                    "{name}: cannot tell whether pattern {pattern} allowed it"
                )),
            }
        }
        if !allowed {
            problems.push(format!(
                "{name}: added, but the older version refuses fields it does not name \
                 (additionalProperties: false), so its consumers would refuse new events"
            ));
        }
    }
    problems
}

/// The required fields must be the same: one added refuses old events, one
/// dropped takes away a field consumers rely on.
fn compare_required(before: &Value, after: &Value, problems: &mut Vec<String>) {
    let names = |list: &Value| -> Vec<String> {
        let names = list.as_array().map(Vec::as_slice).unwrap_or_default();
        names.iter().map(|n| n.to_string()).collect()
    };
    let (before, after) = (names(before), names(after));
    for name in after.iter().filter(|n| !before.contains(n)) {
        problems.push(format!("{name}: required now"));
    }
    for name in before.iter().filter(|n| !after.contains(n)) {
        problems.push(format!("{name}: no longer required"));
    }
}

/// One field's schema must be the same but for its description.
fn compare_fields(name: &str, before: &Value, after: &Value, problems: &mut Vec<String>) {
    let (empty, none) = (Map::new(), Value::Null);
    let keywords = |schema: &'_ Value| schema.as_object().unwrap_or(&empty).clone();
    let (before_map, after_map) = (keywords(before), keywords(after));
    if before.is_object() != after.is_object() {
        problems.push(format!("{name}: changed from {before} to {after}"));
        return;
    }
    for keyword in union_of_keys(&before_map, &after_map) {
        if keyword == "description" || keyword == "title" {
            continue;
        }
        let (old_value, new_value) = (
            before_map.get(&keyword).unwrap_or(&none),
            after_map.get(&keyword).unwrap_or(&none),
        );
        if old_value == new_value {
            continue;
        }
        if keyword == "type" {
            problems.push(type_change(name, old_value, new_value));
        } else {
            problems.push(format!(
                "{name}: {keyword} changed from {old_value} to {new_value}"
            ));
        }
    }
}

/// Says how a `type` changed: the types one side has and the other lacks.
fn type_change(name: &str, before: &Value, after: &Value) -> String {
    let types = |value: &Value| -> Vec<String> {
        match value {
            Value::Array(many) => many.iter().map(|t| t.to_string()).collect(),
            Value::Null => vec!["any".into()],
            one => vec![one.to_string()],
        }
    };
    let (before, after) = (types(before), types(after));
    let lost: Vec<&str> = before
        .iter()
        .filter(|t| !after.contains(t))
        .map(String::as_str)
        .collect();
    let gained: Vec<&str> = after
        .iter()
        .filter(|t| !before.contains(t))
        .map(String::as_str)
        .collect();
    let mut what = Vec::new();
    if !lost.is_empty() {
        what.push(format!("narrowed: {} refused", lost.join(", ")));
    }
    if !gained.is_empty() {
        what.push(format!("widened: {} unexpected", gained.join(", ")));
    }
    format!(
        "{name}: type changed from [{}] to [{}] ({})",
        before.join(", "),
        after.join(", "),
        what.join("; ")
    )
}

/// The keys of both maps, each once, in order.
fn union_of_keys(a: &Map<String, Value>, b: &Map<String, Value>) -> Vec<String> {
    let mut keys: Vec<String> = a.keys().chain(b.keys()).cloned().collect();
    keys.sort();
    keys.dedup();
    keys
}

/// `prefix` for a pattern `^prefix` of letters, digits and `_` only.
fn prefix_of(pattern: &str) -> Option<&str> {
    let prefix = pattern.strip_prefix('^')?;
    prefix
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_')
        .then_some(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": "urn:x",
            "type": "object",
            "required": ["id", "when"],
            "properties": {
                "id": {"type": "integer", "minimum": -9223372036854775808i64,
                       "maximum": 9223372036854775807i64, "description": "d"},
                "when": {"type": "string", "format": "date-time", "pattern": "Z$"},
                "kind": {"type": ["string", "null"]},
                "version": {"const": 1},
            },
            "patternProperties": {"^extra_": {"type": ["string", "number", "boolean", "null"]}},
            "additionalProperties": false,
        })
    }

    /// `base()` with `edit` applied, compared against `base()`.
    fn problems_after(edit: impl FnOnce(&mut Value)) -> Vec<String> {
        let mut new = base();
        edit(&mut new);
        breaking_changes(&base(), &new)
    }

    #[test]
    fn the_same_schema_is_compatible() {
        assert_eq!(breaking_changes(&base(), &base()), Vec::<String>::new());
    }

    #[test]
    fn naming_open_set_fields_and_changing_descriptions_are_compatible() {
        let problems = problems_after(|s| {
            s["properties"]["id"]["description"] = json!("other words");
            s["description"] = json!("more");
            s["$id"] = json!("urn:y");
            s["patternProperties"]["^extra_"]["description"] = json!("other words");
            // Under the open set with the open set's own schema: nothing narrows.
            s["properties"]["extra_wide"] =
                json!({"type": ["string", "number", "boolean", "null"], "description": "e"});
        });
        assert_eq!(problems, Vec::<String>::new());
    }

    type Edit = Box<dyn FnOnce(&mut Value)>;

    /// Each edit of `base()` is reported with its expected problem among others.
    fn assert_reported(cases: Vec<(&str, Edit)>) {
        for (expected, edit) in cases {
            let problems = problems_after(edit);
            assert!(
                problems.iter().any(|p| p == expected),
                "expected {expected:?} in {problems:?}"
            );
        }
    }

    #[test]
    fn every_change_to_a_named_field_is_reported() {
        assert_reported(vec![
            (
                "kind: removed",
                Box::new(|s| {
                    s["properties"].as_object_mut().unwrap().remove("kind");
                }),
            ),
            (
                r#"kind: type changed from ["string", "null"] to ["string"] (narrowed: "null" refused)"#,
                Box::new(|s| s["properties"]["kind"]["type"] = json!(["string"])),
            ),
            (
                r#"kind: type changed from ["string", "null"] to ["string", "null", "number"] (widened: "number" unexpected)"#,
                Box::new(|s| s["properties"]["kind"]["type"] = json!(["string", "null", "number"])),
            ),
            (
                r#"id: type changed from ["integer"] to ["number"] (narrowed: "integer" refused; widened: "number" unexpected)"#,
                Box::new(|s| s["properties"]["id"]["type"] = json!("number")),
            ),
            (
                "when: format changed from \"date-time\" to \"date\"",
                Box::new(|s| s["properties"]["when"]["format"] = json!("date")),
            ),
            (
                "when: format changed from \"date-time\" to null",
                Box::new(|s| {
                    s["properties"]["when"]
                        .as_object_mut()
                        .unwrap()
                        .remove("format");
                }),
            ),
            (
                "kind: format changed from null to \"email\"",
                Box::new(|s| s["properties"]["kind"]["format"] = json!("email")),
            ),
            (
                "when: pattern changed from \"Z$\" to \"^2\"",
                Box::new(|s| s["properties"]["when"]["pattern"] = json!("^2")),
            ),
            (
                "version: const changed from 1 to 2",
                Box::new(|s| s["properties"]["version"]["const"] = json!(2)),
            ),
            (
                "id: maximum changed from 9223372036854775807 to 9223372036854775806",
                Box::new(|s| s["properties"]["id"]["maximum"] = json!(9223372036854775806i64)),
            ),
            (
                "kind: minLength changed from null to 1",
                Box::new(|s| s["properties"]["kind"]["minLength"] = json!(1)),
            ),
            (
                "kind: changed from {\"type\":[\"string\",\"null\"]} to false",
                Box::new(|s| s["properties"]["kind"] = json!(false)),
            ),
        ]);
    }

    #[test]
    fn every_change_to_what_is_required_is_reported() {
        assert_reported(vec![
            (
                "\"kind\": required now",
                Box::new(|s| s["required"] = json!(["id", "when", "kind"])),
            ),
            (
                "\"when\": no longer required",
                Box::new(|s| s["required"] = json!(["id"])),
            ),
        ]);
    }

    #[test]
    fn every_change_to_the_open_set_is_reported() {
        assert_reported(vec![
            (
                r#"extra_count: type changed from ["string", "number", "boolean", "null"] to ["integer"] (narrowed: "string", "number", "boolean", "null" refused; widened: "integer" unexpected)"#,
                Box::new(|s| s["properties"]["extra_count"] = json!({"type": "integer"})),
            ),
            (
                "patternProperties ^extra_: removed",
                Box::new(|s| s["patternProperties"] = json!({})),
            ),
            (
                "patternProperties ^other_: added",
                Box::new(|s| s["patternProperties"]["^other_"] = json!({})),
            ),
            (
                r#"patternProperties ^extra_: type changed from ["string", "number", "boolean", "null"] to ["string"] (narrowed: "number", "boolean", "null" refused)"#,
                Box::new(|s| s["patternProperties"]["^extra_"]["type"] = json!(["string"])),
            ),
            (
                "new_field: added, but the older version refuses fields it does not name (additionalProperties: false), so its consumers would refuse new events",
                Box::new(|s| s["properties"]["new_field"] = json!({"type": ["string", "null"]})),
            ),
            (
                "additionalProperties changed from false to true",
                Box::new(|s| s["additionalProperties"] = json!(true)),
            ),
        ]);
    }

    #[test]
    fn every_change_to_the_object_s_own_keywords_is_reported() {
        assert_reported(vec![
            (
                "maxProperties changed from null to 10",
                Box::new(|s| s["maxProperties"] = json!(10)),
            ),
            (
                "type changed from \"object\" to \"array\"",
                Box::new(|s| s["type"] = json!("array")),
            ),
        ]);
    }

    #[test]
    fn a_pattern_other_than_a_prefix_is_reported_for_new_fields() {
        let old = json!({"patternProperties": {"_x$": {}}, "properties": {}});
        let new = json!({"patternProperties": {"_x$": {}}, "properties": {"a": {}}});
        assert_eq!(
            breaking_changes(&old, &new),
            vec!["a: cannot tell whether pattern _x$ allowed it"]
        );
    }
}
