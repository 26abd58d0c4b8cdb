//! One value of the body as the connector keeps it: a scalar as sent, or an object
//! or array already written as its compact JSON text (events carry nested values
//! as text, so no tree is built: the work is a copy, however deep the nesting).
//!
//! While the text is written, every object's keys are checked for repeats (at any
//! depth) and numbers keep their digits. For a value an event id hashes
//! (`OldValue`, `NewValue`), the text in the id's number form is written alongside
//! (see [`crate::event_id`]).

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Number, Value};

use crate::event_id;

/// The key under which serde_json (with `arbitrary_precision`) hands a number it
/// keeps as text to a visitor; `serde_json::Value` recognises it the same way. A
/// body's own object whose only key is this string, holding a number's digits, is
/// read as that number too: it only changes the sender's own value and never
/// yields invalid JSON.
const NUMBER_TOKEN: &str = "$serde_json::private::Number";

/// A value of the body.
#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    /// A string, number, boolean or null, as sent (numbers with their digits).
    Scalar(Value),
    /// An object or array as its compact JSON text.
    Nested {
        text: String,
        /// The text in the event id's number form, when the value is hashed into
        /// an id and that form differs.
        id_text: Option<String>,
    },
}

impl Field {
    /// The value an event carries: the scalar, or the nested value's text.
    pub fn into_flat(self) -> Value {
        match self {
            Field::Scalar(value) => value,
            Field::Nested { text, .. } => Value::String(text),
        }
    }

    /// Appends the JSON an event id hashes for this value.
    pub(crate) fn write_id_json(&self, out: &mut Vec<u8>) {
        match self {
            Field::Scalar(value) => event_id::write_scalar(out, value),
            Field::Nested { text, id_text } => {
                out.extend_from_slice(id_text.as_deref().unwrap_or(text).as_bytes())
            }
        }
    }
}

impl From<Value> for Field {
    /// The field `value` would be read as, were it sent (for tests and tools).
    fn from(value: Value) -> Self {
        let text = value.to_string();
        let mut json = serde_json::Deserializer::from_str(&text);
        Hashed
            .deserialize(&mut json)
            .expect("a JSON value reads back")
    }
}

/// Reads a value that no event id hashes.
pub(crate) struct Plain;
/// Reads a value an event id hashes (`OldValue`, `NewValue`).
pub(crate) struct Hashed;

impl<'de> DeserializeSeed<'de> for Plain {
    type Value = Field;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Field, D::Error> {
        d.deserialize_any(FieldVisitor { hashed: false })
    }
}

impl<'de> DeserializeSeed<'de> for Hashed {
    type Value = Field;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Field, D::Error> {
        d.deserialize_any(FieldVisitor { hashed: true })
    }
}

/// Reads one value into a [`Field`]; `hashed`: also write the id's text.
pub(super) struct FieldVisitor {
    pub(super) hashed: bool,
}

impl FieldVisitor {
    /// Writes the rest of a nested value with `write`, then wraps the text.
    fn nested<E: de::Error>(
        self,
        write: impl FnOnce(&mut Texts) -> Result<(), E>,
    ) -> Result<Field, E> {
        let mut texts = Texts {
            exact: Vec::with_capacity(64),
            id: self.hashed.then(Vec::new),
            id_differs: false,
        };
        write(&mut texts)?;
        let text = into_string(texts.exact);
        let id_text = texts.id.filter(|_| texts.id_differs).map(into_string);
        Ok(Field::Nested { text, id_text })
    }
}

fn into_string(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).expect("JSON text written from valid strings is UTF-8")
}

impl<'de> Visitor<'de> for FieldVisitor {
    type Value = Field;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Field, E> {
        Ok(Field::Scalar(Value::Bool(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Field, E> {
        Ok(Field::Scalar(Value::Number(v.into())))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Field, E> {
        Ok(Field::Scalar(Value::Number(v.into())))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Field, E> {
        Ok(Field::Scalar(
            Number::from_f64(v).map_or(Value::Null, Value::Number),
        ))
    }
    fn visit_str<E>(self, v: &str) -> Result<Field, E> {
        Ok(Field::Scalar(Value::String(v.to_string())))
    }
    fn visit_string<E>(self, v: String) -> Result<Field, E> {
        Ok(Field::Scalar(Value::String(v)))
    }
    fn visit_unit<E>(self) -> Result<Field, E> {
        Ok(Field::Scalar(Value::Null))
    }
    fn visit_none<E>(self) -> Result<Field, E> {
        Ok(Field::Scalar(Value::Null))
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Field, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Field, A::Error> {
        self.nested(|texts| texts.write_seq(seq))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Field, A::Error> {
        let first = map.next_key::<String>()?;
        if is_number_token(first.as_deref()) {
            return number(map);
        }
        self.nested(|texts| texts.write_map(first, map))
    }
}

/// Whether an object's first key says it is a number kept as text.
pub(super) fn is_number_token(key: Option<&str>) -> bool {
    key == Some(NUMBER_TOKEN)
}

/// The number whose digits follow the number token.
pub(super) fn number<'de, A: MapAccess<'de>>(mut map: A) -> Result<Field, A::Error> {
    let digits = map.next_value::<String>()?;
    digits
        .parse::<Number>()
        .map(|n| Field::Scalar(Value::Number(n)))
        .map_err(de::Error::custom)
}

/// The texts being written: the exact one, and the id's when asked for.
struct Texts {
    exact: Vec<u8>,
    id: Option<Vec<u8>>,
    /// Whether the id's text differs from the exact one (a number written otherwise).
    id_differs: bool,
}

impl Texts {
    /// Appends the same bytes to both texts.
    fn push(&mut self, bytes: &[u8]) {
        self.exact.extend_from_slice(bytes);
        if let Some(id) = &mut self.id {
            id.extend_from_slice(bytes);
        }
    }

    fn push_json(&mut self, value: &(impl serde::Serialize + ?Sized)) {
        let start = self.exact.len();
        serde_json::to_writer(&mut self.exact, value).expect("JSON scalars always serialize");
        if let Some(id) = &mut self.id {
            id.extend_from_slice(&self.exact[start..]);
        }
    }

    fn push_number(&mut self, digits: &str) {
        self.exact.extend_from_slice(digits.as_bytes());
        if let Some(id) = &mut self.id {
            let start = id.len();
            event_id::write_number(id, digits);
            self.id_differs |= id[start..] != *digits.as_bytes();
        }
    }

    fn write_seq<'de, A: SeqAccess<'de>>(&mut self, mut seq: A) -> Result<(), A::Error> {
        self.push(b"[");
        let mut first = true;
        loop {
            if !first {
                // Written before the element is known; taken back after the last.
                self.push(b",");
            }
            if seq.next_element_seed(Text(&mut *self))?.is_none() {
                if !first {
                    self.exact.pop();
                    if let Some(id) = &mut self.id {
                        id.pop();
                    }
                }
                break;
            }
            first = false;
        }
        self.push(b"]");
        Ok(())
    }

    /// Writes an object whose first key (`None`: empty) was already read.
    fn write_map<'de, A: MapAccess<'de>>(
        &mut self,
        first: Option<String>,
        mut map: A,
    ) -> Result<(), A::Error> {
        self.push(b"{");
        let mut keys = Keys::default();
        let mut key = first;
        while let Some(name) = key {
            if !keys.insert(&name) {
                return Err(de::Error::custom(format!("duplicate field `{name}`")));
            }
            if keys.len() > 1 {
                self.push(b",");
            }
            self.push_json(name.as_str());
            self.push(b":");
            map.next_value_seed(Text(&mut *self))?;
            key = map.next_key::<String>()?;
        }
        self.push(b"}");
        Ok(())
    }
}

/// The keys of one object so far: a list while short, a set beyond.
#[derive(Default)]
struct Keys {
    few: Vec<String>,
    many: HashSet<String>,
}

impl Keys {
    const FEW: usize = 16;

    /// False when `key` was there already.
    fn insert(&mut self, key: &str) -> bool {
        if self.many.is_empty() {
            if self.few.iter().any(|k| k == key) {
                return false;
            }
            if self.few.len() < Self::FEW {
                self.few.push(key.to_string());
                return true;
            }
            self.many.extend(self.few.drain(..));
        }
        self.many.insert(key.to_string())
    }

    fn len(&self) -> usize {
        self.few.len() + self.many.len()
    }
}

/// Writes one nested value into the texts. It takes the visits serde_json makes
/// when it reads a value inside an object or array (with `arbitrary_precision`,
/// decimals arrive as a map holding their digits; never an option); any other
/// one is an error.
struct Text<'t>(&'t mut Texts);

impl<'de> DeserializeSeed<'de> for Text<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Text<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.0.push(if v { b"true" } else { b"false" });
        Ok(())
    }
    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.0.push_json(&v);
        Ok(())
    }
    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.0.push_json(&v);
        Ok(())
    }
    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.0.push_json(v);
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        self.0.push(b"null");
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        self.0.write_seq(seq)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let first = map.next_key::<String>()?;
        if is_number_token(first.as_deref()) {
            let digits = map.next_value::<String>()?;
            // Written as serde_json writes the number (`1E5` -> `1e+5`).
            let number = digits.parse::<Number>().map_err(de::Error::custom)?;
            self.0.push_number(&number.to_string());
            return Ok(());
        }
        self.0.write_map(first, map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(text: &str, hashed: bool) -> Result<Field, serde_json::Error> {
        let mut json = serde_json::Deserializer::from_str(text);
        if hashed {
            Hashed.deserialize(&mut json)
        } else {
            Plain.deserialize(&mut json)
        }
    }

    /// A deserializer that hands over bytes, which no JSON text gives.
    fn bytes() -> serde::de::value::BytesDeserializer<'static, serde::de::value::Error> {
        serde::de::value::BytesDeserializer::new(b"x")
    }

    #[test]
    fn what_is_no_json_value_is_refused_saying_what_was_expected() {
        let err = Plain.deserialize(bytes()).unwrap_err().to_string();
        assert!(err.contains("expected any JSON value"), "{err}");
        let mut texts = Texts {
            exact: Vec::new(),
            id: None,
            id_differs: false,
        };
        let err = Text(&mut texts).deserialize(bytes()).unwrap_err();
        assert!(err.to_string().contains("expected any JSON value"), "{err}");
    }

    #[test]
    fn an_object_s_keys_are_a_list_while_few_and_a_set_beyond() {
        let mut keys = Keys::default();
        for i in 0..Keys::FEW {
            assert!(keys.insert(&i.to_string()));
        }
        assert!(!keys.insert("0"));
        assert_eq!((keys.few.len(), keys.many.len()), (Keys::FEW, 0));
        assert!(keys.insert("x"));
        assert_eq!((keys.few.len(), keys.many.len()), (0, Keys::FEW + 1));
        assert!(!keys.insert("0") && !keys.insert("x"));
        assert_eq!(keys.len(), Keys::FEW + 1);
    }

    #[test]
    fn nested_values_become_the_compact_text_serde_json_writes() {
        for value in [
            json!({"a": [1, "x\"y\n", null, true, {"b": -2}], "c": {}}),
            json!([[[[]]], {}, [1.5, "é"]]),
            json!({"z": 1, "a": 2}),
        ] {
            let field = read(&value.to_string(), false).unwrap();
            assert_eq!(field.into_flat(), Value::String(value.to_string()));
        }
        assert_eq!(
            read("12.50", false).unwrap().into_flat().to_string(),
            "12.50"
        );
    }

    #[test]
    fn numbers_keep_their_digits_and_the_id_text_has_the_id_form() {
        let field = read(r#"[12.50, 18446744073709551617, 1e5, 3]"#, true).unwrap();
        let Field::Nested { text, id_text } = field else {
            panic!("nested")
        };
        assert_eq!(text, "[12.50,18446744073709551617,1e+5,3]");
        assert_eq!(
            id_text.as_deref(),
            Some("[12.5,18446744073709551617,100000.0,3]")
        );
        let Field::Nested { id_text, .. } = read("[1, 2]", true).unwrap() else {
            panic!("nested")
        };
        assert_eq!(id_text, None, "no copy when the forms agree");
    }

    #[test]
    fn a_body_s_own_number_token_object_is_written_as_serde_json_writes_it() {
        let field = read(r#"[{"$serde_json::private::Number":"1E5"}]"#, false).unwrap();
        assert_eq!(field.into_flat(), json!("[1e+5]"));
    }

    #[test]
    fn repeated_keys_are_refused_at_any_depth_and_object_size() {
        for text in [
            r#"{"a":1,"a":2}"#,
            r#"[{"b":[{"c":1,"c":1}]}]"#,
            &format!(
                "{{{},\"k7\":0}}",
                (0..40)
                    .map(|i| format!("\"k{i}\":0"))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        ] {
            let err = read(text, false).unwrap_err().to_string();
            assert!(err.contains("duplicate field"), "{text}: {err}");
        }
        let many = format!(
            "{{{}}}",
            (0..40)
                .map(|i| format!("\"k{i}\":0"))
                .collect::<Vec<_>>()
                .join(",")
        );
        assert!(read(&many, false).is_ok());
    }
}
