//! Backward compatibility between two versions of the flat event's schema: the
//! newer must accept every event the older accepts, and keep every field it
//! names with the same format. A field removed, a type narrowed, a format,
//! pattern or constant changed, a bound tightened, a required field added or an
//! open field given a narrower type breaks consumers; adding an optional field
//! or widening a type does not.
//!
//! It understands the keywords [`super::schema`] writes (object schemas with
//! `properties`, `patternProperties` of the form `^prefix`, `additionalProperties`
//! and `required`; leaves with `type`, `format`, `pattern`, `const`, `enum`,
//! `minimum`, `maximum`); any other keyword is reported as one it cannot compare,
//! so an unknown change never passes unseen.

use serde_json::{Map, Value};

/// Every way `new` breaks consumers of `old`, as readable lines; empty when
/// `new` is backward compatible.
pub fn breaking_changes(old: &Value, new: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    compare_objects(old, new, &mut problems);
    problems
}

fn compare_objects(old: &Value, new: &Value, problems: &mut Vec<String>) {
    let empty = Map::new();
    let members = |schema: &'_ Value, key: &str| -> Map<String, Value> {
        schema[key].as_object().unwrap_or(&empty).clone()
    };
    let (old_properties, new_properties) = (members(old, "properties"), members(new, "properties"));
    let (old_patterns, new_patterns) = (
        members(old, "patternProperties"),
        members(new, "patternProperties"),
    );

    let old_required = names(&old["required"]);
    for name in names(&new["required"]) {
        if !old_required.contains(&name) {
            problems.push(format!("{name}: required now"));
        }
    }
    for (name, old_schema) in &old_properties {
        match new_properties.get(name) {
            Some(new_schema) => compare_leaves(name, old_schema, new_schema, problems),
            None => problems.push(format!("{name}: removed")),
        }
    }
    // A field named now was open before: it must still accept what the open
    // set accepted for it.
    for (name, new_schema) in &new_properties {
        if old_properties.contains_key(name) {
            continue;
        }
        let mut open = false;
        for (pattern, old_schema) in &old_patterns {
            if let Some(prefix) = prefix_of(pattern) {
                if name.starts_with(prefix) {
                    open = true;
                    compare_leaves(name, old_schema, new_schema, problems);
                }
            }
        }
        if !open && old["additionalProperties"] != Value::Bool(false) {
            compare_leaves(name, &old["additionalProperties"], new_schema, problems);
        }
    }
    for (pattern, old_schema) in &old_patterns {
        if prefix_of(pattern).is_none() {
            problems.push(format!("{pattern}: a pattern this check cannot compare"));
        }
        match new_patterns.get(pattern) {
            Some(new_schema) => compare_leaves(pattern, old_schema, new_schema, problems),
            None => problems.push(format!(
                "{pattern}: fields matching it are no longer allowed"
            )),
        }
    }
    match (&old["additionalProperties"], &new["additionalProperties"]) {
        (Value::Bool(false), _) => {}
        (_, Value::Bool(false)) => {
            problems.push("additionalProperties: unknown fields are no longer allowed".into())
        }
        (old_schema, new_schema) => {
            compare_leaves("additionalProperties", old_schema, new_schema, problems)
        }
    }
}

/// The names of a `required` list.
fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .map(|names| {
            names
                .iter()
                .filter_map(|n| n.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// `prefix` for a pattern `^prefix` of letters, digits and `_` only.
fn prefix_of(pattern: &str) -> Option<&str> {
    let prefix = pattern.strip_prefix('^')?;
    prefix
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_')
        .then_some(prefix)
}

/// The keywords [`compare_leaves`] understands.
const LEAF_KEYWORDS: [&str; 8] = [
    "type",
    "format",
    "pattern",
    "const",
    "enum",
    "minimum",
    "maximum",
    "description",
];

/// Checks that the leaf schema `new` of field `name` accepts everything `old`
/// accepts, with the same format, pattern and constant. An absent schema, or
/// `true`, accepts everything.
fn compare_leaves(name: &str, old: &Value, new: &Value, problems: &mut Vec<String>) {
    let empty = Map::new();
    let keywords = |schema: &'_ Value| match schema {
        Value::Object(map) => map.clone(),
        _ => empty.clone(),
    };
    let (old_map, new_map) = (keywords(old), keywords(new));
    for keyword in old_map.keys().chain(new_map.keys()) {
        if !LEAF_KEYWORDS.contains(&keyword.as_str()) {
            problems.push(format!(
                "{name}: `{keyword}` is a keyword this check cannot compare"
            ));
        }
    }
    if *new == Value::Bool(false) && *old != Value::Bool(false) {
        problems.push(format!("{name}: no value is allowed any more"));
    }

    let old_types = types(old_map.get("type"));
    let new_types = types(new_map.get("type"));
    let lost: Vec<&str> = old_types
        .iter()
        .filter(|t| !new_types.iter().any(|n| covers(n, t)))
        .copied()
        .collect();
    if !lost.is_empty() {
        problems.push(format!(
            "{name}: type narrowed from {} to {} ({} no longer allowed)",
            show_types(&old_types),
            show_types(&new_types),
            lost.join(", ")
        ));
    }
    for keyword in ["format", "pattern", "const"] {
        if old_map.get(keyword) != new_map.get(keyword) {
            problems.push(format!(
                "{name}: {keyword} changed from {} to {}",
                show(old_map.get(keyword)),
                show(new_map.get(keyword))
            ));
        }
    }
    match (old_map.get("enum"), new_map.get("enum")) {
        (_, None) => {}
        (Some(Value::Array(old_values)), Some(Value::Array(new_values))) => {
            for value in old_values {
                if !new_values.contains(value) {
                    problems.push(format!("{name}: enum no longer allows {value}"));
                }
            }
        }
        (_, Some(_)) => problems.push(format!("{name}: enum added or not a list")),
    }
    for (keyword, tighter) in [("minimum", 1.0), ("maximum", -1.0)] {
        let bound = |map: &Map<String, Value>| map.get(keyword).and_then(Value::as_f64);
        match (bound(&old_map), bound(&new_map)) {
            (_, None) => {}
            (None, Some(new_bound)) => {
                problems.push(format!("{name}: {keyword} {new_bound} added"))
            }
            (Some(old_bound), Some(new_bound)) => {
                if (new_bound - old_bound) * tighter > 0.0 {
                    problems.push(format!(
                        "{name}: {keyword} tightened from {old_bound} to {new_bound}"
                    ));
                }
            }
        }
    }
}

/// Every JSON type, for a schema without `type`.
const ALL_TYPES: [&str; 6] = ["string", "number", "boolean", "null", "object", "array"];

/// The types a `type` keyword allows.
fn types(keyword: Option<&Value>) -> Vec<&str> {
    match keyword {
        None => ALL_TYPES.to_vec(),
        Some(Value::String(one)) => vec![one.as_str()],
        Some(Value::Array(many)) => many.iter().filter_map(Value::as_str).collect(),
        Some(_) => Vec::new(),
    }
}

/// Whether type `wide` allows every value of type `narrow` (`number` covers `integer`).
fn covers(wide: &str, narrow: &str) -> bool {
    wide == narrow || (wide == "number" && narrow == "integer")
}

fn show_types(types: &[&str]) -> String {
    format!("[{}]", types.join(", "))
}

fn show(value: Option<&Value>) -> String {
    value.map_or_else(|| "none".to_string(), Value::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({
            "type": "object",
            "required": ["id", "when"],
            "properties": {
                "id": {"type": "integer", "minimum": 0, "description": "d"},
                "when": {"type": "string", "format": "date-time", "pattern": "Z$"},
                "kind": {"type": ["string", "null"]},
                "version": {"const": 1},
                "level": {"enum": ["a", "b"]},
                "amount": {"type": "number", "maximum": 10},
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
    fn additions_and_widenings_are_compatible() {
        let problems = problems_after(|s| {
            s["properties"]["new_field"] = json!({"type": "string"});
            s["properties"]["kind"]["type"] = json!(["string", "null", "number"]);
            s["properties"]["id"]["type"] = json!("number");
            s["properties"]["id"]["minimum"] = json!(-1);
            s["properties"]["amount"]["maximum"] = json!(20);
            s["properties"]["level"]["enum"] = json!(["a", "b", "c"]);
            s["properties"]["id"]["description"] = json!("other words");
            s["patternProperties"]["^more_"] = json!({"type": "string"});
            s["properties"]["extra_wide"] =
                json!({"type": ["string", "number", "boolean", "null"]});
        });
        assert_eq!(problems, Vec::<String>::new());
    }

    #[test]
    fn every_narrowing_is_reported() {
        type Edit = Box<dyn FnOnce(&mut Value)>;
        let cases: Vec<(&str, Edit)> = vec![
            ("kind: removed", Box::new(|s| {
                s["properties"].as_object_mut().unwrap().remove("kind");
            })),
            ("kind: type narrowed from [string, null] to [string] (null no longer allowed)",
             Box::new(|s| s["properties"]["kind"]["type"] = json!("string"))),
            ("amount: type narrowed from [number] to [integer] (number no longer allowed)",
             Box::new(|s| s["properties"]["amount"]["type"] = json!("integer"))),
            ("when: format changed from \"date-time\" to \"date\"",
             Box::new(|s| s["properties"]["when"]["format"] = json!("date"))),
            ("when: format changed from \"date-time\" to none", Box::new(|s| {
                s["properties"]["when"].as_object_mut().unwrap().remove("format");
            })),
            ("kind: format changed from none to \"email\"",
             Box::new(|s| s["properties"]["kind"]["format"] = json!("email"))),
            ("when: pattern changed from \"Z$\" to \"^2\"",
             Box::new(|s| s["properties"]["when"]["pattern"] = json!("^2"))),
            ("version: const changed from 1 to 2",
             Box::new(|s| s["properties"]["version"]["const"] = json!(2))),
            ("level: enum no longer allows \"b\"",
             Box::new(|s| s["properties"]["level"]["enum"] = json!(["a"]))),
            ("kind: enum added or not a list",
             Box::new(|s| s["properties"]["kind"]["enum"] = json!(["x"]))),
            ("id: minimum tightened from 0 to 1",
             Box::new(|s| s["properties"]["id"]["minimum"] = json!(1))),
            ("amount: maximum tightened from 10 to 9",
             Box::new(|s| s["properties"]["amount"]["maximum"] = json!(9))),
            ("kind: maximum 5 added",
             Box::new(|s| s["properties"]["kind"]["maximum"] = json!(5))),
            ("kind: required now",
             Box::new(|s| s["required"] = json!(["id", "when", "kind"]))),
            ("extra_count: type narrowed from [string, number, boolean, null] to [integer] (string, number, boolean, null no longer allowed)",
             Box::new(|s| s["properties"]["extra_count"] = json!({"type": "integer"}))),
            ("^extra_: fields matching it are no longer allowed", Box::new(|s| {
                s["patternProperties"].as_object_mut().unwrap().remove("^extra_");
            })),
            ("^extra_: type narrowed from [string, number, boolean, null] to [string] (number, boolean, null no longer allowed)",
             Box::new(|s| s["patternProperties"]["^extra_"]["type"] = json!("string"))),
            ("kind: `minLength` is a keyword this check cannot compare",
             Box::new(|s| s["properties"]["kind"]["minLength"] = json!(1))),
            ("kind: no value is allowed any more",
             Box::new(|s| s["properties"]["kind"] = json!(false))),
        ];
        for (expected, edit) in cases {
            let problems = problems_after(edit);
            assert!(
                problems.iter().any(|p| p == expected),
                "expected {expected:?} in {problems:?}"
            );
        }
    }

    #[test]
    fn closing_an_open_object_is_reported() {
        let old = json!({"type": "object", "properties": {}});
        let closed = json!({"type": "object", "properties": {}, "additionalProperties": false});
        assert_eq!(
            breaking_changes(&old, &closed),
            vec!["additionalProperties: unknown fields are no longer allowed"]
        );
        // A field named now must accept what the open object accepted (anything).
        let named = json!({"type": "object", "properties": {"a": {"type": "string"}}});
        assert_eq!(
            breaking_changes(&old, &named),
            vec!["a: type narrowed from [string, number, boolean, null, object, array] to [string] (number, boolean, null, object, array no longer allowed)"]
        );
        assert_eq!(breaking_changes(&closed, &old), Vec::<String>::new());
    }

    #[test]
    fn patterns_other_than_a_prefix_are_reported() {
        let old = json!({"patternProperties": {"_x$": {}}, "additionalProperties": false});
        assert_eq!(
            breaking_changes(&old, &old),
            vec!["_x$: a pattern this check cannot compare"]
        );
    }
}
