//! The acceptance step: a raw body becomes flat events with their topics, or is
//! refused. Pure: no I/O, no clock (the receive time is passed in).
//!
//! The endpoint and the `explain` command both call [`accept`], so they refuse
//! exactly the same bodies: over `server.max_body_bytes`, not JSON, not of the
//! notification's shape (duplicate keys at any depth included), more than
//! `webhook.max_changes` changes, an unparsable `ChangeDateTime`, or records too
//! large for the byte budget. A booking's field names, flattened by path, may
//! take at most [`MAX_NAME_BYTES_PER_BODY_BYTE`] times `server.max_body_bytes`. The work is linear in the body's size whatever its
//! shape.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::config::Settings;
use crate::entity::Entity;
use crate::normalize::{normalize, FlatEvent, NormalizeError};
use crate::payload::{self, NamesTooLong, PayloadError};
use crate::records::{self, RawMeta, Records};
use crate::routing::RoutingTable;
use crate::state;

/// What one request may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest body in bytes (`server.max_body_bytes`).
    pub max_body_bytes: usize,
    /// Most changes in one notification (`webhook.max_changes`): every change becomes
    /// an event carrying the whole entity, so this bounds a request's output.
    pub max_changes: usize,
    /// Most bytes one request may hold once its body arrived: the body and its
    /// records (the share of `server.max_in_flight_bytes` for requests being
    /// processed). A request needing more could never be served: 413.
    pub max_request_bytes: usize,
}

impl Limits {
    /// What one request may carry under `settings`.
    pub fn of(settings: &Settings) -> Self {
        Self {
            max_body_bytes: settings.server.max_body_bytes,
            max_changes: settings.webhook.max_changes,
            max_request_bytes: settings.server.processing_bytes(),
        }
    }
}

/// How many bytes of field names, flattened by path, a notification may have per
/// byte of `server.max_body_bytes`: far more than nested bookings need, and a
/// bound on what a request holds while it is parsed.
pub const MAX_NAME_BYTES_PER_BODY_BYTE: usize = 4;

/// Why a body is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AcceptError {
    #[error("the body is larger than the limit of {limit} bytes (server.max_body_bytes)")]
    TooLarge { limit: usize },
    #[error("the notification has {changes} changes; at most {limit} are accepted (webhook.max_changes)")]
    TooManyChanges { changes: usize, limit: usize },
    #[error("the notification's body and records need {needed} bytes, more than one request may hold ({limit}, from server.max_in_flight_bytes)")]
    TooLargeToDeliver { needed: usize, limit: usize },
    /// The caller's byte budget has no room for the records now (see
    /// [`accept_within`]); not a fault of the body.
    #[error("no room for the notification's records in server.max_in_flight_bytes now")]
    NoRoom,
    /// Flattened by path, the entity's field names would take more than
    /// [`MAX_NAME_BYTES_PER_BODY_BYTE`] times `server.max_body_bytes`.
    #[error("the notification's fields, named by path (Customer.FirstName), take more than {limit} bytes ({MAX_NAME_BYTES_PER_BODY_BYTE} times server.max_body_bytes): nest less deeply under long names")]
    NamesTooLong { limit: usize },
    #[error(transparent)]
    Payload(#[from] PayloadError),
    #[error(transparent)]
    Normalize(#[from] NormalizeError),
}

/// An accepted notification: its events, the topics of each (borrowed from the
/// routing table in force), its state record and the bytes its records will hold.
#[derive(Debug)]
pub struct Accepted<'t> {
    pub events: Vec<FlatEvent>,
    /// `topics[i]`: the topics of `events[i]`.
    pub topics: Vec<Vec<&'t str>>,
    /// The entity's state topic and the state record's value (`None`: a
    /// tombstone), when the entity has a state topic.
    pub state: Option<(&'t str, Option<Vec<u8>>)>,
    /// The records to produce: every value serialized once, as its topic's field
    /// rules shape it, then counted against the byte limits.
    pub records: Records<'t>,
    /// What the records hold once produced ([`Records::held_bytes`]).
    pub record_bytes: usize,
}

impl<'t> Accepted<'t> {
    /// Every event with its topics.
    pub fn routed(&self) -> impl Iterator<Item = (&FlatEvent, &[&'t str])> {
        self.events
            .iter()
            .zip(self.topics.iter().map(Vec::as_slice))
    }

    pub fn event_ids(&self) -> Vec<Uuid> {
        self.events.iter().map(|e| e.event_id).collect()
    }

    /// The records, the rest (events, topics, state value) dropped now.
    pub fn into_records(self) -> Records<'t> {
        self.records
    }
}

/// Whether a request's `Content-Type` (`None`: none) is one the endpoints take:
/// `application/json`, with any parameters, or none at all.
pub fn content_type_accepted(value: Option<&[u8]>) -> bool {
    let Some(value) = value else {
        return true;
    };
    let text = String::from_utf8_lossy(value);
    let media_type = text.split(';').next().unwrap_or("").trim();
    media_type.eq_ignore_ascii_case("application/json")
}

/// The acceptance step's inputs, which travel together: a body as received, and
/// the limits and routing table it is accepted under.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a, 't> {
    pub body: &'a [u8],
    /// The webhook it came to.
    pub entity: &'static Entity,
    /// When it arrived: the events' `received_at`.
    pub received_at: DateTime<Utc>,
    pub limits: &'a Limits,
    pub table: &'t RoutingTable,
}

/// Checks the limits, parses, normalizes and routes one body, and builds its records.
pub fn accept<'t>(input: Input<'_, 't>) -> Result<Accepted<'t>, AcceptError> {
    accept_within(input, None, &mut |_| true)
}

/// Where an accepted notification's raw copy goes (`archive.raw_topic`), with what
/// its headers say about the request.
pub type RawCopy<'t> = (&'t str, RawMeta);

/// [`accept`], with the body's `raw` copy after its records when the raw topic
/// is on, taking the records' bytes from `reserve` (the caller's byte budget)
/// record by record as they are built: after a `false`, the records are only
/// measured, and the request is refused with [`AcceptError::NoRoom`], or
/// [`AcceptError::TooLargeToDeliver`] when it could never be held. No body makes a
/// request hold more than one event's values beyond what it was granted.
pub fn accept_within<'t>(
    input: Input<'_, 't>,
    raw: Option<RawCopy<'t>>,
    reserve: &mut dyn FnMut(usize) -> bool,
) -> Result<Accepted<'t>, AcceptError> {
    let Input {
        body,
        entity,
        limits,
        table,
        ..
    } = input;
    let events = flat_events(input)?;
    let topics: Vec<Vec<&str>> = events
        .iter()
        .map(|event| table.topics_for(entity, event.change_type.as_deref()))
        .collect();
    let state = (table.state_for(entity)).map(|s| (s.topic.as_str(), state::value(&events, s)));
    // Past max_request_bytes nothing more is taken: the request could never be held.
    let mut taken = body.len();
    let mut take = |bytes: usize| {
        taken += bytes;
        taken <= limits.max_request_bytes && reserve(bytes)
    };
    let refused = |record_bytes: usize| {
        let (needed, limit) = (body.len() + record_bytes, limits.max_request_bytes);
        match needed > limit {
            true => AcceptError::TooLargeToDeliver { needed, limit },
            false => AcceptError::NoRoom,
        }
    };
    let mut records = Records::build_within(&events, &topics, table, state.clone(), &mut take)
        .map_err(refused)?;
    // The raw topic's copy is counted like the records: a notification that can
    // never fit with it is refused (and kept) rather than answered 503 at every retry.
    if let Some((topic, meta)) = raw {
        let key = events[0].key();
        let bytes = records::raw_bytes(body.len(), &key, &meta);
        if !take(bytes) {
            return Err(refused(records.held_bytes() + bytes));
        }
        records.push_raw(topic, key, body, meta);
    }
    let record_bytes = records.held_bytes();
    Ok(Accepted {
        events,
        topics,
        state,
        records,
        record_bytes,
    })
}

/// The body's flat events, their ids keyed when the routing table says so; refused
/// past a limit, or when it is not a notification of the entity's shape.
fn flat_events(input: Input<'_, '_>) -> Result<Vec<FlatEvent>, AcceptError> {
    let limits = input.limits;
    if input.body.len() > limits.max_body_bytes {
        return Err(AcceptError::TooLarge {
            limit: limits.max_body_bytes,
        });
    }
    let mut notification = payload::parse(input.body, input.entity)?;
    if notification.changes.len() > limits.max_changes {
        return Err(AcceptError::TooManyChanges {
            changes: notification.changes.len(),
            limit: limits.max_changes,
        });
    }
    // Names repeat their parents' (`A.B.C`, `A.B.D`): bounded by the largest
    // body, whatever this one's size, so no body makes them grow with its square.
    let limit = MAX_NAME_BYTES_PER_BODY_BYTE * limits.max_body_bytes;
    notification
        .flatten_objects(limit)
        .map_err(|NamesTooLong| AcceptError::NamesTooLong { limit })?;
    let mut events = normalize(notification, input.received_at)?;
    if let Some(key) = input.table.event_id_key() {
        for event in &mut events {
            event.event_id = key.event_id(event.event_id);
        }
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entity::CUSTOMER;

    const LIMITS: Limits = Limits {
        max_body_bytes: 4096,
        max_changes: 4,
        max_request_bytes: 1 << 20,
    };

    fn table() -> RoutingTable {
        crate::config::routing_file::parse(
            "[unmatched]\ntopic = \"u\"\n[[routes]]\nname = \"r\"\nchange_types = [\"T1\"]\ntopics = [\"a\", \"b\"]\n",
            "routes.toml",
            None,
        )
        .unwrap()
    }

    /// `body` as it comes to the endpoint of `entity` now, within `limits`.
    fn input<'a, 't>(
        body: &'a [u8],
        entity: &'static Entity,
        limits: &'a Limits,
        table: &'t RoutingTable,
    ) -> Input<'a, 't> {
        Input {
            body,
            entity,
            received_at: Utc::now(),
            limits,
            table,
        }
    }

    fn body(changes: usize) -> Vec<u8> {
        let changes: Vec<String> = (0..changes)
            .map(|i| format!(r#"{{"ChangeType":"T{i}"}}"#))
            .collect();
        format!(
            r#"{{"ChangeDateTime":"2018-11-12T10:15:00","Customer":{{"Id":1}},"Changes":[{}]}}"#,
            changes.join(",")
        )
        .into_bytes()
    }

    #[test]
    fn a_booking_s_names_are_bounded_by_the_largest_body_not_by_its_own() {
        use crate::entity::BOOKING;
        // A small, compact booking nested four deep: its names take more than
        // twice its own size, far less than the bound.
        let flags: Vec<String> = (0..10).map(|i| format!(r#""Flag{i}":true"#)).collect();
        let flags = flags.join(",");
        let body = format!(
            r#"{{"ChangeDateTime":"2018-11-12T10:15:00","Booking":{{"Id":1,"Customer":{{"Preferences":{{"Notifications":{{"Email":{{{flags}}},"Sms":{{{flags}}},"Push":{{{flags}}}}}}}}}}},"Changes":[]}}"#
        );
        let routes = table();
        let accepted = accept(input(body.as_bytes(), &BOOKING, &LIMITS, &routes)).unwrap();
        let event = accepted.events[0].to_value();
        assert_eq!(
            event["booking_customer_preferences_notifications_push_flag9"],
            true
        );
        // 20 levels of 100-byte names over 200 members: 400 kB of names from a
        // 4 kB body, over four times the largest body.
        let name = "N".repeat(100);
        let members: Vec<String> = (0..200).map(|i| format!(r#""m{i}":1"#)).collect();
        let mut state = format!("{{{}}}", members.join(","));
        for _ in 0..20 {
            state = format!(r#"{{"{name}":{state}}}"#);
        }
        let body = format!(
            r#"{{"ChangeDateTime":"2018-11-12T10:15:00","Booking":{{"Id":1,"A":{state}}},"Changes":[]}}"#
        );
        let err = accept(input(body.as_bytes(), &BOOKING, &LIMITS, &routes)).unwrap_err();
        assert_eq!(err, AcceptError::NamesTooLong { limit: 4 * 4096 });
        assert!(
            err.to_string()
                .contains("more than 16384 bytes (4 times server.max_body_bytes)"),
            "{err}"
        );
        // The same members under short names pass; a customer's objects are text.
        let wide = format!(
            r#"{{"ChangeDateTime":"2018-11-12T10:15:00","Booking":{{"Id":1,"A":{{{}}}}},"Changes":[]}}"#,
            members.join(",")
        );
        assert!(accept(input(wide.as_bytes(), &BOOKING, &LIMITS, &routes)).is_ok());
        let customer = body.replace("Booking", "Customer");
        assert!(accept(input(customer.as_bytes(), &CUSTOMER, &LIMITS, &routes)).is_ok());
    }

    fn refusal(body: &[u8], limits: &Limits) -> AcceptError {
        accept(input(body, &CUSTOMER, limits, &table())).unwrap_err()
    }

    #[test]
    fn accepts_up_to_the_limits_and_routes_every_event() {
        let table = table();
        let accepted = accept(input(&body(4), &CUSTOMER, &LIMITS, &table)).unwrap();
        assert_eq!(accepted.events.len(), 4);
        assert_eq!(
            accepted.topics,
            [vec!["u"], vec!["a", "b"], vec!["u"], vec!["u"]]
        );
        assert_eq!(accepted.event_ids().len(), 4);
        assert_eq!(accepted.routed().nth(1).unwrap().1, ["a", "b"]);
        let seed = include_bytes!("../tests/fixtures/seed_sample.json");
        assert_eq!(
            accept(input(seed, &CUSTOMER, &LIMITS, &table))
                .unwrap()
                .events
                .len(),
            4
        );
    }

    #[test]
    fn refuses_more_changes_than_the_limit() {
        assert_eq!(
            refusal(&body(5), &LIMITS),
            AcceptError::TooManyChanges {
                changes: 5,
                limit: 4
            }
        );
    }

    #[test]
    fn refuses_a_body_over_the_limit_before_parsing_it() {
        let limits = Limits {
            max_body_bytes: 10,
            ..LIMITS
        };
        // Not even JSON: the size is checked first.
        assert_eq!(
            refusal(b"{{{{{{{{{{{", &limits),
            AcceptError::TooLarge { limit: 10 }
        );
        let exact = Limits {
            max_body_bytes: body(1).len(),
            ..LIMITS
        };
        assert!(accept(input(&body(1), &CUSTOMER, &exact, &table())).is_ok());
    }

    #[test]
    fn refuses_records_larger_than_a_request_may_hold() {
        let table = table();
        let accepted = accept(input(&body(2), &CUSTOMER, &LIMITS, &table)).unwrap();
        let needed = body(2).len() + accepted.record_bytes;
        let exact = Limits {
            max_request_bytes: needed,
            ..LIMITS
        };
        assert!(accept(input(&body(2), &CUSTOMER, &exact, &table)).is_ok());
        let short = Limits {
            max_request_bytes: needed - 1,
            ..LIMITS
        };
        assert_eq!(
            refusal(&body(2), &short),
            AcceptError::TooLargeToDeliver {
                needed,
                limit: needed - 1
            }
        );
    }

    #[test]
    fn records_take_their_bytes_as_they_are_built_and_stop_at_the_first_refusal() {
        let table = table();
        let within = |limits: &Limits, room: usize| {
            let mut asked = Vec::new();
            let result = accept_within(
                input(&body(2), &CUSTOMER, limits, &table),
                None,
                &mut |bytes| {
                    asked.push(bytes);
                    asked.len() <= room
                },
            )
            .map(|accepted| accepted.record_bytes);
            (result, asked)
        };
        // T0 to the unmatched topic, T1 to a and b: three records, each asked for once.
        let (held, asked) = within(&LIMITS, usize::MAX);
        assert_eq!(asked.len(), 3);
        assert_eq!(held, Ok(asked.iter().sum::<usize>()));
        let (refused, asked) = within(&LIMITS, 1);
        assert_eq!((refused, asked.len()), (Err(AcceptError::NoRoom), 2));
        // Past max_request_bytes, the budget is not asked for the record that crosses
        // it, nor for any later: they are only measured, for the exact size.
        let (_, all) = within(&LIMITS, usize::MAX);
        let limit = body(2).len() + all[0];
        let limits = Limits {
            max_request_bytes: limit,
            ..LIMITS
        };
        let (refused, asked) = within(&limits, usize::MAX);
        let needed = body(2).len() + all.iter().sum::<usize>();
        assert_eq!(
            refused,
            Err(AcceptError::TooLargeToDeliver { needed, limit })
        );
        assert_eq!(asked, all[..1]);
        // Exactly what one request may hold: it fits, just not now.
        let exact = Limits {
            max_request_bytes: needed,
            ..LIMITS
        };
        assert_eq!(within(&exact, 0).0, Err(AcceptError::NoRoom));
        // Could never be held: 413, whether or not the budget has room now.
        let (refused, asked) = within(&limits, 0);
        assert_eq!(
            refused,
            Err(AcceptError::TooLargeToDeliver { needed, limit })
        );
        assert_eq!(asked, all[..1]);
    }

    #[test]
    fn refuses_bad_json_shapes_and_date_times() {
        assert!(matches!(
            refusal(b"{", &LIMITS),
            AcceptError::Payload(PayloadError::InvalidJson { .. })
        ));
        assert!(matches!(
            refusal(
                br#"{"ChangeDateTime":"x","Customer":{"Id":1,"A":{"b":1,"b":2}},"Changes":[]}"#,
                &LIMITS
            ),
            AcceptError::Payload(PayloadError::InvalidShape { .. })
        ));
        assert!(matches!(
            refusal(
                br#"{"ChangeDateTime":"x","Customer":{"Id":1},"Changes":[]}"#,
                &LIMITS
            ),
            AcceptError::Normalize(_)
        ));
    }
}
