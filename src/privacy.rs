//! Field rules and pseudonymisation (docs/privacy.md). Pure: no I/O.
//!
//! A route's (or a state topic's) rules decide, for each flat field but the
//! envelope, whether its topics get it as it is, not at all, or pseudonymised:
//! `include` (globs; when given, only matching fields are kept), then `exclude`
//! (globs; matching fields are removed), then `pseudonymise` (globs; matching
//! fields that are kept have their value replaced by a [`TOKEN_PREFIX`] token).
//! The envelope (ids, `change_*`, times) is never touched: the writer only asks
//! about the other fields. A name ending in `_<digits>` is matched with and
//! without that suffix, so a field renamed `customer_email_2` because two sent
//! names met (`Email`, `email`) gets the rules of `customer_email`.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use globset::{Glob, GlobSet, GlobSetBuilder};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;
use uuid::Uuid;

/// What a pseudonymised value starts with; 64 lowercase hex digits follow.
pub const TOKEN_PREFIX: &str = "hmac-sha256:";
/// The shortest `privacy.key`: 32 bytes, the HMAC-SHA256 block of security.
pub const MIN_KEY_BYTES: usize = 32;

/// The pseudonymisation key (`privacy.key`), and whether event ids are keyed
/// with it too (`privacy.keyed_event_ids`). Never printed.
#[derive(Clone)]
pub struct Key {
    mac: Hmac<Sha256>,
    keyed_event_ids: bool,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(<hidden>)")
    }
}

/// Namespace of keyed event ids (UUIDv5 of the HMAC of the plain id).
const KEYED_ID_NAMESPACE: Uuid = Uuid::from_u128(0x3d0b_91c4_5e27_4f86_b1a9_6c2e_8f47_d503);

/// Why a key is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be at least {MIN_KEY_BYTES} bytes (e.g. 64 hex digits from `openssl rand -hex 32`), got {len}")]
pub struct KeyTooShort {
    pub len: usize,
}

impl Key {
    pub fn new(secret: &str) -> Result<Key, KeyTooShort> {
        if secret.len() < MIN_KEY_BYTES {
            return Err(KeyTooShort { len: secret.len() });
        }
        let mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
            .expect("HMAC accepts keys of any length");
        Ok(Key {
            mac,
            keyed_event_ids: false,
        })
    }

    /// The same key, keying event ids too when `keyed` is true.
    pub fn keying_event_ids(self, keyed: bool) -> Key {
        Key {
            keyed_event_ids: keyed,
            ..self
        }
    }

    /// Whether event ids are keyed with this key.
    pub fn keys_event_ids(&self) -> bool {
        self.keyed_event_ids
    }

    /// The keyed form of the plain event id `id`: a UUIDv5 of its HMAC. As
    /// deterministic as the plain id (same change, same id, in every topic), but
    /// nobody without the key can test a guess of the values it was made from.
    pub fn event_id(&self, id: Uuid) -> Uuid {
        let mut mac = self.mac.clone();
        mac.update(b"event_id\n");
        mac.update(id.as_bytes());
        Uuid::new_v5(&KEYED_ID_NAMESPACE, &mac.finalize().into_bytes())
    }

    /// The token of `value`: HMAC-SHA256 of its canonical text (a string's
    /// characters, any other scalar's JSON text), as `hmac-sha256:<hex>`. `null`
    /// stays `null`: there is nothing to hide, and a token for it would be the same
    /// for everyone.
    pub fn token(&self, value: &Value) -> Value {
        let text = match value {
            Value::Null => return Value::Null,
            Value::String(text) => std::borrow::Cow::Borrowed(text.as_str()),
            other => std::borrow::Cow::Owned(other.to_string()),
        };
        let mut mac = self.mac.clone();
        mac.update(text.as_bytes());
        let digest = mac.finalize().into_bytes();
        Value::String(format!("{TOKEN_PREFIX}{}", hex::encode(digest)))
    }
}

/// What a topic gets of one field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Treatment {
    Keep,
    Remove,
    Pseudonymise,
}

/// A list of glob patterns over flat field names, as written and compiled.
#[derive(Debug, Clone)]
struct Patterns {
    written: Vec<String>,
    set: GlobSet,
}

impl Patterns {
    fn new(written: Vec<String>) -> Result<Patterns, String> {
        let mut builder = GlobSetBuilder::new();
        for pattern in &written {
            if pattern.is_empty() {
                return Err("an empty pattern matches no field".into());
            }
            builder.add(glob(pattern).map_err(|e| format!("invalid glob: {e}"))?);
        }
        let set = builder.build().map_err(|e| format!("invalid glob: {e}"))?;
        Ok(Patterns { written, set })
    }

    /// Whether the pattern matches `field` or, for a name with a `_<digits>`
    /// suffix, the name without it.
    fn matches(&self, field: &str) -> bool {
        self.set.is_match(field) || unsuffixed(field).is_some_and(|base| self.set.is_match(base))
    }
}

/// `glob` compiled as field rules read it: `{a,}` matches `a` and the empty string.
fn glob(pattern: &str) -> Result<Glob, globset::Error> {
    globset::GlobBuilder::new(pattern)
        .empty_alternates(true)
        .build()
}

/// `name` without a trailing `_<digits>` (the suffix the normalizer gives a name
/// taken already), when it has one.
pub fn unsuffixed(name: &str) -> Option<&str> {
    let (base, digits) = name.rsplit_once('_')?;
    let numbered = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
    (numbered && !base.is_empty()).then_some(base)
}

/// Whether `pattern` is a plain field name (no glob syntax).
fn is_literal(pattern: &str) -> bool {
    !pattern.contains(['*', '?', '[', ']', '{', '}', '\\'])
}

/// The ECMA 262 regular expression (as JSON Schema's `pattern` uses) matching
/// exactly the names `glob` matches, without anchors: `*` any characters, `?`
/// one, `[abc]`/`[!abc]` a class, `{a,b}` alternatives, `\x` a literal `x`.
pub fn glob_regex(glob: &str) -> String {
    let mut regex = String::with_capacity(glob.len() * 2);
    let mut chars = glob.chars();
    let mut in_class = false;
    let mut alternatives = 0;
    while let Some(c) = chars.next() {
        if in_class {
            match c {
                ']' => {
                    in_class = false;
                    regex.push(']');
                }
                '\\' | '[' | '^' => {
                    regex.push('\\');
                    regex.push(c);
                }
                _ => regex.push(c),
            }
            continue;
        }
        match c {
            '*' => regex.push_str(".*"),
            '?' => regex.push('.'),
            '[' => {
                in_class = true;
                regex.push('[');
                let rest = chars.as_str();
                if let Some(negated) = rest.strip_prefix(['!', '^']) {
                    regex.push('^');
                    chars = negated.chars();
                }
                // A `]` right after the opening is a member, not the end.
                if let Some(after) = chars.as_str().strip_prefix(']') {
                    regex.push_str("\\]");
                    chars = after.chars();
                }
            }
            '{' => {
                alternatives += 1;
                regex.push_str("(?:");
            }
            ',' if alternatives > 0 => regex.push('|'),
            '}' if alternatives > 0 => {
                alternatives -= 1;
                regex.push(')');
            }
            '\\' => regex.push_str(&regex_escape(
                &chars.next().map(String::from).unwrap_or_default(),
            )),
            _ => regex.push_str(&regex_escape(&c.to_string())),
        }
    }
    regex
}

/// `text` with every character a regular expression gives a meaning escaped.
pub fn regex_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        // Only what ECMA 262's unicode mode allows escaped (no `\-`).
        if "\\^$.|?*+()[]{}/".contains(c) {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// Which of a rule's lists is wrong, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    /// `include`, `exclude` or `pseudonymise`.
    pub list: &'static str,
    pub message: String,
}

/// The rules of one route or state topic. Built only through [`FieldRules::new`],
/// which refuses contradictions.
#[derive(Debug, Clone)]
pub struct FieldRules {
    include: Option<Patterns>,
    exclude: Patterns,
    pseudonymise: Patterns,
    /// Set exactly when `pseudonymise` lists something.
    key: Option<Arc<Key>>,
    /// Treatments already worked out, by field name: the platform sends the same
    /// names in every notification, so the globs run once per name, not once per
    /// field of every event. Holds at most [`TREATMENTS_KEPT`] names of at most
    /// [`TREATMENT_NAME_BYTES`] bytes: past that (a sender inventing names), names
    /// are matched each time. Hashed with foldhash: a lookup costs less than the
    /// globs it saves, and the bound makes collisions harmless.
    treatments: Arc<RwLock<HashMap<Box<str>, Treatment, foldhash::fast::RandomState>>>,
}

/// How many field names' treatments one rule set keeps.
pub const TREATMENTS_KEPT: usize = 1024;
/// The longest field name whose treatment is kept (so the kept names take at most
/// 128 KiB per rule set).
pub const TREATMENT_NAME_BYTES: usize = 128;

impl FieldRules {
    /// Compiles the lists. Refused: invalid globs, a pattern naming an `envelope`
    /// field, a pattern listed twice in a list, a field written out by name to be
    /// kept (included or pseudonymised) that `exclude` removes or `include` does
    /// not keep, and pseudonymising without a key. Globs are not checked against
    /// each other: `include = ["a*"]` with `exclude = ["a*"]` keeps nothing.
    pub fn new(
        include: Option<Vec<String>>,
        exclude: Vec<String>,
        pseudonymise: Vec<String>,
        envelope: &[&str],
        key: Option<&Arc<Key>>,
    ) -> Result<FieldRules, RuleError> {
        let error = |list: &'static str| move |message: String| RuleError { list, message };
        let lists = [
            ("include", include.as_deref().unwrap_or_default()),
            ("exclude", &exclude[..]),
            ("pseudonymise", &pseudonymise[..]),
        ];
        for (list, patterns) in lists {
            if let Some(named) = patterns.iter().find(|p| envelope.contains(&p.as_str())) {
                return Err(error(list)(format!(
                    "{named:?} is part of the envelope, which every topic receives as it is: leave it out"
                )));
            }
            for (n, pattern) in patterns.iter().enumerate() {
                if patterns[..n].contains(pattern) {
                    return Err(error(list)(format!("{pattern:?} is listed twice")));
                }
            }
        }
        let rules = FieldRules {
            include: include
                .map(Patterns::new)
                .transpose()
                .map_err(error("include"))?,
            exclude: Patterns::new(exclude).map_err(error("exclude"))?,
            pseudonymise: Patterns::new(pseudonymise).map_err(error("pseudonymise"))?,
            key: None,
            treatments: Arc::default(),
        };
        // A field written out by name to be kept must not be removed by another list.
        let named_kept = (rules
            .include
            .iter()
            .flat_map(|p| &p.written)
            .map(|p| ("include", p)))
        .chain(
            rules
                .pseudonymise
                .written
                .iter()
                .map(|p| ("pseudonymise", p)),
        );
        for (list, pattern) in named_kept.filter(|(_, p)| is_literal(p)) {
            if rules.exclude.matches(pattern) {
                return Err(error(list)(format!(
                    "{pattern:?} is also removed by exclude: the rule contradicts itself"
                )));
            }
            if list == "pseudonymise" && rules.include.as_ref().is_some_and(|i| !i.matches(pattern))
            {
                return Err(error(list)(format!(
                    "{pattern:?} is not kept by include: the rule contradicts itself"
                )));
            }
        }
        if rules.pseudonymise.written.is_empty() {
            return Ok(rules);
        }
        let key = key.ok_or_else(|| {
            error("pseudonymise")(
                "needs privacy.key (CONNECTOR__PRIVACY__KEY): the secret the tokens are made with"
                    .into(),
            )
        })?;
        Ok(FieldRules {
            key: Some(Arc::clone(key)),
            ..rules
        })
    }

    /// Whether the rules change nothing (every field kept as it is).
    pub fn is_empty(&self) -> bool {
        self.include.is_none()
            && self.exclude.written.is_empty()
            && self.pseudonymise.written.is_empty()
    }

    /// What happens to `field` (never asked for envelope fields).
    pub fn treatment(&self, field: &str) -> Treatment {
        let known = self
            .treatments
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(treatment) = known.get(field) {
            return *treatment;
        }
        drop(known);
        let keep = field.len() <= TREATMENT_NAME_BYTES;
        let treatment = self.matched_treatment(field);
        if keep {
            let mut known = self
                .treatments
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            if known.len() < TREATMENTS_KEPT {
                known.insert(field.into(), treatment);
            }
        }
        treatment
    }

    /// [`treatment`](Self::treatment), from the globs.
    fn matched_treatment(&self, field: &str) -> Treatment {
        let kept =
            self.include.as_ref().is_none_or(|p| p.matches(field)) && !self.exclude.matches(field);
        if !kept {
            Treatment::Remove
        } else if self.pseudonymise.matches(field) {
            Treatment::Pseudonymise
        } else {
            Treatment::Keep
        }
    }

    /// `value` as a topic with these rules gets field `field`; `None`: removed.
    pub fn apply<'v>(&self, field: &str, value: &'v Value) -> Option<std::borrow::Cow<'v, Value>> {
        match self.treatment(field) {
            Treatment::Keep => Some(std::borrow::Cow::Borrowed(value)),
            Treatment::Remove => None,
            Treatment::Pseudonymise => {
                let key = self
                    .key
                    .as_ref()
                    .expect("rules that pseudonymise have a key");
                Some(std::borrow::Cow::Owned(key.token(value)))
            }
        }
    }

    /// The patterns, for warnings and the route table: `(list, patterns)`.
    pub fn lists(&self) -> [(&'static str, Option<&[String]>); 3] {
        [
            ("include", self.include.as_ref().map(|p| &p.written[..])),
            ("exclude", Some(&self.exclude.written[..])),
            ("pseudonymise", Some(&self.pseudonymise.written[..])),
        ]
    }

    /// Whether both rule sets treat every field alike (the same lists, in any order).
    pub fn same_as(&self, other: &FieldRules) -> bool {
        let sorted = |rules: &FieldRules| {
            rules.lists().map(|(_, patterns)| {
                patterns.map(|p| {
                    let mut p = p.to_vec();
                    p.sort();
                    p
                })
            })
        };
        sorted(self) == sorted(other)
    }

    /// The patterns that match none of `known` (the contract's fields): a typo,
    /// or a field of another entity.
    pub fn unmatched_patterns(&self, known: &[&str]) -> Vec<(&'static str, &str)> {
        let mut unmatched = Vec::new();
        for (list, patterns) in self.lists() {
            for pattern in patterns.unwrap_or_default() {
                let glob = glob(pattern).expect("compiled before").compile_matcher();
                if !known.iter().any(|field| glob.is_match(field)) {
                    unmatched.push((list, pattern.as_str()));
                }
            }
        }
        unmatched
    }

    /// One line for the route table: `include a,b; exclude c; pseudonymise d`, or `-`.
    pub fn summary(&self) -> String {
        let parts: Vec<String> = self
            .lists()
            .into_iter()
            .filter_map(|(list, patterns)| match patterns {
                Some([]) => None,
                Some(p) => Some(format!("{list} {}", p.join(","))),
                None => None,
            })
            .chain(
                (self.include.as_ref().is_some_and(|p| p.written.is_empty()))
                    .then(|| "include (envelope only)".to_string()),
            )
            .collect();
        if parts.is_empty() {
            "-".into()
        } else {
            parts.join("; ")
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const ENVELOPE: [&str; 3] = ["event_id", "customer_id", "change_type"];

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn key(secret: &str) -> Arc<Key> {
        Arc::new(Key::new(secret).unwrap())
    }

    fn rules(
        include: Option<&[&str]>,
        exclude: &[&str],
        pseudonymise: &[&str],
    ) -> Result<FieldRules, RuleError> {
        FieldRules::new(
            include.map(strings),
            strings(exclude),
            strings(pseudonymise),
            &ENVELOPE,
            Some(&key(&"k".repeat(32))),
        )
    }

    #[test]
    fn tokens_are_keyed_stable_and_prefixed() {
        let (a, b) = (key(&"a".repeat(32)), key(&"b".repeat(32)));
        let email = json!("aardvark@example.com");
        let token = a.token(&email);
        let text = token.as_str().unwrap();
        assert!(text.starts_with(TOKEN_PREFIX));
        assert_eq!(text.len(), TOKEN_PREFIX.len() + 64);
        assert!(text[TOKEN_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(a.token(&email), token);
        assert_ne!(b.token(&email), token);
        assert_ne!(a.token(&json!("aardvark@example.org")), token);
        // Known answer: HMAC-SHA256("a" x 32, "aardvark@example.com"), from Python's hmac.
        assert_eq!(
            text,
            "hmac-sha256:4559ee6dfaf27e413dd06873fb6c8e25e8e2e6f0cfbb4029e8d91c9747e2e8ce"
        );
        assert_eq!(a.token(&Value::Null), Value::Null);
        // Other scalars by their JSON text.
        assert_eq!(a.token(&json!(true)), a.token(&json!("true")));
        assert_eq!(a.token(&json!(862)), a.token(&json!("862")));
        assert_eq!(format!("{:?}", a), "Key(<hidden>)");
    }

    #[test]
    fn glob_regexes_match_what_the_globs_match() {
        let names = [
            "customer_email",
            "customer_e",
            "customer_",
            "customer_first_name",
            "old_value",
            "new_value",
            "change_x",
            "a.b",
            "a-b",
            "ab",
            "a]",
            "a!",
            "x{y",
            "customer_email_2",
        ];
        for glob in [
            "customer_*",
            "customer_e?ail",
            "*_value",
            "{old,new}_value",
            "customer_[ef]*",
            "customer_[!e]*",
            "a.b",
            "a-b",
            "a[]!]",
            "*",
            "customer_email",
            "customer_*_2",
            "a\\!",
            "{change,customer}_*",
        ] {
            let matcher = Glob::new(glob).unwrap().compile_matcher();
            let regex = regex::Regex::new(&format!("^{}$", glob_regex(glob))).unwrap();
            for name in names {
                assert_eq!(
                    regex.is_match(name),
                    matcher.is_match(name),
                    "{glob} {} {name}",
                    glob_regex(glob)
                );
            }
        }
        assert_eq!(glob_regex("customer_*"), "customer_.*");
        assert_eq!(glob_regex("{old,new}_value"), "(?:old|new)_value");
    }

    #[test]
    fn glob_regexes_are_pinned_as_the_published_schemas_carry_them() {
        for (glob, regex) in [
            // Outside braces a comma and a closing brace are themselves.
            ("a,b", "a,b"),
            ("a}b", "a\\}b"),
            // A closed brace ends its alternatives.
            ("{a,b},c", "(?:a|b),c"),
            ("{a,{b,c}},d", "(?:a|(?:b|c)),d"),
            // In a class, what ECMA 262's unicode mode needs escaped is escaped.
            ("[a^[]", "[a\\^\\[]"),
            ("[\\]x", "[\\\\]x"),
            ("[!]a]", "[^\\]a]"),
        ] {
            assert_eq!(glob_regex(glob), regex, "{glob}");
        }
    }

    #[test]
    fn a_renamed_field_gets_the_rules_of_its_name() {
        assert_eq!(unsuffixed("customer_email_2"), Some("customer_email"));
        assert_eq!(unsuffixed("customer_email_12"), Some("customer_email"));
        for name in [
            "customer_email",
            "customer_email_",
            "customer_email_x2",
            "_2",
            "x2",
        ] {
            assert_eq!(unsuffixed(name), None, "{name}");
        }
        let r = rules(
            Some(&["customer_*", "new_value"]),
            &["customer_email"],
            &["customer_mobile*"],
        )
        .unwrap();
        assert_eq!(r.treatment("customer_email_2"), Treatment::Remove);
        assert_eq!(
            r.treatment("customer_mobile_number_3"),
            Treatment::Pseudonymise
        );
        assert_eq!(r.treatment("new_value_2"), Treatment::Keep);
        assert_eq!(r.treatment("change_x_2"), Treatment::Remove);
        // `{,_*}` matches the name itself too.
        let r = rules(None, &["customer_email{,_*}"], &[]).unwrap();
        assert_eq!(r.treatment("customer_email"), Treatment::Remove);
        assert_eq!(r.treatment("customer_email_work"), Treatment::Remove);
    }

    #[test]
    fn treatments_are_kept_for_a_bounded_number_of_names_and_stay_right_past_it() {
        let r = rules(
            Some(&["customer_*"]),
            &["customer_email*"],
            &["customer_mobile*"],
        )
        .unwrap();
        let expected = |name: &str| {
            if name.starts_with("customer_email") || !name.starts_with("customer_") {
                Treatment::Remove
            } else if name.starts_with("customer_mobile") {
                Treatment::Pseudonymise
            } else {
                Treatment::Keep
            }
        };
        let prefixes = [
            "customer_email_",
            "customer_mobile_",
            "customer_x",
            "other_",
        ];
        let names: Vec<String> = (0..TREATMENTS_KEPT * 2)
            .map(|n| format!("{}{n}", prefixes[n % prefixes.len()]))
            .collect();
        // Twice: worked out, then (for the first TREATMENTS_KEPT) remembered.
        for _ in 0..2 {
            for name in &names {
                assert_eq!(r.treatment(name), expected(name), "{name}");
            }
        }
        assert_eq!(r.treatments.read().unwrap().len(), TREATMENTS_KEPT);
        // A clone shares what its original worked out.
        assert_eq!(r.clone().treatments.read().unwrap().len(), TREATMENTS_KEPT);
        // Long names are matched each time, never kept.
        let fresh = rules(Some(&["customer_*"]), &[], &[]).unwrap();
        let long = format!("customer_{}", "x".repeat(TREATMENT_NAME_BYTES));
        assert_eq!(fresh.treatment(&long), Treatment::Keep);
        assert_eq!(fresh.treatment(&long), Treatment::Keep);
        assert!(fresh.treatments.read().unwrap().is_empty());
        let longest = format!("customer_{}", "x".repeat(TREATMENT_NAME_BYTES - 9));
        assert_eq!(fresh.treatment(&longest), Treatment::Keep);
        assert_eq!(fresh.treatments.read().unwrap().len(), 1);
    }

    #[test]
    fn keyed_event_ids_are_stable_keyed_and_not_the_plain_ones() {
        let plain = Uuid::from_u128(0x0159f331_0d29_5e8c_a971_7a6c41ba47c1);
        let a = Key::new(&"a".repeat(32)).unwrap();
        assert!(!a.keys_event_ids());
        let a = a.keying_event_ids(true);
        assert!(a.keys_event_ids());
        let keyed = a.event_id(plain);
        assert_eq!(keyed, a.event_id(plain));
        assert_ne!(keyed, plain);
        assert_eq!(keyed.get_version_num(), 5);
        assert_ne!(keyed, key(&"b".repeat(32)).event_id(plain));
        assert_ne!(keyed, a.event_id(Uuid::from_u128(1)));
    }

    #[test]
    fn short_keys_are_refused() {
        assert_eq!(
            Key::new(&"x".repeat(31)).unwrap_err(),
            KeyTooShort { len: 31 }
        );
        assert!(Key::new(&"x".repeat(32)).is_ok());
    }

    #[test]
    fn include_then_exclude_then_pseudonymise() {
        let r = rules(
            Some(&["customer_*", "new_value"]),
            &["customer_email"],
            &["customer_mobile*", "new_value"],
        )
        .unwrap();
        assert_eq!(r.treatment("customer_surname"), Treatment::Keep);
        assert_eq!(r.treatment("customer_email"), Treatment::Remove);
        assert_eq!(r.treatment("old_value"), Treatment::Remove);
        assert_eq!(r.treatment("notification_x"), Treatment::Remove);
        assert_eq!(
            r.treatment("customer_mobile_number"),
            Treatment::Pseudonymise
        );
        assert_eq!(r.treatment("new_value"), Treatment::Pseudonymise);
        let none = rules(None, &[], &[]).unwrap();
        assert!(none.is_empty());
        assert_eq!(none.treatment("anything"), Treatment::Keep);
        let only = rules(None, &["customer_email"], &[]).unwrap();
        assert!(!only.is_empty());
        assert_eq!(only.treatment("customer_title"), Treatment::Keep);
        assert_eq!(only.treatment("customer_email"), Treatment::Remove);
        let envelope_only = rules(Some(&[]), &[], &[]).unwrap();
        assert_eq!(envelope_only.treatment("old_value"), Treatment::Remove);
        assert!(!envelope_only.is_empty());
        assert_eq!(envelope_only.summary(), "include (envelope only)");
    }

    #[test]
    fn apply_keeps_removes_or_tokenizes() {
        let r = rules(None, &["a"], &["b"]).unwrap();
        let value = json!("secret");
        assert_eq!(r.apply("a", &value), None);
        assert_eq!(r.apply("c", &value).unwrap().as_ref(), &value);
        let token = r.apply("b", &value).unwrap().into_owned();
        assert_eq!(token, key(&"k".repeat(32)).token(&value));
    }

    #[test]
    fn contradictions_envelope_fields_and_missing_keys_are_refused() {
        let refused = |r: Result<FieldRules, RuleError>| r.unwrap_err();
        let e = refused(rules(None, &["customer_id"], &[]));
        assert_eq!(e.list, "exclude");
        assert!(
            e.message
                .contains("\"customer_id\" is part of the envelope"),
            "{}",
            e.message
        );
        assert_eq!(
            refused(rules(Some(&["event_id"]), &[], &[])).list,
            "include"
        );
        assert_eq!(
            refused(rules(None, &[], &["change_type"])).list,
            "pseudonymise"
        );
        let e = refused(rules(None, &["customer_*"], &["customer_email"]));
        assert_eq!(e.list, "pseudonymise");
        assert!(
            e.message.contains("also removed by exclude"),
            "{}",
            e.message
        );
        let e = refused(rules(Some(&["customer_email"]), &["customer_email"], &[]));
        assert_eq!(e.list, "include");
        let e = refused(rules(Some(&["customer_*"]), &[], &["new_value"]));
        assert!(e.message.contains("not kept by include"), "{}", e.message);
        assert!(refused(rules(None, &["a", "a"], &[]))
            .message
            .contains("listed twice"));
        assert!(refused(rules(None, &["a["], &[]))
            .message
            .contains("invalid glob"));
        assert!(refused(rules(None, &[""], &[]))
            .message
            .contains("empty pattern"));
        let e =
            FieldRules::new(None, vec![], strings(&["new_value"]), &ENVELOPE, None).unwrap_err();
        assert_eq!(e.list, "pseudonymise");
        assert!(e.message.contains("needs privacy.key"), "{}", e.message);
        // Globs that merely overlap are not contradictions: the narrower list wins.
        assert!(rules(
            Some(&["customer_*"]),
            &["customer_email"],
            &["customer_mobile_number"]
        )
        .is_ok());
        assert!(rules(None, &["customer_e*"], &["customer_*"]).is_ok());
        // Only names written out are checked against the other lists, not globs.
        assert!(rules(None, &["customer_*"], &["customer_e*"]).is_ok());
        assert!(rules(Some(&["customer_*"]), &["customer_*_x"], &[]).is_ok());
        assert!(rules(None, &["*_id"], &[]).is_ok());
    }

    #[test]
    fn same_as_ignores_order_and_reports_unmatched_patterns() {
        let a = rules(None, &["x", "y"], &["z"]).unwrap();
        let b = rules(None, &["y", "x"], &["z"]).unwrap();
        assert!(a.same_as(&b));
        assert!(!a.same_as(&rules(None, &["x"], &["z"]).unwrap()));
        assert!(!rules(Some(&[]), &[], &[])
            .unwrap()
            .same_as(&rules(None, &[], &[]).unwrap()));
        assert_eq!(a.unmatched_patterns(&["x", "z"]), [("exclude", "y")]);
        assert_eq!(a.summary(), "exclude x,y; pseudonymise z");
        assert_eq!(rules(None, &[], &[]).unwrap().summary(), "-");
    }

    /// Mostly one of `words`, now and then a made-up word matching the regex
    /// `made_up` (one time in seven). The routing tests draw change-type words so.
    pub(crate) fn arb_word_of(
        words: &'static [&'static str],
        made_up: &'static str,
    ) -> impl Strategy<Value = String> {
        prop_oneof![
            6 => proptest::sample::select(words).prop_map(String::from),
            1 => made_up,
        ]
    }

    /// Parts of flat field names: the contract's words, and made-up ones (never
    /// an envelope name).
    fn arb_part() -> impl Strategy<Value = String> {
        let words = &[
            "customer",
            "booking",
            "email",
            "sms",
            "marketing",
            "group",
            "value",
            "new",
        ];
        arb_word_of(words, "x[a-z]{0,2}")
    }

    /// A flat field name: `customer_email`, `customer_group_sms_marketing`,
    /// sometimes with the `_<digits>` suffix of a renamed field.
    fn arb_field() -> impl Strategy<Value = String> {
        let suffix = prop_oneof![4 => Just(String::new()), 1 => "_[0-9]{1,2}"];
        (proptest::collection::vec(arb_part(), 1..4), suffix)
            .prop_map(|(parts, suffix)| format!("{}{suffix}", parts.join("_")))
    }

    /// A field-rules glob: parts and `*` (`customer_*`, `*_sms*`, `customer_email`).
    fn arb_glob() -> impl Strategy<Value = String> {
        let part = prop_oneof![
            2 => arb_part(),
            2 => Just("*".to_string()),
            1 => arb_part().prop_map(|p| format!("{}*", &p[..1])),
        ];
        proptest::collection::vec(part, 1..4).prop_map(|parts| parts.join("_"))
    }

    /// Whether `glob` (literal characters, `*` any run, and in the routing
    /// tests' change-type globs `?` one character) matches all of `text`: the
    /// oracles' matcher, not `globset`.
    pub(crate) fn glob_matches(glob: &[u8], text: &[u8]) -> bool {
        match glob.split_first() {
            None => text.is_empty(),
            Some((b'*', rest)) => (0..=text.len()).any(|at| glob_matches(rest, &text[at..])),
            Some((b'?', rest)) => !text.is_empty() && glob_matches(rest, &text[1..]),
            Some((c, rest)) => text.first() == Some(c) && glob_matches(rest, &text[1..]),
        }
    }

    /// Whether a glob of `list` matches `field` or, when it ends in `_<digits>`,
    /// the name before (as the module's documentation says).
    fn listed(list: &[String], field: &str) -> bool {
        let base = field.rsplit_once('_').and_then(|(base, digits)| {
            let numbered = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
            (numbered && !base.is_empty()).then_some(base)
        });
        let matches =
            |name: &str| (list.iter()).any(|g| glob_matches(g.as_bytes(), name.as_bytes()));
        matches(field) || base.is_some_and(matches)
    }

    /// Whether `FieldRules::new` must refuse the lists, by its documentation: a
    /// pattern of the envelope or listed twice, a name written out (no `*`) to
    /// be kept (included or pseudonymised) that `exclude` removes, or to be
    /// pseudonymised that `include` does not keep.
    fn refused(include: Option<&[String]>, exclude: &[String], pseudonymise: &[String]) -> bool {
        let written = |l: &[String]| -> Vec<String> {
            l.iter().filter(|p| !p.contains('*')).cloned().collect()
        };
        let badly_listed = [include.unwrap_or_default(), exclude, pseudonymise]
            .iter()
            .any(|l| {
                let twice = (1..l.len()).any(|n| l[..n].contains(&l[n]));
                twice || l.iter().any(|p| ENVELOPE.contains(&p.as_str()))
            });
        let kept = [written(include.unwrap_or_default()), written(pseudonymise)].concat();
        let kept_then_removed = kept.iter().any(|name| listed(exclude, name));
        let pseudonymised_not_kept =
            include.is_some_and(|i| written(pseudonymise).iter().any(|name| !listed(i, name)));
        badly_listed || kept_then_removed || pseudonymised_not_kept
    }

    /// What the lists do to `field`, by the module's documentation: kept when
    /// `include` (if any) lists it and `exclude` does not, then pseudonymised
    /// when `pseudonymise` lists it.
    fn expected_treatment(
        include: Option<&[String]>,
        exclude: &[String],
        pseudonymise: &[String],
        field: &str,
    ) -> Treatment {
        let kept = include.is_none_or(|i| listed(i, field)) && !listed(exclude, field);
        match (kept, listed(pseudonymise, field)) {
            (false, _) => Treatment::Remove,
            (true, true) => Treatment::Pseudonymise,
            (true, false) => Treatment::Keep,
        }
    }

    #[test]
    fn the_oracle_matcher_reads_globs_as_field_rules_do() {
        for (glob, field, matched) in [
            ("customer_*", "customer_email", true),
            ("*_sms*", "customer_group_sms_marketing", true),
            ("customer_email", "customer_email_2", true),
            ("customer_email", "customer_email_x", false),
            ("customer_e*", "customer_", false),
            ("c*_*", "customer_email_12", true),
            ("*", "x", true),
        ] {
            assert_eq!(listed(&strings(&[glob]), field), matched, "{glob} {field}");
            let rules = rules(None, &[], &[glob]).unwrap();
            let pseudonymised = rules.treatment(field) == Treatment::Pseudonymise;
            assert_eq!(pseudonymised, matched, "{glob} {field}");
        }
    }

    /// What a topic gets of `value` in a field `treatment` gives (`None`:
    /// nothing): a token is HMAC-SHA256 with `secret`, worked out here.
    fn expected_value(treatment: Treatment, secret: &str, value: &Value) -> Option<Value> {
        let token = || {
            let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
            mac.update(value.as_str().expect("a text value").as_bytes());
            let digest = hex::encode(mac.finalize().into_bytes());
            json!(format!("{TOKEN_PREFIX}{digest}"))
        };
        match treatment {
            Treatment::Keep => Some(value.clone()),
            Treatment::Remove => None,
            Treatment::Pseudonymise => Some(token()),
        }
    }

    /// How often each outcome was met across the cases.
    #[derive(Debug, Default)]
    struct Tally {
        cases: usize,
        refused: usize,
        fields: usize,
        kept: usize,
        removed: usize,
        pseudonymised: usize,
        /// Fields named with a `_<digits>` suffix.
        suffixed: usize,
    }

    impl Tally {
        fn add(&mut self, field: &str, treatment: Treatment) {
            self.fields += 1;
            let suffix = field.rsplit_once('_').map(|(_, digits)| digits);
            self.suffixed += usize::from(suffix.is_some_and(|d| d.parse::<u32>().is_ok()));
            match treatment {
                Treatment::Keep => self.kept += 1,
                Treatment::Remove => self.removed += 1,
                Treatment::Pseudonymise => self.pseudonymised += 1,
            }
        }
    }

    #[test]
    fn every_field_is_kept_removed_or_pseudonymised_as_the_lists_say() {
        let secret = "k".repeat(32);
        let lists = |most| proptest::collection::vec(arb_glob(), 0..most);
        let fields = proptest::collection::vec(arb_field(), 1..6);
        let strategy = (
            proptest::option::weighted(0.3, lists(3)),
            (lists(3), lists(4)),
            (fields, "[a-z@.]{0,12}"),
        );
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
            failure_persistence: None,
            ..ProptestConfig::with_cases(512)
        });
        let tally = std::cell::RefCell::new(Tally::default());
        let outcome = runner.run(
            &strategy,
            |(include, (exclude, pseudonymise), (fields, value))| {
                let (key, include) = (key(&secret), include.as_deref());
                let built = FieldRules::new(
                    include.map(<[String]>::to_vec),
                    exclude.clone(),
                    pseudonymise.clone(),
                    &ENVELOPE,
                    Some(&key),
                );
                let mut tally = tally.borrow_mut();
                tally.cases += 1;
                let should_refuse = refused(include, &exclude, &pseudonymise);
                let lists = (include, &exclude, &pseudonymise);
                prop_assert_eq!(
                    built.is_err(),
                    should_refuse,
                    "{:?} for {:?}",
                    built.as_ref().err(),
                    lists
                );
                let Ok(rules) = built else {
                    tally.refused += 1;
                    return Ok(());
                };
                let value = Value::String(value);
                for field in &fields {
                    let expected = expected_treatment(include, &exclude, &pseudonymise, field);
                    prop_assert_eq!(rules.treatment(field), expected, "{}", field);
                    let applied = rules.apply(field, &value).map(|v| v.into_owned());
                    prop_assert_eq!(
                        applied,
                        expected_value(expected, &secret, &value),
                        "{}",
                        field
                    );
                    tally.add(field, expected);
                }
                Ok(())
            },
        );
        if let Err(failure) = outcome {
            panic!("{failure}");
        }
        // Each outcome was met by a good share of the cases, not by luck.
        let tally = tally.into_inner();
        let (cases, fields) = (tally.cases, tally.fields);
        assert!(
            (cases / 20..=cases / 2).contains(&tally.refused),
            "{tally:?}"
        );
        for n in [
            tally.kept,
            tally.removed,
            tally.pseudonymised,
            tally.suffixed,
        ] {
            assert!(n * 10 >= fields, "{tally:?}");
        }
    }
}
