//! The webhook body as the platform sends it: a change notification of one
//! [`Entity`] (a customer, a booking), its latest state under the entity's key
//! (`Customer`, `Booking`).
//!
//! Parsing is strict about the fields the connector needs (`ChangeDateTime`,
//! `Customer.Id` or `Booking.Id`, `Changes[].ChangeType`) and lenient about everything else:
//! unknown fields are kept in order, never rejected, so that nothing the platform
//! sends is dropped. A key that appears twice in any object, at any depth, is
//! refused, because which of the two values is meant cannot be known. Numbers keep
//! the digits they were sent with (serde_json's `arbitrary_precision`): an integer
//! beyond 64 bits or a decimal with more digits than an f64 holds is never rounded.
//! Values are kept as [`Field`]s: nested objects and arrays as their compact text.
//! For an entity that flattens objects ([`Entity::flatten_objects`]),
//! [`Notification::flatten_objects`] then replaces each object in its state by its
//! members, named by path (`Customer.FirstName`), to any depth; arrays and empty
//! objects stay text.
//!
//! Errors carry the path of the offending value (`Changes[1].ChangeType`).

use std::fmt;

mod field;
mod flatten;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use crate::entity::Entity;

pub use field::Field;
use field::{Hashed, Plain};
use flatten::flatten_objects;
pub use flatten::NamesTooLong;

/// One webhook body: the entity's latest state and the changes that were made.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// Which family of webhooks it is.
    pub entity: &'static Entity,
    /// `ChangeDateTime` exactly as sent (normalized later, hashed raw for event ids).
    pub change_date_time: String,
    /// The entity's latest state (`Customer`).
    pub latest: Latest,
    pub changes: Vec<Change>,
    /// Top-level fields other than the three above, in the order sent.
    pub extra: Vec<(String, Field)>,
}

/// The entity's latest state (`Customer`): its id plus every other field in the
/// order sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Latest {
    pub id: i64,
    pub fields: Vec<(String, Field)>,
}

/// One element of `Changes`.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub change_type: String,
    /// `OldValue` as sent; `null` when absent.
    pub old_value: Field,
    /// `NewValue` as sent; `null` when absent.
    pub new_value: Field,
    /// Fields of the change other than the three above, in the order sent.
    pub extra: Vec<(String, Field)>,
}

/// Why a body is not a notification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// The bytes are not JSON (syntax error, truncated, invalid UTF-8, too deep).
    #[error("body is not valid JSON: {message}")]
    InvalidJson { message: String },
    /// The JSON does not have the shape of a notification.
    #[error("{path}: {message}")]
    InvalidShape { path: String, message: String },
}

/// Parses a raw webhook body of `entity`'s family.
pub fn parse(body: &[u8], entity: &'static Entity) -> Result<Notification, PayloadError> {
    let mut json = serde_json::Deserializer::from_slice(body);
    let parsed = NotificationSeed(entity)
        .deserialize(&mut json)
        .and_then(|notification| json.end().map(|()| notification));
    // Tracking the path costs an allocation per key, so only a body that failed
    // is parsed again with it, to say where the problem is.
    parsed.map_err(|_| explain_failure(body, entity))
}

impl Notification {
    /// For an entity that flattens objects ([`Entity::flatten_objects`]), replaces
    /// every non-empty object of its state by its members, named by path
    /// (`Customer.FirstName`), to any depth, in the order sent; arrays and empty
    /// objects stay text. Names repeat their parents' (`A.B.C`, `A.B.D`), so their
    /// total can grow faster than the body: past `budget` bytes it stops, refused.
    pub fn flatten_objects(&mut self, budget: usize) -> Result<(), NamesTooLong> {
        if self.entity.flatten_objects {
            let fields = std::mem::take(&mut self.latest.fields);
            self.latest.fields = flatten_objects(fields, budget)?;
        }
        Ok(())
    }
}

/// The error of a body that does not parse, with the path of the offending value.
fn explain_failure(body: &[u8], entity: &'static Entity) -> PayloadError {
    let mut json = serde_json::Deserializer::from_slice(body);
    let mut track = serde_path_to_error::Track::new();
    let tracked = serde_path_to_error::Deserializer::new(&mut json, &mut track);
    let result = NotificationSeed(entity)
        .deserialize(tracked)
        .map_err(|e| serde_path_to_error::Error::new(track.path(), e));
    match result {
        Err(err) => shape_error(err),
        Ok(_) => match json.end() {
            Err(e) => PayloadError::InvalidJson {
                message: e.to_string(),
            },
            // Unreachable: the same parser accepted what it just refused.
            Ok(()) => PayloadError::InvalidJson {
                message: "the body could not be parsed".into(),
            },
        },
    }
}

fn shape_error(err: serde_path_to_error::Error<serde_json::Error>) -> PayloadError {
    let path = err.path().to_string();
    let inner = err.into_inner();
    if !inner.is_data() {
        return PayloadError::InvalidJson {
            message: inner.to_string(),
        };
    }
    // serde_json appends " at line L column C"; the path says where more usefully.
    let message = inner.to_string();
    let message = match message.rfind(" at line ") {
        Some(at) => message[..at].to_string(),
        None => message,
    };
    // A missing field is reported at its parent; name the field itself instead.
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'))
    {
        let path = if path == "." {
            field.to_string()
        } else {
            format!("{path}.{field}")
        };
        return PayloadError::InvalidShape {
            path,
            message: "missing field".to_string(),
        };
    }
    let path = if path == "." {
        "body".to_string()
    } else {
        path
    };
    PayloadError::InvalidShape { path, message }
}

/// Reads the entries of a JSON object: `known` reads the value of a key it knows
/// (and answers `None` for any other); every other key is kept with its value, in
/// order, and returned. A name repeated among those is refused.
fn read_object<'de, A, F>(mut map: A, mut known: F) -> Result<Vec<(String, Field)>, A::Error>
where
    A: MapAccess<'de>,
    F: FnMut(&str, &mut A) -> Option<Result<(), A::Error>>,
{
    let mut unknown = Vec::new();
    while let Some(key) = map.next_key::<String>()? {
        match known(&key, &mut map) {
            Some(read) => read?,
            None => {
                let value = map.next_value_seed(Plain)?;
                unknown.push((key, value));
            }
        }
    }
    check_unique(&unknown)?;
    Ok(unknown)
}

/// Stores a known field, refusing a second occurrence.
fn set_once<T, E: de::Error>(slot: &mut Option<T>, value: T, name: &str) -> Result<(), E> {
    if slot.is_some() {
        return Err(duplicate(name));
    }
    *slot = Some(value);
    Ok(())
}

fn duplicate<E: de::Error>(name: &str) -> E {
    de::Error::custom(format!("duplicate field `{name}`"))
}

/// Refuses a name that appears twice among the kept unknown fields.
fn check_unique<E: de::Error>(fields: &[(String, Field)]) -> Result<(), E> {
    let mut names: Vec<&str> = fields.iter().map(|(name, _)| name.as_str()).collect();
    names.sort_unstable();
    match names.windows(2).find(|pair| pair[0] == pair[1]) {
        Some(pair) => Err(duplicate(pair[0])),
        None => Ok(()),
    }
}

fn required<T, E: de::Error>(value: Option<T>, name: &'static str) -> Result<T, E> {
    value.ok_or_else(|| de::Error::missing_field(name))
}

/// Reads a notification of the entity it holds: the entity's latest state is
/// under the entity's own key (`Customer`).
struct NotificationSeed(&'static Entity);

impl<'de> DeserializeSeed<'de> for NotificationSeed {
    type Value = Notification;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Notification, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for NotificationSeed {
    type Value = Notification;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a {} notification object", self.0.name)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Notification, A::Error> {
        let entity = self.0;
        let (mut date, mut latest, mut changes) = (None, None, None);
        let extra = read_object(map, |key, map| {
            Some(match key {
                "ChangeDateTime" => map.next_value().and_then(|v| set_once(&mut date, v, key)),
                "Changes" => map
                    .next_value()
                    .and_then(|v| set_once(&mut changes, v, key)),
                _ if key == entity.body_key => {
                    map.next_value().and_then(|v| set_once(&mut latest, v, key))
                }
                _ => return None,
            })
        })?;
        Ok(Notification {
            entity,
            change_date_time: required(date, "ChangeDateTime")?,
            latest: required(latest, entity.body_key)?,
            changes: required(changes, "Changes")?,
            extra,
        })
    }
}

impl<'de> Deserialize<'de> for Latest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct LatestVisitor;
        impl<'de> Visitor<'de> for LatestVisitor {
            type Value = Latest;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object with an integer Id")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Latest, A::Error> {
                let mut id = None;
                let fields = read_object(map, |key, map| match key {
                    "Id" => Some(map.next_value().and_then(|v| set_once(&mut id, v, key))),
                    _ => None,
                })?;
                Ok(Latest {
                    id: required(id, "Id")?,
                    fields,
                })
            }
        }
        deserializer.deserialize_map(LatestVisitor)
    }
}

impl<'de> Deserialize<'de> for Change {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ChangeVisitor;
        impl<'de> Visitor<'de> for ChangeVisitor {
            type Value = Change;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a change object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Change, A::Error> {
                let (mut change_type, mut old_value, mut new_value) = (None, None, None);
                let extra = read_object(map, |key, map| {
                    Some(match key {
                        "ChangeType" => map
                            .next_value()
                            .and_then(|v| set_once(&mut change_type, v, key)),
                        "OldValue" => map
                            .next_value_seed(Hashed)
                            .and_then(|v| set_once(&mut old_value, v, key)),
                        "NewValue" => map
                            .next_value_seed(Hashed)
                            .and_then(|v| set_once(&mut new_value, v, key)),
                        _ => return None,
                    })
                })?;
                Ok(Change {
                    change_type: required(change_type, "ChangeType")?,
                    old_value: old_value.unwrap_or(Field::Scalar(serde_json::Value::Null)),
                    new_value: new_value.unwrap_or(Field::Scalar(serde_json::Value::Null)),
                    extra,
                })
            }
        }
        deserializer.deserialize_map(ChangeVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entity::CUSTOMER;
    use serde_json::{json, Value};

    fn shape(path: &str, message: &str) -> PayloadError {
        PayloadError::InvalidShape {
            path: path.to_string(),
            message: message.to_string(),
        }
    }

    fn parse_value(value: Value) -> Result<Notification, PayloadError> {
        parse(value.to_string().as_bytes(), &CUSTOMER)
    }

    #[test]
    fn parses_the_seed_sample_keeping_field_order() {
        let body = include_bytes!("../../tests/fixtures/seed_sample.json");
        let n = parse(body, &CUSTOMER).unwrap();
        assert_eq!(n.change_date_time, "2018-11-16T10:46:20.7741026Z");
        assert_eq!(n.latest.id, 862);
        assert_eq!(n.latest.fields.len(), 19);
        assert_eq!(n.latest.fields[0].0, "Title");
        assert_eq!(n.latest.fields[18].0, "RestaurantSmsMarketingOptInText");
        assert_eq!(n.changes.len(), 4);
        assert_eq!(
            n.changes[1].change_type,
            "CustomerGroupEmailMarketingOptinChanged"
        );
        assert_eq!(n.changes[1].old_value, Field::Scalar(json!(true)));
        assert_eq!(n.changes[2].new_value, Field::Scalar(Value::Null));
        assert!(n.extra.is_empty());
    }

    #[test]
    fn keeps_unknown_fields_everywhere() {
        let n = parse_value(json!({
            "ChangeDateTime": "2018-11-12T10:15:00", "Source": "pos",
            "Customer": {"Id": 1, "Nested": {"a": [1]}},
            "Changes": [{"ChangeType": "X", "FieldName": "Email"}]
        }))
        .unwrap();
        assert_eq!(n.extra, vec![("Source".to_string(), json!("pos").into())]);
        assert_eq!(
            n.latest.fields[0].1.clone().into_flat(),
            json!(r#"{"a":[1]}"#)
        );
        assert_eq!(n.changes[0].extra[0].0, "FieldName");
        assert_eq!(n.changes[0].old_value, Field::Scalar(Value::Null));
    }

    #[test]
    fn names_the_missing_field_with_its_path() {
        let err = parse_value(json!({
            "ChangeDateTime": "2018-11-12T10:15:00", "Customer": {"Id": 1},
            "Changes": [{"ChangeType": "A"}, {"OldValue": 1}]
        }))
        .unwrap_err();
        assert_eq!(err, shape("Changes[1].ChangeType", "missing field"));
        let err = parse_value(json!({"ChangeDateTime": "x", "Customer": {}, "Changes": []}));
        assert_eq!(err.unwrap_err(), shape("Customer.Id", "missing field"));
        let err = parse_value(json!({"Customer": {"Id": 1}, "Changes": []}));
        assert_eq!(err.unwrap_err(), shape("ChangeDateTime", "missing field"));
    }

    #[test]
    fn names_wrong_types_with_their_path() {
        let err = parse_value(json!({
            "ChangeDateTime": "x", "Customer": {"Id": "862"}, "Changes": []
        }))
        .unwrap_err();
        assert!(
            matches!(&err, PayloadError::InvalidShape { path, message }
                if path == "Customer.Id" && message.contains("expected i64")),
            "{err}"
        );
        let err = parse_value(json!({
            "ChangeDateTime": "x", "Customer": {"Id": 1}, "Changes": {"ChangeType": "A"}
        }))
        .unwrap_err();
        assert!(
            matches!(&err, PayloadError::InvalidShape { path, message }
                if path == "Changes" && message.contains("expected a sequence")),
            "{err}"
        );
        let err = parse_value(json!({
            "ChangeDateTime": "x", "Customer": {"Id": 1}, "Changes": [{"ChangeType": 5}]
        }))
        .unwrap_err();
        assert!(
            matches!(&err, PayloadError::InvalidShape { path, .. } if path == "Changes[0].ChangeType"),
            "{err}"
        );
        let err = parse_value(json!([1, 2])).unwrap_err();
        assert!(
            matches!(&err, PayloadError::InvalidShape { path, .. } if path == "body"),
            "{err}"
        );
    }

    #[test]
    fn refuses_ids_outside_i64() {
        let body = br#"{"ChangeDateTime":"x","Customer":{"Id":9223372036854775808},"Changes":[]}"#;
        let err = parse(body, &CUSTOMER).unwrap_err();
        assert!(
            matches!(&err, PayloadError::InvalidShape { path, .. } if path == "Customer.Id"),
            "{err}"
        );
    }

    /// A booking body, parsed and flattened.
    fn flat(body: &[u8]) -> Notification {
        let mut n = parse(body, &crate::entity::BOOKING).unwrap();
        n.flatten_objects(usize::MAX).unwrap();
        n
    }

    #[test]
    fn a_booking_s_objects_become_fields_named_by_path_in_order() {
        let body = br#"{"ChangeDateTime":"x","Booking":{"Id":7,"A":1,
            "Customer":{"FirstName":"F","Address":{"Street":{"No":"12a"}},"Tags":["x"]},
            "Empty":{},"List":[{"K":1}],"Last":null},"Changes":[]}"#;
        let n = flat(body);
        assert_eq!(n.latest.id, 7);
        let names: Vec<&str> = n.latest.fields.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "A",
                "Customer.FirstName",
                "Customer.Address.Street.No",
                "Customer.Tags",
                "Empty",
                "List",
                "Last"
            ]
        );
        let text = |text: &str| Field::Nested {
            text: text.into(),
            id_text: None,
        };
        assert_eq!(n.latest.fields[2].1, Field::Scalar(json!("12a")));
        assert_eq!(n.latest.fields[3].1, text(r#"["x"]"#));
        assert_eq!(n.latest.fields[4].1, text("{}"));
        assert_eq!(n.latest.fields[5].1, text(r#"[{"K":1}]"#));
        // Numbers keep their digits through the flattening.
        let body = br#"{"ChangeDateTime":"x","Booking":{"Id":7,"M":{"Big":18446744073709551617,"D":12.50}},"Changes":[]}"#;
        let n = flat(body);
        assert_eq!(
            n.latest.fields[0].1.clone().into_flat().to_string(),
            "18446744073709551617"
        );
        assert_eq!(
            n.latest.fields[1].1.clone().into_flat().to_string(),
            "12.50"
        );
    }

    #[test]
    fn flattened_names_stop_at_the_budget() {
        use crate::entity::BOOKING;
        // 40 levels of 100-byte names over 2000 members: the names of the
        // members alone would take 40 * 101 * 2000 = 8 MB from a 30 kB body.
        let name = "N".repeat(100);
        let members: Vec<String> = (0..2000).map(|i| format!("\"m{i}\":1")).collect();
        let mut state = format!("{{{}}}", members.join(","));
        for _ in 0..40 {
            state = format!("{{\"{name}\":{state}}}");
        }
        let body =
            format!(r#"{{"ChangeDateTime":"x","Booking":{{"Id":1,"A":{state}}},"Changes":[]}}"#);
        let parsed = parse(body.as_bytes(), &BOOKING).unwrap();
        assert_eq!(parsed.clone().flatten_objects(1 << 20), Err(NamesTooLong));
        let mut flat = parsed;
        flat.flatten_objects(10 << 20).unwrap();
        assert_eq!(flat.latest.fields.len(), 2000);
        // Exactly at the budget passes, one byte over does not.
        let fields = || {
            vec![(
                "A".to_string(),
                Field::from(serde_json::json!({"BC": 1, "D": 2})),
            )]
        };
        assert_eq!(flatten_objects(fields(), 7).unwrap().len(), 2);
        assert_eq!(flatten_objects(fields(), 6).unwrap_err(), NamesTooLong);
        // A customer's objects stay text, whatever the budget.
        let body = br#"{"ChangeDateTime":"x","Customer":{"Id":7,"A":{"B":1}},"Changes":[]}"#;
        let mut n = parse(body, &CUSTOMER).unwrap();
        n.flatten_objects(0).unwrap();
        assert_eq!(
            n.latest.fields[0].1,
            Field::Nested {
                text: r#"{"B":1}"#.into(),
                id_text: None
            }
        );
    }

    #[test]
    fn an_object_text_that_does_not_read_back_is_kept_whole() {
        let broken = Field::Nested {
            text: r#"{"a":1,"b":"#.into(),
            id_text: None,
        };
        let fields = || {
            vec![
                ("X".to_string(), broken.clone()),
                ("Y".to_string(), Field::Scalar(json!(2))),
            ]
        };
        // `X.a` (3 bytes) was read before the text failed: taken back, its bytes
        // included, so "X" and "Y" fit in 4 bytes.
        assert_eq!(flatten_objects(fields(), 4).unwrap(), fields());
        assert_eq!(flatten_objects(fields(), 2), Err(NamesTooLong));
    }

    #[test]
    fn a_booking_body_is_refused_like_a_customer_one_naming_booking_paths() {
        use crate::entity::BOOKING;
        for (body, path, message) in [
            (
                r#"{"ChangeDateTime":"x","Booking":{"Ref":1},"Changes":[]}"#,
                "Booking.Id",
                "missing field",
            ),
            (
                r#"{"ChangeDateTime":"x","Customer":{"Id":1},"Changes":[]}"#,
                "Booking",
                "missing field",
            ),
            (
                r#"{"ChangeDateTime":"x","Booking":[1],"Changes":[]}"#,
                "Booking",
                "invalid type: sequence, expected an object with an integer Id",
            ),
            (
                r#"{"ChangeDateTime":"x","Booking":{"Id":1,"Customer":{"A":1,"A":2}},"Changes":[]}"#,
                "Booking.Customer",
                "duplicate field `A`",
            ),
        ] {
            assert_eq!(
                parse(body.as_bytes(), &BOOKING).unwrap_err(),
                shape(path, message),
                "{body}"
            );
        }
    }

    #[test]
    fn a_body_or_a_change_of_the_wrong_type_says_what_was_expected() {
        use crate::entity::BOOKING;
        for (body, entity, expected) in [
            (
                &b"[1]"[..],
                &CUSTOMER,
                "expected a customer notification object",
            ),
            (
                &b"7"[..],
                &BOOKING,
                "expected a booking notification object",
            ),
            (
                &br#"{"ChangeDateTime":"x","Customer":{"Id":1},"Changes":[5]}"#[..],
                &CUSTOMER,
                "expected a change object",
            ),
        ] {
            let err = parse(body, entity).unwrap_err().to_string();
            assert!(err.contains(expected), "{err}");
        }
    }

    #[test]
    fn refuses_duplicate_keys() {
        let body = br#"{"ChangeDateTime":"x","Customer":{"Id":1,"Id":2},"Changes":[]}"#;
        let err = parse(body, &CUSTOMER).unwrap_err();
        assert_eq!(err, shape("Customer", "duplicate field `Id`"));
        let body = br#"{"ChangeDateTime":"x","Customer":{"Id":1,"A":1,"A":2},"Changes":[]}"#;
        assert_eq!(
            parse(body, &CUSTOMER).unwrap_err(),
            shape("Customer", "duplicate field `A`")
        );
    }

    #[test]
    fn refuses_duplicate_keys_at_every_depth_naming_the_object() {
        for (body, path, key) in [
            (
                r#"{"ChangeDateTime":"x","Customer":{"Id":5,"Prefs":{"a":1,"a":2}},"Changes":[]}"#,
                "Customer.Prefs",
                "a",
            ),
            (
                r#"{"ChangeDateTime":"x","Customer":{"Id":5},"Changes":[{"ChangeType":"T","OldValue":{"k":{"z":1,"z":1}}}]}"#,
                "Changes[0].OldValue.k",
                "z",
            ),
            (
                r#"{"ChangeDateTime":"x","Customer":{"Id":5,"List":[{"b":1},{"b":1,"b":2}]},"Changes":[]}"#,
                "Customer.List[1]",
                "b",
            ),
            (
                r#"{"ChangeDateTime":"x","Customer":{"Id":5},"Changes":[],"Meta":{"q":1,"q":1}}"#,
                "Meta",
                "q",
            ),
            (
                r#"{"ChangeDateTime":"x","ChangeDateTime":"y","Customer":{"Id":5},"Changes":[]}"#,
                "body",
                "ChangeDateTime",
            ),
        ] {
            let err = parse(body.as_bytes(), &CUSTOMER).unwrap_err();
            assert_eq!(
                err,
                shape(path, &format!("duplicate field `{key}`")),
                "{body}"
            );
        }
    }

    #[test]
    fn numbers_keep_every_digit_as_sent() {
        // Every digit is kept; serde_json writes an exponent with its sign (1e5 -> 1e+5).
        let body = br#"{"ChangeDateTime":"x","Customer":{"Id":5,"Big":123456789012345678901234567890,"Dec":0.10000000000000000000001,"Exp":1e5,"Neg":-18446744073709551617,"Small":12,"Nested":[1.50]},
            "Changes":[{"ChangeType":"T","OldValue":18446744073709551617,"NewValue":-0}]}"#;
        let n = parse(body, &CUSTOMER).unwrap();
        let text = |v: &Field| match v.clone().into_flat() {
            Value::String(nested) => nested,
            scalar => scalar.to_string(),
        };
        let fields: Vec<String> = n.latest.fields.iter().map(|(_, v)| text(v)).collect();
        assert_eq!(
            fields,
            [
                "123456789012345678901234567890",
                "0.10000000000000000000001",
                "1e+5",
                "-18446744073709551617",
                "12",
                "[1.50]"
            ]
        );
        assert_eq!(text(&n.changes[0].old_value), "18446744073709551617");
        assert_eq!(text(&n.changes[0].new_value), "-0");
        assert!(matches!(&n.latest.fields[4].1, Field::Scalar(v) if v.is_u64()));
    }

    #[test]
    fn reports_syntax_errors_as_invalid_json() {
        for body in [
            &b""[..],
            b"{",
            b"not json",
            b"{\"ChangeDateTime\": \"\xff\"}",
            br#"{"ChangeDateTime":"x","Customer":{"Id":1},"Changes":[]} trailing"#,
        ] {
            let err = parse(body, &CUSTOMER).unwrap_err();
            assert!(
                matches!(err, PayloadError::InvalidJson { .. }),
                "{body:?}: {err}"
            );
        }
        let deep = format!(
            r#"{{"ChangeDateTime":"x","Customer":{{"Id":1,"A":{}}},"Changes":[]}}"#,
            "[".repeat(10_000)
        );
        assert!(matches!(
            parse(deep.as_bytes(), &CUSTOMER).unwrap_err(),
            PayloadError::InvalidJson { .. }
        ));
    }
}
