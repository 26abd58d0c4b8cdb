//! Turns one parsed notification into flat events, one per change (schema version 1).
//!
//! Pure: no I/O, no clock. The receive time is passed in, so the same notification
//! and time always give the same events. docs/events.md lists the fields.
//!
//! Field naming: the entity's `Customer.X` becomes `customer_<snake(X)>` (a booking's
//! `Booking.Customer.FirstName`, flattened by the parser to `Customer.FirstName`,
//! becomes `booking_customer_first_name`), unknown top-level fields
//! `notification_<snake(X)>`, unknown change fields `change_<snake(X)>`. Object and
//! array values become their compact JSON text so the event stays flat. Should two
//! names meet (say `Email` and `email`), the later one gets a `_2`, `_3`, ... suffix:
//! no field is ever dropped or overwritten.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Datelike, NaiveDateTime, SecondsFormat, Utc};
use serde_json::Value;
use uuid::Uuid;

use crate::entity::{Entity, FieldType};
use crate::event_id;
use crate::payload::{Change, Field, Notification};

pub use crate::event::{FlatEvent, SharedFields, SCHEMA_VERSION};

/// Keys every event of `entity` has, in order; a platform field never takes one
/// of these names. `entity` is one of them but for the customer's
/// ([`Entity::predates_entities`]).
pub fn fixed_keys(entity: &Entity) -> Vec<&'static str> {
    let named = (!entity.predates_entities).then_some("entity");
    let keys = ["event_id", "schema_version"].into_iter().chain(named);
    keys.chain([
        "change_type",
        "change_index",
        "change_count",
        "change_date_time",
        "old_value",
        "new_value",
        entity.id_key,
        "received_at",
    ])
    .collect()
}

/// Keys every topic receives as they are, whatever its field rules: the fixed
/// keys but `old_value` and `new_value` (which rules may remove or pseudonymise),
/// and `entity` (a field of every later entity's events).
pub fn envelope_keys(entity: &Entity) -> Vec<&'static str> {
    let mut keys = fixed_keys(entity);
    keys.retain(|key| !matches!(*key, "old_value" | "new_value"));
    if entity.predates_entities {
        keys.push("entity");
    }
    keys
}

/// The keys of a state record that field rules never touch, besides the
/// entity's id (see [`crate::state`]).
pub const STATE_ENVELOPE: [&str; 5] = [
    "schema_version",
    "entity",
    "change_date_time",
    "event_ids",
    "received_at",
];

/// Why a parsed notification cannot become events.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NormalizeError {
    #[error(
        "ChangeDateTime: {value:?} is not a date-time (expected e.g. 2018-11-16T10:46:20.7741026Z)"
    )]
    InvalidChangeDateTime { value: String },
    /// A field the contract types holds another type.
    #[error("{field}: expected {expected}, got {got}")]
    FieldType {
        field: String,
        expected: &'static str,
        got: &'static str,
    },
}

/// Turns a notification into its flat events: one per change, or exactly one with
/// `change_type: null` when `Changes` is empty. Consumes the notification, so its
/// values move into the events instead of being copied.
pub fn normalize(
    notification: Notification,
    received_at: DateTime<Utc>,
) -> Result<Vec<FlatEvent>, NormalizeError> {
    let Notification {
        entity,
        change_date_time: raw_date,
        latest,
        changes,
        extra,
    } = notification;
    let Some(change_date_time) = parse_timestamp(&raw_date).map(format_timestamp) else {
        return Err(NormalizeError::InvalidChangeDateTime { value: raw_date });
    };
    let fixed_keys: HashSet<&str> = fixed_keys(entity).into_iter().collect();
    let shared = Arc::new(shared_fields(entity, latest.fields, extra, &fixed_keys)?);
    let mut events = EventMaker {
        entity,
        entity_id: latest.id,
        raw_date: &raw_date,
        change_date_time,
        received_at: format_timestamp(received_at),
        change_count: changes.len(),
        shared: &shared,
        fixed_keys: &fixed_keys,
        shared_keys: None,
        id_texts: (Vec::new(), Vec::new()),
    };
    Ok(if changes.is_empty() {
        vec![events.event(0, None)]
    } else {
        changes
            .into_iter()
            .enumerate()
            .map(|(index, change)| events.event(index, Some(change)))
            .collect()
    })
}

/// The fields every event of a notification shares: the entity's (`fields`, as
/// sent in its latest state), then the notification's unknown top-level ones
/// (`extra`), each under a key unique among them and against `fixed_keys`.
fn shared_fields(
    entity: &Entity,
    fields: Vec<(String, Field)>,
    extra: Vec<(String, Field)>,
    fixed_keys: &HashSet<&str>,
) -> Result<SharedFields, NormalizeError> {
    // Keys first, values once the keys are final: a typed field is checked under
    // the key it ends up with (`Email` after an `email` becomes `customer_email_2`).
    let mut entity_names = Vec::with_capacity(fields.len());
    let mut shared = Vec::with_capacity(fields.len() + extra.len());
    for (name, value) in fields {
        shared.push((prefixed_snake_case(entity.prefix, &name), value));
        entity_names.push(name);
    }
    for (name, value) in extra {
        shared.push((prefixed_snake_case("notification_", &name), value));
    }
    // Whether an entity's field is a date-time goes by its name as sent, so a
    // `birthDate` after a `BirthDate` is one too under `customer_birth_date_2`.
    let date_like: Vec<bool> = (shared.iter().take(entity_names.len()))
        .map(|(key, _)| is_date_time_key(key))
        .collect();
    make_keys_unique(&mut shared, fixed_keys);
    let shared = shared
        .into_iter()
        .enumerate()
        .map(|(i, (key, value))| {
            let value = match entity_names.get(i) {
                Some(name) => entity_value(entity, &key, name, date_like[i], value)?,
                None => value.into_flat(),
            };
            Ok((key, value))
        })
        .collect::<Result<Vec<_>, NormalizeError>>()?;
    Ok(SharedFields::new(shared, entity_names.len()))
}

/// Makes the events of one notification, one change at a time: what they all
/// share, and what is reused from one change to the next.
struct EventMaker<'a> {
    entity: &'static Entity,
    entity_id: i64,
    /// `ChangeDateTime` as sent, hashed into the event ids.
    raw_date: &'a str,
    change_date_time: String,
    received_at: String,
    change_count: usize,
    shared: &'a Arc<SharedFields>,
    fixed_keys: &'a HashSet<&'static str>,
    /// The names a change's own fields must not take; built once, when the first
    /// change with unknown fields needs it.
    shared_keys: Option<HashSet<&'a str>>,
    /// The id texts of a change's old and new values, reused from change to change.
    id_texts: (Vec<u8>, Vec<u8>),
}

impl EventMaker<'_> {
    /// The event of the change at `index`, or of a notification without changes.
    fn event(&mut self, index: usize, change: Option<Change>) -> FlatEvent {
        let event_id = self.event_id(index, change.as_ref());
        let (change_type, old_value, new_value, change_fields) = match change {
            None => (None, Value::Null, Value::Null, Vec::new()),
            Some(change) => (
                Some(change.change_type),
                change.old_value.into_flat(),
                change.new_value.into_flat(),
                self.change_fields(change.extra),
            ),
        };
        FlatEvent {
            event_id,
            change_type,
            change_index: index,
            change_count: self.change_count,
            change_date_time: self.change_date_time.clone(),
            old_value,
            new_value,
            entity: self.entity,
            entity_id: self.entity_id,
            shared: Arc::clone(self.shared),
            change_fields,
            received_at: self.received_at.clone(),
        }
    }

    /// The id of the event of the change at `index` (see [`event_id::of`]).
    fn event_id(&mut self, index: usize, change: Option<&Change>) -> Uuid {
        let key = change.map(|c| {
            let (old_value, new_value) = &mut self.id_texts;
            old_value.clear();
            new_value.clear();
            c.old_value.write_id_json(old_value);
            c.new_value.write_id_json(new_value);
            event_id::ChangeKey {
                change_type: &c.change_type,
                old_value,
                new_value,
            }
        });
        event_id::of(self.entity, self.entity_id, self.raw_date, index, key)
    }

    /// A change's unknown fields as `change_*` ones, under keys no fixed or shared
    /// field has.
    fn change_fields(&mut self, extra: Vec<(String, Field)>) -> Vec<(String, Value)> {
        let mut change_fields: Vec<(String, Value)> = extra
            .into_iter()
            .map(|(name, value)| (prefixed_snake_case("change_", &name), value.into_flat()))
            .collect();
        if !change_fields.is_empty() {
            let (shared, fixed_keys) = (self.shared, self.fixed_keys);
            let taken = self.shared_keys.get_or_insert_with(|| {
                let shared = shared.fields.iter().map(|(key, _)| key.as_str());
                fixed_keys.iter().copied().chain(shared).collect()
            });
            make_keys_unique(&mut change_fields, taken);
        }
        change_fields
    }
}

/// Makes every key unique among themselves and against `reserved`: a key already
/// taken becomes `key_N` with the smallest N >= 2 still free. Linear in the keys
/// whatever their names: the next N to try is remembered per key, so a thousand
/// keys that all snake-case to the same name cost a thousand probes, not a million.
/// Collisions are rare, so the common case only checks.
fn make_keys_unique<V>(fields: &mut [(String, V)], reserved: &HashSet<&str>) {
    let mut seen: HashSet<&str> = HashSet::with_capacity(fields.len());
    let unique = fields
        .iter()
        .all(|(key, _)| !reserved.contains(key.as_str()) && seen.insert(key.as_str()));
    if unique {
        return;
    }
    drop(seen);
    let mut own: HashSet<String> = HashSet::with_capacity(fields.len());
    let mut next_suffix: HashMap<String, usize> = HashMap::new();
    let free = |key: &str, own: &HashSet<String>| !reserved.contains(key) && !own.contains(key);
    for (key, _) in fields.iter_mut() {
        if !free(key, &own) {
            let n = next_suffix.entry(key.clone()).or_insert(2);
            let mut candidate = format!("{key}_{n}");
            while !free(&candidate, &own) {
                *n += 1;
                candidate = format!("{key}_{n}");
            }
            *n += 1;
            *key = candidate;
        }
        own.insert(key.clone());
    }
}

/// The value of a field of `entity` (`key` is its event key, `name` its name as
/// sent, `date_like` whether that name is a date-time's): a field the contract
/// types ([`Entity::known`]) must have that type or be null; date-time fields are
/// normalized when they parse (a typed one must); everything else is passed on
/// flat as sent.
fn entity_value(
    entity: &Entity,
    key: &str,
    name: &str,
    date_like: bool,
    value: Field,
) -> Result<Value, NormalizeError> {
    // An untyped field is any scalar, as a field the contract does not name.
    let typed = entity
        .known_field(key)
        .filter(|f| f.field_type != FieldType::Scalar);
    let Some(known) = typed else {
        return Ok(match value {
            Field::Scalar(Value::String(text)) if date_like => {
                Value::String(parse_timestamp(&text).map_or(text, format_timestamp))
            }
            other => other.into_flat(),
        });
    };
    let wrong_type = |value: &Field| NormalizeError::FieldType {
        field: format!("{}.{name}", entity.body_key),
        expected: known.field_type.expected(),
        got: kind_of(value),
    };
    let typed = match (known.field_type, &value) {
        (_, Field::Scalar(Value::Null))
        | (FieldType::Text, Field::Scalar(Value::String(_)))
        | (FieldType::Boolean, Field::Scalar(Value::Bool(_))) => true,
        (FieldType::Integer, Field::Scalar(Value::Number(number))) => number.is_i64(),
        (FieldType::DateTime, Field::Scalar(Value::String(text))) => {
            return match parse_timestamp(text) {
                Some(time) => Ok(Value::String(format_timestamp(time))),
                None => Err(wrong_type(&value)),
            }
        }
        _ => false,
    };
    if typed {
        Ok(value.into_flat())
    } else {
        Err(wrong_type(&value))
    }
}

/// What a value is, for error messages.
fn kind_of(value: &Field) -> &'static str {
    match value {
        Field::Scalar(Value::Null) => "null",
        Field::Scalar(Value::Bool(_)) => "a boolean",
        Field::Scalar(Value::Number(_)) => "a number",
        Field::Scalar(Value::String(_)) => "text",
        Field::Scalar(_) | Field::Nested { .. } => "an object or array",
    }
}

/// A snake-cased key whose last word is `date`, or last two `date_time`
/// (`birth_date`, `opt_in_date_time`; not `update`).
fn is_date_time_key(key: &str) -> bool {
    let mut words = key.rsplit('_');
    matches!(
        (words.next(), words.next()),
        (Some("date"), _) | (Some("time"), Some("date"))
    )
}

/// `prefix` followed by the snake case of `name`, built in one allocation:
/// `RelatedProviderId` -> `related_provider_id`, `SMSOptIn` -> `sms_opt_in`.
/// Characters that are neither letters nor digits become `_`.
fn prefixed_snake_case(prefix: &str, name: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + name.len() + 6);
    out.push_str(prefix);
    let mut prev: Option<char> = None;
    let mut chars = name.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_uppercase() {
            let starts_word = match prev {
                Some(p) if p.is_lowercase() || p.is_numeric() => true,
                Some(p) if p.is_uppercase() => chars.peek().is_some_and(|n| n.is_lowercase()),
                _ => false,
            };
            if starts_word && !out.ends_with('_') {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else if c.is_alphanumeric() {
            out.push(c);
        } else {
            out.push('_');
        }
        prev = Some(c);
    }
    out
}

/// Parses every timestamp shape the platform sends: RFC 3339 with `Z` or an offset
/// and any number of fraction digits, or no zone at all (taken as UTC). A time
/// whose UTC year is outside 0000-9999 or that falls on a leap second has no
/// RFC 3339 UTC form the schema accepts, so it does not parse.
pub(crate) fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    let time = match DateTime::parse_from_rfc3339(text) {
        Ok(time) => time.with_timezone(&Utc),
        Err(_) => NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
            .ok()?
            .and_utc(),
    };
    let leap_second = time.timestamp_subsec_nanos() >= 1_000_000_000;
    ((0..=9999).contains(&time.year()) && !leap_second).then_some(time)
}

/// RFC 3339 in UTC with `Z`, keeping the fraction digits the value has (0, 3, 6 or 9).
pub(crate) fn format_timestamp(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

#[cfg(test)]
mod tests;
