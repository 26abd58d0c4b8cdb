use super::*;
use crate::entity::{BOOKING, CUSTOMER};
use crate::payload::{self, Latest};
use proptest::prelude::*;
use serde_json::json;
use uuid::Uuid;

fn received() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-28T09:00:00.123Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn seed() -> Notification {
    payload::parse(
        include_bytes!("../../tests/fixtures/seed_sample.json"),
        &CUSTOMER,
    )
    .unwrap()
}

#[test]
fn seed_sample_gives_four_events_with_every_field() {
    let events = normalize(seed(), received()).unwrap();
    assert_eq!(events.len(), 4);
    let first = events[0].to_value();
    // The seed's first change as a flat event, field by field (received at the
    // time `received()` gives).
    let expected: Value = serde_json::from_str(include_str!(
        "../../tests/fixtures/seed_sample_first_event.json"
    ))
    .unwrap();
    assert_eq!(first, expected);
    assert_eq!(events[3].old_value, json!("2018-11-12T09:31:00.0000000"));
    assert_eq!(events[1].old_value, json!(true));
    assert_eq!(events[0].key(), "862");
}

#[test]
fn event_ids_never_change_across_versions() {
    // Consumers deduplicate by these ids: a change of the id layout would make
    // every redelivery after an upgrade look new.
    let ids: Vec<String> = normalize(seed(), received())
        .unwrap()
        .iter()
        .map(|e| e.event_id.to_string())
        .collect();
    assert_eq!(
        ids,
        [
            "0159f331-0d29-5e8c-a971-7a6c41ba47c1",
            "46350860-9d47-5c46-ba5e-eb038a832df9",
            "459a21f6-556b-56c8-8b63-fb1cd410975c",
            "0e1b4f5b-d08e-500d-97ea-260a47b9eb66",
        ]
    );
}

#[test]
fn serialized_keys_follow_the_documented_order() {
    let events = normalize(seed(), received()).unwrap();
    let text = String::from_utf8(events[0].to_json()).unwrap();
    let position = |k: &str| text.find(&format!("\"{k}\"")).unwrap();
    assert!(position("event_id") < position("schema_version"));
    assert!(position("customer_id") < position("customer_title"));
    assert!(position("customer_restaurant_sms_marketing_opt_in_text") < position("received_at"));
}

#[test]
fn every_timestamp_shape_normalizes_to_utc_with_z() {
    for (raw, expected) in [
        (
            "2018-11-16T10:46:20.7741026Z",
            "2018-11-16T10:46:20.774102600Z",
        ),
        (
            "2018-11-16T10:46:20.7115562+00:00",
            "2018-11-16T10:46:20.711556200Z",
        ),
        ("2018-11-16T12:46:20+02:00", "2018-11-16T10:46:20Z"),
        ("2018-11-12T10:15:00", "2018-11-12T10:15:00Z"),
        ("2018-11-12T09:31:00.0000000", "2018-11-12T09:31:00Z"),
        ("2018-11-12T09:31:00.5", "2018-11-12T09:31:00.500Z"),
    ] {
        let time = parse_timestamp(raw).unwrap_or_else(|| panic!("{raw} must parse"));
        assert_eq!(format_timestamp(time), expected, "{raw}");
    }
    for bad in [
        "",
        "yesterday",
        "2018-13-01T00:00:00",
        "2018-11-12",
        "2018-11-12T25:00:00Z",
        // No four-digit UTC year, or a leap second: no RFC 3339 UTC form.
        "9999-12-31T23:00:00-02:00",
        "0000-01-01T00:00:00+01:00",
        "+10000-01-01T00:00:00",
        "-0001-01-01T00:00:00",
        "2016-06-15T12:00:60Z",
        "2016-12-31T23:59:60Z",
    ] {
        assert_eq!(parse_timestamp(bad), None, "{bad}");
    }
}

#[test]
fn unparsable_change_date_time_is_an_error() {
    let mut n = seed();
    n.change_date_time = "16/11/2018".into();
    assert_eq!(
        normalize(n.clone(), received()).unwrap_err(),
        NormalizeError::InvalidChangeDateTime {
            value: "16/11/2018".into()
        }
    );
}

#[test]
fn unparsable_customer_date_times_pass_through() {
    let mut n = seed();
    n.latest.fields = vec![
        ("CreatedDateTime".into(), json!("not a date").into()),
        ("BirthDate".into(), json!("2000-01-02T00:00:00").into()),
        ("Company".into(), json!("2018-11-12T10:15:00").into()),
        ("LastUpdate".into(), json!("2018-11-12T10:15:00").into()),
        ("Date".into(), json!("2018-11-12T10:15:00").into()),
    ];
    let event = normalize(n.clone(), received()).unwrap()[0].to_value();
    assert_eq!(event["customer_created_date_time"], json!("not a date"));
    assert_eq!(event["customer_birth_date"], json!("2000-01-02T00:00:00Z"));
    assert_eq!(event["customer_company"], json!("2018-11-12T10:15:00"));
    assert_eq!(event["customer_last_update"], json!("2018-11-12T10:15:00"));
    assert_eq!(event["customer_date"], json!("2018-11-12T10:15:00Z"));
}

#[test]
fn every_known_field_key_is_its_path_snake_cased() {
    for entity in crate::entity::ENTITIES {
        for field in entity.known {
            assert_eq!(prefixed_snake_case(entity.prefix, field.name), field.key);
        }
    }
}

fn booking(body: &str) -> Vec<FlatEvent> {
    let mut n = payload::parse(body.as_bytes(), &BOOKING).unwrap();
    n.flatten_objects(usize::MAX).unwrap();
    normalize(n, received()).unwrap()
}

#[test]
fn the_booking_sample_gives_two_flat_booking_events() {
    let body = include_str!("../../tests/fixtures/booking_sample.json");
    let events = booking(body);
    assert_eq!(events.len(), 2);
    let event = events[1].to_value();
    assert_eq!(event["entity"], "booking");
    assert_eq!(event["booking_id"], 51234);
    assert_eq!(events[1].key(), "51234");
    assert_eq!(event["old_value"], "[12]");
    assert_eq!(event["new_value"], "[12,14]");
    assert_eq!(event["booking_customer_first_name"], "Aardvark");
    assert_eq!(event["booking_customer_mobile"], "+447700900123");
    assert_eq!(
        event["booking_cancellation_reason_name"],
        "Guest cancelled online"
    );
    assert_eq!(event["booking_table_ids"], "[12,14]");
    assert_eq!(
        event["booking_customer_customer_codes"],
        r#"["VIP","REGULAR"]"#
    );
    // Date-times by name; a date or a time alone is kept as sent.
    assert_eq!(event["booking_booking_date_time"], "2024-05-01T09:15:00Z");
    assert_eq!(
        event["booking_customer_group_email_opt_in_date_time"],
        "2018-11-12T10:15:00Z"
    );
    assert_eq!(event["booking_visit_date"], "2024-05-10");
    assert_eq!(event["booking_visit_time"], "19:30");
    assert_eq!(event["booking_customer_birthday"], "1980-02-29");
    assert!(event.get("customer_id").is_none());
    let text = String::from_utf8(events[0].to_json()).unwrap();
    assert!(text.starts_with(r#"{"event_id":""#), "{text}");
    assert!(text.contains(r#""schema_version":1,"entity":"booking","change_type":"#));
    assert!(
        text.contains(r#""new_value":"Cancelled","booking_id":51234,"booking_provider_id":1044,"#)
    );
}

#[test]
fn nested_objects_flatten_to_depth_three_and_colliding_paths_are_suffixed() {
    let events = booking(
        r#"{"ChangeDateTime":"2024-05-03T17:42:10Z","Booking":{"Id":1,
            "A":{"B":{"C":1,"D":{}}},"A.B.C":2,"a_b_c":3,"AB":{"C":4},
            "Id2":{"Id":5},"Seated":{"AtDateTime":"2024-05-10T19:31:00+01:00"}},
            "Changes":[]}"#,
    );
    let event = events[0].to_value();
    assert_eq!(event["booking_a_b_c"], 1);
    assert_eq!(event["booking_a_b_d"], "{}");
    assert_eq!(event["booking_a_b_c_2"], 2);
    assert_eq!(event["booking_a_b_c_3"], 3);
    assert_eq!(event["booking_ab_c"], 4);
    assert_eq!(event["booking_id2_id"], 5);
    assert_eq!(event["booking_seated_at_date_time"], "2024-05-10T18:31:00Z");
    assert_eq!(
        event.as_object().unwrap().len(),
        fixed_keys(&BOOKING).len() + 7
    );
}

#[test]
fn a_booking_and_a_customer_with_the_same_id_never_share_event_ids() {
    let body = |key: &str| {
        format!(
            r#"{{"ChangeDateTime":"2018-11-16T10:46:20.7741026Z","{key}":{{"Id":862}},"Changes":[{{"ChangeType":"CustomerSmsChanged","OldValue":"2","NewValue":"3"}}]}}"#
        )
    };
    let customer = normalize(
        payload::parse(body("Customer").as_bytes(), &CUSTOMER).unwrap(),
        received(),
    )
    .unwrap();
    let booking = booking(&body("Booking"));
    // The customer's id is the one earlier versions gave (see the seed test).
    assert_eq!(
        customer[0].event_id.to_string(),
        "0159f331-0d29-5e8c-a971-7a6c41ba47c1"
    );
    assert_ne!(customer[0].event_id, booking[0].event_id);
    assert_eq!(
        booking[0].event_id,
        self::booking(&body("Booking"))[0].event_id
    );
}

#[test]
fn typed_customer_fields_keep_their_type_or_null() {
    let mut n = seed();
    n.latest.fields = vec![
        ("Email".into(), json!(null).into()),
        (
            "RelatedProviderId".into(),
            json!(-9223372036854775808i64).into(),
        ),
        ("ReceiveGroupSmsMarketing".into(), json!(null).into()),
        ("Title".into(), json!("").into()),
        (
            "GroupSmsMarketingOptInDateTime".into(),
            json!("2018-11-12T10:15:00").into(),
        ),
    ];
    let event = normalize(n, received()).unwrap()[0].to_value();
    assert_eq!(event["customer_email"], Value::Null);
    assert_eq!(
        event["customer_related_provider_id"],
        json!(-9223372036854775808i64)
    );
    assert_eq!(
        event["customer_group_sms_marketing_opt_in_date_time"],
        json!("2018-11-12T10:15:00Z")
    );
}

#[test]
fn a_typed_customer_field_of_another_type_is_refused_by_its_name() {
    let nested = || Field::Nested {
        text: "{}".into(),
        id_text: None,
    };
    for (name, value, expected, got) in [
        ("Email", json!(5).into(), "text or null", "a number"),
        ("Email", nested(), "text or null", "an object or array"),
        ("FirstName", json!(true).into(), "text or null", "a boolean"),
        (
            "RelatedProviderId",
            json!("7").into(),
            "a 64-bit integer or null",
            "text",
        ),
        (
            "RelatedProviderId",
            json!(1.5).into(),
            "a 64-bit integer or null",
            "a number",
        ),
        (
            "RelatedProviderId",
            serde_json::from_str::<Value>("9223372036854775808")
                .unwrap()
                .into(),
            "a 64-bit integer or null",
            "a number",
        ),
        (
            "ReceiveGroupEmailMarketing",
            json!("yes").into(),
            "true, false or null",
            "text",
        ),
        (
            "RestaurantSmsMarketingOptInDateTime",
            json!("not a date").into(),
            "a date-time (e.g. 2018-11-12T10:15:00Z) or null",
            "text",
        ),
        // Typed by the key it ends up with: `email` takes `customer_email` first.
        ("email", json!(5).into(), "text or null", "a number"),
    ] {
        let mut n = seed();
        n.latest.fields = vec![(name.to_string(), value)];
        assert_eq!(
            normalize(n, received()).unwrap_err(),
            NormalizeError::FieldType {
                field: format!("Customer.{name}"),
                expected,
                got,
            },
            "{name}"
        );
    }
    // A second `Email` after `email` is `customer_email_2`: not typed.
    let mut n = seed();
    n.latest.fields = vec![
        ("email".into(), json!("a@example.com").into()),
        ("Email".into(), json!(5).into()),
    ];
    let event = normalize(n, received()).unwrap()[0].to_value();
    assert_eq!(event["customer_email_2"], json!(5));
}

#[test]
fn a_date_time_field_renamed_by_a_collision_is_still_normalized() {
    let mut n = seed();
    n.latest.fields = vec![
        ("BirthDate".into(), json!("2000-01-02T00:00:00").into()),
        (
            "birthDate".into(),
            json!("2000-01-02T00:00:00+02:00").into(),
        ),
    ];
    let event = normalize(n, received()).unwrap()[0].to_value();
    assert_eq!(event["customer_birth_date"], json!("2000-01-02T00:00:00Z"));
    assert_eq!(
        event["customer_birth_date_2"],
        json!("2000-01-01T22:00:00Z")
    );
}

/// A time as the platform sends it, in a documented shape (RFC 3339 with `Z`,
/// with an offset, or without a zone, taken as UTC; 0 to 9 fraction
/// digits), and the UTC time it stands for, worked out apart from the
/// parser: the local time minus the offset (`None` for a leap second).
fn arb_sent_time() -> impl Strategy<Value = (String, Option<NaiveDateTime>)> {
    use chrono::NaiveDate;
    let day = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap().num_days_from_ce();
    let (first, last) = (day(0, 1, 1), day(9999, 12, 31));
    // Every day of years 0000 to 9999, the first and last two more often
    // (where an offset takes the UTC year out of range).
    let days = prop_oneof![
        3 => first..=last,
        1 => prop_oneof![first..first + 2, last - 1..=last],
    ];
    // A leap second now and then: no RFC 3339 UTC form the schema accepts.
    let second = prop_oneof![20 => 0u32..60, 1 => Just(60u32)];
    let zone = prop_oneof![
        Just(None),
        Just(Some(("Z".to_string(), 0i64))),
        Just(Some(("-00:00".to_string(), 0i64))),
        (-1439i64..=1439).prop_map(|minutes| {
            let sign = if minutes < 0 { '-' } else { '+' };
            let (h, m) = (minutes.abs() / 60, minutes.abs() % 60);
            Some((format!("{sign}{h:02}:{m:02}"), minutes))
        }),
    ];
    (
        days,
        0u32..24,
        0u32..60,
        second,
        0usize..=9,
        0u32..1_000_000_000,
        zone,
    )
        .prop_map(|(days, hour, minute, second, digits, nanos, zone)| {
            let date = NaiveDate::from_num_days_from_ce_opt(days).unwrap();
            let fraction = format!("{nanos:09}")[..digits].to_string();
            let text = format!(
                "{:04}-{:02}-{:02}T{hour:02}:{minute:02}:{second:02}{}{}{}",
                date.year(),
                date.month(),
                date.day(),
                if digits == 0 { "" } else { "." },
                fraction,
                zone.as_ref().map_or("", |(text, _)| text.as_str()),
            );
            let nanos = format!("{fraction:0<9}").parse::<u32>().unwrap();
            let offset = zone.map_or(0, |(_, minutes)| minutes);
            let utc = (second < 60).then(|| {
                date.and_hms_nano_opt(hour, minute, second, nanos).unwrap()
                    - chrono::Duration::minutes(offset)
            });
            (text, utc)
        })
}

/// The RFC 3339 UTC text of `time` the schema wants, written apart from
/// [`format_timestamp`]: `Z`, and 0, 3, 6 or 9 fraction digits, the fewest
/// that keep every digit that is not 0.
fn utc_text(time: NaiveDateTime) -> String {
    let nanos = time.and_utc().timestamp_subsec_nanos();
    let fraction = match nanos {
        0 => String::new(),
        n if n % 1_000_000 == 0 => format!(".{:03}", n / 1_000_000),
        n if n % 1_000 == 0 => format!(".{:06}", n / 1_000),
        n => format!(".{n:09}"),
    };
    format!("{}{fraction}Z", time.format("%Y-%m-%dT%H:%M:%S"))
}

proptest! {
    #[test]
    fn every_sent_time_with_a_utc_form_parses_to_its_instant_and_formats_as_the_schema_wants(
        (text, utc) in arb_sent_time(),
    ) {
        // A UTC form exists unless it is a leap second or its UTC year is
        // outside 0000-9999.
        let expected = utc.filter(|t| (0..=9999).contains(&t.year()));
        let parsed = parse_timestamp(&text);
        prop_assert_eq!(parsed.map(|t| t.naive_utc()), expected, "{}", text);
        let Some(time) = parsed else {
            return Ok(());
        };
        let formatted = format_timestamp(time);
        prop_assert_eq!(&formatted, &utc_text(time.naive_utc()), "{}", text);
        let schema = json!({"type": "string", "format": "date-time",
                            "pattern": crate::contract::schema::UTC_PATTERN});
        let valid = jsonschema::options()
            .should_validate_formats(true)
            .build(&schema)
            .unwrap()
            .is_valid(&json!(formatted));
        prop_assert!(valid, "{} -> {}", text, formatted);
        prop_assert_eq!(parse_timestamp(&formatted), Some(time));
    }
}

#[test]
fn empty_changes_give_one_event_with_null_change_type() {
    let mut n = seed();
    n.changes.clear();
    let events = normalize(n.clone(), received()).unwrap();
    assert_eq!(events.len(), 1);
    let event = events[0].to_value();
    assert_eq!(event["change_type"], Value::Null);
    assert_eq!(event["change_index"], json!(0));
    assert_eq!(event["change_count"], json!(0));
    assert_eq!(event["old_value"], Value::Null);
    assert_eq!(event["customer_email"], json!("aardvark@example.com"));
}

#[test]
fn values_keep_their_json_type_and_nested_ones_become_text() {
    let mut n = seed();
    n.changes = [
        json!("s"),
        json!(false),
        json!(12.5),
        Value::Null,
        json!({"a": 1}),
        json!([1, 2]),
    ]
    .into_iter()
    .map(|v| Change {
        change_type: "T".into(),
        old_value: v.clone().into(),
        new_value: v.into(),
        extra: vec![],
    })
    .collect();
    let values: Vec<Value> = normalize(n.clone(), received())
        .unwrap()
        .into_iter()
        .map(|e| e.new_value)
        .collect();
    assert_eq!(
        values,
        vec![
            json!("s"),
            json!(false),
            json!(12.5),
            Value::Null,
            json!("{\"a\":1}"),
            json!("[1,2]")
        ]
    );
}

#[test]
fn colliding_names_are_suffixed_never_dropped() {
    let n = Notification {
        entity: &CUSTOMER,
        change_date_time: "2018-11-12T10:15:00".into(),
        latest: Latest {
            id: 7,
            fields: vec![
                ("Email".into(), json!("a").into()),
                ("email".into(), json!("b").into()),
                ("ID".into(), json!("c").into()),
            ],
        },
        changes: vec![Change {
            change_type: "T".into(),
            old_value: Value::Null.into(),
            new_value: Value::Null.into(),
            extra: vec![
                ("Type".into(), json!("x").into()),
                ("Extra Info".into(), json!(1).into()),
            ],
        }],
        extra: vec![("Source".into(), json!({"k": true}).into())],
    };
    let event = normalize(n.clone(), received()).unwrap()[0].to_value();
    assert_eq!(event["customer_email"], json!("a"));
    assert_eq!(event["customer_email_2"], json!("b"));
    assert_eq!(event["customer_id"], json!(7));
    assert_eq!(event["customer_id_2"], json!("c"));
    assert_eq!(event["change_type"], json!("T"));
    assert_eq!(event["change_type_2"], json!("x"));
    assert_eq!(event["change_extra_info"], json!(1));
    assert_eq!(event["notification_source"], json!("{\"k\":true}"));
}

#[test]
fn thousands_of_names_meeting_in_one_stay_unique_in_linear_time() {
    // 27,000 distinct keys that all snake-case to `customer____` (the shape of a
    // body that once took most of a minute): every one gets a name of its own.
    let punctuation = "!#$%&'()*+,-./:;<=>?@[]^`{|}~\\\"";
    let names: Vec<String> = punctuation
        .chars()
        .flat_map(|a| punctuation.chars().map(move |b| (a, b)))
        .flat_map(|(a, b)| punctuation.chars().map(move |c| format!("{a}{b}{c}")))
        .take(27_000)
        .collect();
    let mut n = seed();
    n.latest.fields = names.iter().map(|k| (k.clone(), json!(1).into())).collect();
    n.latest.fields.push(("___".into(), json!(2).into()));
    n.changes[0].extra = vec![
        ("!!!".into(), json!(3).into()),
        ("???".into(), json!(4).into()),
    ];
    let started = std::time::Instant::now();
    let events = normalize(n, received()).unwrap();
    // A guard against the quadratic version (minutes), not a speed claim.
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    let keys: HashSet<&str> = events[0]
        .shared
        .fields
        .iter()
        .map(|(k, _)| k.as_str())
        .collect();
    assert_eq!(keys.len(), names.len() + 1);
    assert!(keys.contains("customer____"));
    assert!(keys.contains("customer_____2"));
    assert!(keys.contains("customer_____27000"));
    assert!(keys.contains("customer_____27001"));
    let own: Vec<&str> = events[0]
        .change_fields
        .iter()
        .map(|(k, _)| k.as_str())
        .collect();
    assert_eq!(own, ["change____", "change_____2"]);
}

#[test]
fn a_suffix_already_taken_is_skipped_and_the_next_one_remembered() {
    let mut fields: Vec<(String, ())> = ["a", "a_2", "a", "a", "b"]
        .iter()
        .map(|k| (k.to_string(), ()))
        .collect();
    make_keys_unique(&mut fields, &HashSet::from(["b"]));
    let keys: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["a", "a_2", "a_3", "a_4", "b_2"]);
}

#[test]
fn snake_case_examples() {
    for (raw, expected) in [
        ("RelatedProviderId", "related_provider_id"),
        (
            "GroupEmailMarketingOptInDateTime",
            "group_email_marketing_opt_in_date_time",
        ),
        ("Id", "id"),
        ("SMSOptIn", "sms_opt_in"),
        ("Address2Line", "address2_line"),
        ("already_snake", "already_snake"),
        ("First Name", "first_name"),
        // A letter with no case is no word boundary: nor is what follows it.
        ("中Ab", "中ab"),
        ("", ""),
    ] {
        assert_eq!(prefixed_snake_case("", raw), expected, "{raw}");
    }
}

fn arb_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "[a-zA-Z0-9 :.-]{0,12}".prop_map(Value::String),
    ]
}

fn arb_notification() -> impl Strategy<Value = Notification> {
    let change = ("[A-Za-z]{1,20}", arb_value(), arb_value()).prop_map(|(t, o, n)| Change {
        change_type: t,
        old_value: o.into(),
        new_value: n.into(),
        extra: vec![],
    });
    (
        any::<i64>(),
        proptest::collection::vec(
            ("[A-Za-z_ ]{0,12}", arb_value().prop_map(Field::from)),
            0..12,
        ),
        proptest::collection::vec(change, 0..8),
    )
        .prop_map(|(id, fields, changes)| Notification {
            change_date_time: "2018-11-16T10:46:20.7741026Z".into(),
            entity: &CUSTOMER,
            latest: Latest { id, fields },
            changes,
            extra: vec![],
        })
}

/// A booking's state but `Id`: objects nested up to four deep, keys of
/// lowercase letters and digits (so a path's snake case is the path joined by
/// `_`, and never `id`).
fn arb_tree() -> impl Strategy<Value = serde_json::Map<String, Value>> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "[a-z0-9 ]{0,8}".prop_map(Value::String),
        proptest::collection::vec(any::<i32>(), 0..3).prop_map(|v| json!(v)),
    ];
    let value = leaf.prop_recursive(4, 32, 4, |inner| {
        proptest::collection::btree_map("[a-h][a-z0-9]{0,3}", inner, 0..4)
            .prop_map(|m| Value::Object(m.into_iter().collect()))
    });
    proptest::collection::btree_map("[a-h][a-z0-9]{0,3}", value, 0..6)
        .prop_map(|m| m.into_iter().collect())
}

/// Every leaf of `value` as its JSON text: scalars, arrays and empty objects.
fn collect_leaves(value: &Value, leaves: &mut Vec<String>) {
    match value {
        Value::Object(members) if !members.is_empty() => {
            members.values().for_each(|v| collect_leaves(v, leaves))
        }
        Value::Object(_) | Value::Array(_) => {
            leaves.push(Value::String(value.to_string()).to_string())
        }
        scalar => leaves.push(scalar.to_string()),
    }
}

/// [`arb_tree`] with keys of any letters' case, `.`, `_`, digits, or empty;
/// never `Id` at the top (that is the booking's id).
fn arb_tree_any_keys() -> impl Strategy<Value = serde_json::Map<String, Value>> {
    let key = || "[a-cA-C._0-9]{0,3}";
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<i64>().prop_map(|n| json!(n)),
        "[a-z ]{0,4}".prop_map(Value::String),
        proptest::collection::vec(any::<i32>(), 0..2).prop_map(|v| json!(v)),
    ];
    let value = leaf.prop_recursive(3, 24, 4, move |inner| {
        proptest::collection::btree_map(key(), inner, 0..4)
            .prop_map(|m| Value::Object(m.into_iter().collect()))
    });
    proptest::collection::btree_map(key(), value, 0..6)
        .prop_map(|m| m.into_iter().filter(|(k, _)| k != "Id").collect())
}

fn with_id(tree: &serde_json::Map<String, Value>) -> serde_json::Map<String, Value> {
    let mut state = serde_json::Map::new();
    state.insert("Id".into(), json!(1));
    state.extend(tree.clone());
    state
}

/// What the flat event must hold for `value` at `path`, worked out
/// independently of the code: a scalar under its path, a non-empty object's
/// members under theirs, anything else as its JSON text.
fn flatten_expected(out: &mut serde_json::Map<String, Value>, path: &str, value: &Value) {
    match value {
        Value::Object(members) if !members.is_empty() => {
            for (key, member) in members {
                flatten_expected(out, &format!("{path}_{key}"), member);
            }
        }
        Value::Object(_) | Value::Array(_) => {
            out.insert(path.into(), Value::String(value.to_string()));
        }
        scalar => {
            out.insert(path.into(), scalar.clone());
        }
    }
}

/// A value or a nested one (an object's compact text).
fn arb_field() -> impl Strategy<Value = Field> {
    prop_oneof![
        arb_value().prop_map(Field::from),
        any::<i32>().prop_map(|n| Field::Nested {
            text: format!("{{\"k\":[{n}]}}"),
            id_text: None,
        }),
    ]
}

/// A value of `field_type`, or null.
fn arb_typed(field_type: FieldType) -> BoxedStrategy<Value> {
    let value = match field_type {
        FieldType::Scalar => arb_value().boxed(),
        FieldType::Text => "[a-zA-Z0-9 @.]{0,12}".prop_map(Value::String).boxed(),
        FieldType::Integer => any::<i64>().prop_map(|n| json!(n)).boxed(),
        FieldType::Boolean => any::<bool>().prop_map(Value::Bool).boxed(),
        FieldType::DateTime => prop_oneof![
            Just("2018-11-12T10:15:00"),
            Just("2018-11-16T10:46:20.7115562+00:00"),
            Just("2018-11-16T10:46:20.7741026Z"),
            Just("0000-01-01T00:30:00-00:30"),
            Just("9999-12-31T23:00:00+02:00"),
            Just("2016-12-31T23:59:59.999999999Z"),
        ]
        .prop_map(|t| Value::String(t.into()))
        .boxed(),
    };
    prop_oneof![Just(Value::Null), value].boxed()
}

/// Any notification the parser could hand over: typed customer fields with
/// values of their type, unknown customer, top-level and change fields,
/// nested values anywhere, empty change types.
fn arb_open_notification() -> impl Strategy<Value = Notification> {
    let extra = || proptest::collection::vec(("[A-Za-z_ ]{0,12}", arb_field()), 0..4);
    let change = ("[A-Za-z]{0,20}", arb_field(), arb_field(), extra()).prop_map(
        |(change_type, old_value, new_value, extra)| Change {
            change_type,
            old_value,
            new_value,
            extra,
        },
    );
    let known = proptest::sample::subsequence(crate::entity::CUSTOMER_FIELDS.to_vec(), 0..=19)
        .prop_flat_map(|fields| {
            fields
                .into_iter()
                .map(|f| arb_typed(f.field_type).prop_map(move |v| (f.name.to_string(), v.into())))
                .collect::<Vec<_>>()
        });
    (
        any::<i64>(),
        known,
        extra(),
        proptest::collection::vec(change, 0..6),
        extra(),
    )
        .prop_map(|(id, mut fields, unknown, changes, extra)| {
            fields.extend(unknown);
            Notification {
                change_date_time: "2018-11-16T10:46:20.7741026Z".into(),
                entity: &CUSTOMER,
                latest: Latest { id, fields },
                changes,
                extra,
            }
        })
}

/// Patterns field rules may use: known and unknown names, globs over groups,
/// old and new values.
const RULE_PATTERNS: [&str; 12] = [
    "customer_email",
    "customer_first_name",
    "customer_*",
    "customer_*name*",
    "*_value",
    "old_value",
    "new_value",
    "change_*",
    "notification_*",
    "customer_receive_*",
    "*",
    "customer_title",
];

fn arb_rules() -> impl Strategy<Value = crate::privacy::FieldRules> {
    let list = || proptest::sample::subsequence(RULE_PATTERNS.to_vec(), 0..4);
    (proptest::option::of(list()), list(), list()).prop_filter_map(
        "rules that contradict themselves are refused at load",
        |(include, exclude, pseudonymise)| {
            let strings = |l: Vec<&str>| l.into_iter().map(String::from).collect();
            crate::privacy::FieldRules::new(
                include.map(strings),
                strings(exclude),
                strings(pseudonymise),
                &envelope_keys(&CUSTOMER),
                Some(&rules_key()),
            )
            .ok()
        },
    )
}

fn rules_key() -> Arc<crate::privacy::Key> {
    Arc::new(crate::privacy::Key::new(&"p".repeat(32)).unwrap())
}

proptest! {
    // Each case compiles its rules' schema: fewer cases than the default 256.
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn every_field_a_topic_receives_is_kept_removed_or_pseudonymised_and_the_envelope_is_intact(
        n in arb_open_notification(),
        rules in arb_rules(),
    ) {
        use crate::privacy::Treatment;
        let schema = jsonschema::options()
            .should_validate_formats(true)
            .build(&crate::contract::schema::shaped_event(&CUSTOMER, Some(&rules)))
            .unwrap();
        let key = rules_key();
        for event in normalize(n, received()).unwrap() {
            let whole = event.to_value();
            let shaped = event.to_value_for(Some(&rules));
            let (whole, shaped) = (whole.as_object().unwrap(), shaped.as_object().unwrap());
            for envelope in envelope_keys(&CUSTOMER).into_iter().filter(|k| *k != "entity") {
                prop_assert_eq!(&shaped[envelope], &whole[envelope], "{}", envelope);
            }
            for (field, value) in whole {
                if envelope_keys(&CUSTOMER).contains(&field.as_str()) {
                    continue;
                }
                match rules.treatment(field) {
                    Treatment::Keep => prop_assert_eq!(shaped.get(field), Some(value)),
                    Treatment::Remove => prop_assert!(!shaped.contains_key(field)),
                    Treatment::Pseudonymise => {
                        let token = &shaped[field];
                        prop_assert_eq!(token, &key.token(value));
                        if let (Some(raw), Some(token)) = (value.as_str(), token.as_str()) {
                            prop_assert!(raw.len() < 4 || !token.contains(raw), "{} in {}", raw, token);
                        }
                    }
                }
            }
            // Nothing else, in the same order.
            let order: Vec<&String> = whole.keys().filter(|k| shaped.contains_key(*k)).collect();
            prop_assert_eq!(order, shaped.keys().collect::<Vec<_>>());
            let shaped = Value::Object(shaped.clone());
            prop_assert!(schema.is_valid(&shaped), "{}", shaped);
        }
    }
}

proptest! {
    #[test]
    fn every_event_of_any_notification_matches_the_published_schema(
        n in arb_open_notification(),
        tree in arb_tree_any_keys(),
    ) {
        let body = json!({"ChangeDateTime": "2024-05-03T17:42:10+02:00",
                          "Booking": Value::Object(with_id(&tree)), "Changes": []});
        let customers = normalize(n, received()).unwrap();
        let bookings = booking(&body.to_string());
        for event in customers.iter().chain(&bookings) {
            let value = event.to_value();
            let errors = crate::contract::schema::flat_event_errors(event.entity, &value);
            prop_assert!(errors.is_empty(), "{:#?}\nin {}", errors, value);
        }
    }
}

proptest! {
    #[test]
    fn one_event_per_change_and_at_least_one(n in arb_notification()) {
        let events = normalize(n.clone(), received()).unwrap();
        prop_assert_eq!(events.len(), n.changes.len().max(1));
        for (i, e) in events.iter().enumerate() {
            prop_assert_eq!(e.change_index, i);
            prop_assert_eq!(e.change_count, n.changes.len());
            prop_assert_eq!(e.entity_id, n.latest.id);
        }
    }

    #[test]
    fn ids_are_unique_within_and_stable_across_calls(n in arb_notification()) {
        let first = normalize(n.clone(), received()).unwrap();
        let later = normalize(n.clone(), received() + chrono::Duration::seconds(90)).unwrap();
        let ids: HashSet<Uuid> = first.iter().map(|e| e.event_id).collect();
        prop_assert_eq!(ids.len(), first.len());
        let again: Vec<Uuid> = later.iter().map(|e| e.event_id).collect();
        prop_assert_eq!(first.iter().map(|e| e.event_id).collect::<Vec<_>>(), again);
    }

    #[test]
    fn every_customer_field_appears_exactly_once(n in arb_notification()) {
        let events = normalize(n.clone(), received()).unwrap();
        let text = String::from_utf8(events[0].to_json()).unwrap();
        // A repeated key would collapse into one map entry and the count would fall short.
        let object: serde_json::Map<String, Value> = serde_json::from_str(&text).unwrap();
        let customer_keys = object.keys().filter(|k| k.starts_with("customer_")).count();
        // customer_id plus one key per field, whatever their names.
        prop_assert_eq!(customer_keys, n.latest.fields.len() + 1);
        prop_assert_eq!(object.len(), fixed_keys(&CUSTOMER).len() + n.latest.fields.len());
        prop_assert!(object.values().all(|v| !v.is_object() && !v.is_array()));
    }

    #[test]
    fn every_scalar_of_a_nested_booking_appears_once_under_its_path(tree in arb_tree()) {
        let body = json!({"ChangeDateTime": "2024-05-03T17:42:10Z",
                          "Booking": Value::Object(with_id(&tree)), "Changes": []});
        let events = booking(&body.to_string());
        let event = events[0].to_value();
        let mut expected = serde_json::Map::new();
        for (key, value) in &tree {
            flatten_expected(&mut expected, &format!("booking_{key}"), value);
        }
        for (key, value) in &expected {
            prop_assert_eq!(event.get(key), Some(value), "{}", key);
        }
        prop_assert_eq!(event.as_object().unwrap().len(), fixed_keys(&BOOKING).len() + expected.len());
    }

    #[test]
    fn whatever_the_keys_every_leaf_of_a_nested_booking_gives_one_field(tree in arb_tree_any_keys()) {
        // Keys that collide once snake-cased (`aB`, `a_b`, `a.b`, nested `a`/`b`),
        // meet `booking_id` (`Id` nested under nothing is the id itself, so not
        // generated at the top), or are empty: no leaf is lost or doubled.
        let body = json!({"ChangeDateTime": "2024-05-03T17:42:10Z",
                          "Booking": Value::Object(with_id(&tree)), "Changes": []});
        let event = booking(&body.to_string())[0].to_value();
        // The leaves, kept apart: their paths may meet.
        let mut leaves = Vec::new();
        for value in tree.values() {
            collect_leaves(value, &mut leaves);
        }
        let object = event.as_object().unwrap();
        let mut fields: Vec<String> = object
            .iter()
            .filter(|(k, _)| k.starts_with("booking_") && *k != "booking_id")
            .map(|(_, v)| v.to_string())
            .collect();
        leaves.sort();
        fields.sort();
        prop_assert_eq!(object.len(), fixed_keys(&BOOKING).len() + leaves.len());
        prop_assert_eq!(fields, leaves);
    }

    #[test]
    fn snake_case_output_is_lowercase_word_characters(name in "[A-Za-z0-9 _-]{0,24}") {
        let snake = prefixed_snake_case("", &name);
        prop_assert!(snake.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'));
    }

    #[test]
    fn timestamps_round_trip(secs in 0i64..4_000_000_000, nanos in 0u32..1_000_000_000) {
        let time = DateTime::from_timestamp(secs, nanos).unwrap();
        let text = format_timestamp(time);
        prop_assert!(text.ends_with('Z'));
        prop_assert_eq!(parse_timestamp(&text), Some(time));
    }
}
