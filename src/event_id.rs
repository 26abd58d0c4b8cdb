//! The deterministic id of one change: a UUIDv5 over the entity (but for customers,
//! whose ids predate other entities), its id, the raw `ChangeDateTime`, the
//! change's position, type and values. A redelivered
//! notification gets the same ids; any difference in what changed gives new ones,
//! and booking 862 never shares an id with customer 862. Never change this layout:
//! consumers deduplicate by these ids across versions.
//!
//! Values are hashed as compact JSON with numbers in the form they had when the
//! connector passed them through an f64: an integer that fits 64 bits as it is,
//! any other number as its f64 (`12.50` -> `12.5`, `1e5` -> `100000.0`) whenever
//! that f64 prints as the same decimal value. Only numbers the f64 rounded
//! (`18446744073709551617`, `0.10000000000000000000001`) are hashed with their
//! exact digits, so only their ids differ from those earlier versions gave.

use std::io::Write;

use serde_json::Value;
use uuid::Uuid;

use crate::entity::Entity;

/// Namespace of the UUIDv5 event ids. Never change it: ids must stay stable.
const NAMESPACE: Uuid = Uuid::from_u128(0x6f1c_2a0e_8d3b_4c55_9a7e_0b1d_3c5f_7e21);

/// What an id is computed from for one change: its type and the JSON of its old
/// and new values in the id's number form.
pub(crate) struct ChangeKey<'a> {
    pub change_type: &'a str,
    pub old_value: &'a [u8],
    pub new_value: &'a [u8],
}

/// The id of change `index` of entity `entity_id` (`None`: the one event of a
/// notification without changes).
pub(crate) fn of(
    entity: &Entity,
    entity_id: i64,
    raw_date: &str,
    index: usize,
    change: Option<ChangeKey<'_>>,
) -> Uuid {
    let mut name: Vec<u8> = Vec::with_capacity(160);
    // Customer ids predate the other families and keep their layout; every other
    // family's name comes first, which a customer's (starting with its id's
    // digits) never does.
    if !entity.predates_entities {
        let _ = writeln!(name, "{}", entity.name);
    }
    let _ = write!(name, "{entity_id}\n{raw_date}\n{index}\n");
    match change {
        Some(c) => {
            name.extend_from_slice(c.change_type.as_bytes());
            name.push(b'\n');
            name.extend_from_slice(c.old_value);
            name.push(b'\n');
            name.extend_from_slice(c.new_value);
        }
        None => name.extend_from_slice("\u{0}no-changes".as_bytes()),
    }
    Uuid::new_v5(&NAMESPACE, &name)
}

/// Appends a scalar as an id hashes it (numbers as described in the module docs).
pub(crate) fn write_scalar(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Number(number) => write_number(out, &number.to_string()),
        scalar => write_json(out, scalar),
    }
}

/// Appends the number `digits` (JSON number text) as an id hashes it.
pub(crate) fn write_number(out: &mut Vec<u8>, digits: &str) {
    // An integer that fits 64 bits was one then too; `-0` was a float (`-0.0`).
    if digits != "-0" && (digits.parse::<i64>().is_ok() || digits.parse::<u64>().is_ok()) {
        out.extend_from_slice(digits.as_bytes());
        return;
    }
    // serde_json's own float parser: the f64 the earlier versions held.
    if let Ok(float) = serde_json::from_str::<f64>(digits) {
        if float.is_finite() {
            let printed = serde_json::to_string(&float).expect("a finite f64 serializes");
            if same_decimal(digits, &printed) {
                out.extend_from_slice(printed.as_bytes());
                return;
            }
        }
    }
    out.extend_from_slice(digits.as_bytes());
}

fn write_json(out: &mut Vec<u8>, value: &(impl serde::Serialize + ?Sized)) {
    serde_json::to_writer(out, value).expect("JSON values always serialize");
}

/// Whether two JSON number texts denote the same decimal value (`12.50` and
/// `12.5`, `1e5` and `100000.0`; `-0` and `-0.0`).
fn same_decimal(a: &str, b: &str) -> bool {
    match (canonical(a), canonical(b)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// A number text as (negative, significant digits without leading or trailing
/// zeros, power of ten of the last digit); `None` when the exponent overflows.
fn canonical(text: &str) -> Option<(bool, String, i64)> {
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exponent) = match text.find(['e', 'E']) {
        Some(at) => (&text[..at], Some(&text[at + 1..])),
        None => (text, None),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits: String = whole.chars().chain(fraction.chars()).collect();
    let trimmed_end = digits.trim_end_matches('0');
    if trimmed_end.trim_start_matches('0').is_empty() {
        // Zero, whatever its exponent.
        return Some((negative, String::new(), 0));
    }
    let exponent = exponent.map_or(Some(0), |e| e.parse::<i64>().ok())?;
    let power = exponent
        .checked_sub(i64::try_from(fraction.len()).ok()?)?
        .checked_add(i64::try_from(digits.len() - trimmed_end.len()).ok()?)?;
    let significant = trimmed_end.trim_start_matches('0');
    Some((negative, significant.to_string(), power))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entity::CUSTOMER;
    use crate::payload::Field;

    /// (value, id the earlier build gave), from 6518a89.
    const EARLIER_IDS: &[(&str, &str)] = &[
        (r#"0"#, "ebb638ad-5b60-5427-b70d-2baf4b2641f8"),
        (r#"-0"#, "f515b9bf-47fd-5816-b604-b844d78372bc"),
        (r#"12.5"#, "c4589678-3706-5487-9fab-ff8e26973cdf"),
        (r#"12.50"#, "c4589678-3706-5487-9fab-ff8e26973cdf"),
        (r#"1e5"#, "1b934de1-29c3-5472-9551-eb4aa2a0a23c"),
        (r#"1E2"#, "7f17683a-0f97-573a-9d22-febeac32bd6a"),
        (r#"0.1"#, "8e072c44-abc4-5468-b369-0a90874fa045"),
        (r#"100000.0"#, "1b934de1-29c3-5472-9551-eb4aa2a0a23c"),
        (r#"-1.5"#, "03a41c4e-92f3-5814-8b0d-4ab9532b0daf"),
        (
            r#"18446744073709551615"#,
            "c3a71ef2-1839-5706-972f-d0bb84ca6308",
        ),
        (
            r#"18446744073709551617"#,
            "f6199543-48bc-55cb-850f-3a8dc7c20722",
        ),
        (
            r#"-9223372036854775809"#,
            "934b4118-9007-565e-a349-b836fd16ecd0",
        ),
        (
            r#"123456789012345678901234567890"#,
            "986c3090-214a-5610-958c-aac8612b2c8c",
        ),
        (
            r#"0.10000000000000000000001"#,
            "8e072c44-abc4-5468-b369-0a90874fa045",
        ),
        (
            r#"3.141592653589793238"#,
            "f58f9465-12ce-5385-9ba6-8a54f4f2d83a",
        ),
        (
            r#"[1.50,{"a":2e0}]"#,
            "4d6aa6ff-3907-53aa-a9d9-e60a78e290d1",
        ),
        (r#""text""#, "0fd73595-85c7-5b43-836c-ef83214cae5b"),
        (r#"true"#, "6d71b9ce-c566-5efb-bfc5-23888229495e"),
        (r#"null"#, "734813aa-a885-5666-a3a0-a5c876b853f0"),
    ];
    /// The values among them an f64 rounded.
    const ROUNDED: &[&str] = &[
        "18446744073709551617",
        "-9223372036854775809",
        "123456789012345678901234567890",
        "0.10000000000000000000001",
        "3.141592653589793238",
    ];

    fn id_of(value: &str) -> String {
        let field = Field::from(serde_json::from_str::<Value>(value).unwrap());
        let mut old_value = Vec::new();
        field.write_id_json(&mut old_value);
        let change = ChangeKey {
            change_type: "T",
            old_value: &old_value,
            new_value: b"null",
        };
        of(
            &CUSTOMER,
            862,
            "2018-11-16T10:46:20.7741026Z",
            0,
            Some(change),
        )
        .to_string()
    }

    #[test]
    fn ids_of_numbers_match_what_earlier_versions_gave_unless_they_were_rounded() {
        // Computed with the connector before numbers kept their digits (commit
        // 6518a89), for the same change: ids of values the f64 did not round must
        // stay; the rounded ones (marked) now differ, as docs/events.md says.
        for (value, earlier) in EARLIER_IDS {
            let rounded = ROUNDED.contains(value);
            assert_eq!(id_of(value) == *earlier, !rounded, "{value}");
        }
    }

    #[test]
    fn integers_are_hashed_as_their_digits_negative_ones_and_those_past_i64_too() {
        for digits in ["-5", "0", "9223372036854775807", "18446744073709551615"] {
            let mut out = Vec::new();
            write_number(&mut out, digits);
            assert_eq!(out, digits.as_bytes(), "{digits}");
        }
        // An integer and the float of the same value were different values then.
        assert_ne!(id_of("-5"), id_of("-5.0"));
        assert_ne!(
            id_of("18446744073709551615"),
            id_of("18446744073709551615.0")
        );
    }

    #[test]
    fn canonical_decimals() {
        for (a, b) in [
            ("12.50", "12.5"),
            ("1e5", "100000.0"),
            ("1E+2", "100.0"),
            ("-0", "-0.0"),
            ("0.00", "0.0"),
            ("0.1", "1e-1"),
            ("120e-1", "12.0"),
            ("0e99999999999999999999", "0.0"),
        ] {
            assert!(same_decimal(a, b), "{a} {b}");
        }
        for (a, b) in [
            ("12.5", "-12.5"),
            ("1.8446744073709552e19", "18446744073709551617"),
            ("0.1", "0.01"),
            ("1e99999999999999999999", "1"),
        ] {
            assert!(!same_decimal(a, b), "{a} {b}");
        }
    }
}
