//! An entity's state with every non-empty object replaced by its members, named
//! by path (`Customer.FirstName`), to any depth, in the order sent; arrays and
//! empty objects stay their text. The objects arrive as the text the parser wrote
//! (keys already checked for repeats), which is read once more, member by member:
//! no tree is built. Names repeat their parents' (`A.B.C`, `A.B.D`), so their
//! total can grow faster than the body: past a budget the work stops.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::field::{is_number_token, number, FieldVisitor};
use super::Field;

/// The names of flattened fields would take more than the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NamesTooLong;

/// `fields` flattened; `Err` once the names' total passes `budget` bytes.
pub(super) fn flatten_objects(
    fields: Vec<(String, Field)>,
    budget: usize,
) -> Result<Vec<(String, Field)>, NamesTooLong> {
    let mut flat = Flat {
        fields: Vec::with_capacity(fields.len()),
        name_bytes: 0,
        budget,
        over: false,
    };
    for (name, field) in fields {
        match field {
            // Only objects have members; anything else is kept as it is.
            Field::Nested { text, id_text } if text.starts_with('{') => {
                let (fields_before, bytes_before) = (flat.fields.len(), flat.name_bytes);
                let mut json = serde_json::Deserializer::from_str(&text);
                let member = Member {
                    path: name.clone(),
                    flat: &mut flat,
                };
                if member.deserialize(&mut json).is_err() {
                    if flat.over {
                        return Err(NamesTooLong);
                    }
                    // The parser's own text does not fail to read back; should it,
                    // the object is kept whole, as its text.
                    flat.fields.truncate(fields_before);
                    flat.name_bytes = bytes_before;
                    flat.add(name, Field::Nested { text, id_text })?;
                }
            }
            other => flat.add(name, other)?,
        }
    }
    Ok(flat.fields)
}

/// Flattened fields being collected, and their names' bytes.
struct Flat {
    fields: Vec<(String, Field)>,
    name_bytes: usize,
    budget: usize,
    /// Whether the budget was passed.
    over: bool,
}

impl Flat {
    fn add(&mut self, name: String, field: Field) -> Result<(), NamesTooLong> {
        self.name_bytes += name.len();
        if self.name_bytes > self.budget {
            self.over = true;
            return Err(NamesTooLong);
        }
        self.fields.push((name, field));
        Ok(())
    }

    /// [`Flat::add`] for a visitor.
    fn put<E: de::Error>(&mut self, path: String, field: Result<Field, E>) -> Result<(), E> {
        let field = field?;
        self.add(path, field)
            .map_err(|NamesTooLong| de::Error::custom("names too long"))
    }
}

/// The value at `path`: a non-empty object's members go under `path.member`.
struct Member<'a> {
    path: String,
    flat: &'a mut Flat,
}

impl<'de> DeserializeSeed<'de> for Member<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

const LEAF: FieldVisitor = FieldVisitor { hashed: false };

// The visits serde_json makes when it reads JSON text (with `arbitrary_precision`,
// decimals arrive as a map holding their digits); any other one is an error,
// and the object is then kept whole.

impl<'de> Visitor<'de> for Member<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.flat.put(self.path, LEAF.visit_bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.flat.put(self.path, LEAF.visit_i64(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.flat.put(self.path, LEAF.visit_u64(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.flat.put(self.path, LEAF.visit_str(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.flat.put(self.path, LEAF.visit_unit())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        self.flat.put(self.path, LEAF.visit_seq(seq))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let first = map.next_key::<String>()?;
        if is_number_token(first.as_deref()) {
            return self.flat.put(self.path, number(map));
        }
        let Some(first) = first else {
            let empty = Field::Nested {
                text: "{}".into(),
                id_text: None,
            };
            return self.flat.put(self.path, Ok(empty));
        };
        let mut key = Some(first);
        while let Some(member) = key {
            let path = format!("{}.{member}", self.path);
            map.next_value_seed(Member {
                path,
                flat: &mut *self.flat,
            })?;
            key = map.next_key::<String>()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_that_is_no_json_value_is_refused_saying_what_was_expected() {
        let mut flat = Flat {
            fields: Vec::new(),
            name_bytes: 0,
            budget: 100,
            over: false,
        };
        let member = Member {
            path: "A".into(),
            flat: &mut flat,
        };
        let bytes = serde::de::value::BytesDeserializer::<serde::de::value::Error>::new(b"x");
        let err = member.deserialize(bytes).unwrap_err().to_string();
        assert!(err.contains("expected any JSON value"), "{err}");
    }
}
