//! The webhook families the connector takes ([`Entity`]: one row per endpoint
//! `POST /webhooks/<name>`, all with the same envelope) and the fields of each the
//! contract types: their names as the platform sends them, their event keys and
//! their types. The normalizer refuses a notification whose typed field has
//! another type, and the JSON Schema of the flat event (`contract::schema`) is
//! generated from this table, so the two cannot disagree. Every other field
//! passes through untyped (any scalar).

/// A family of webhooks sharing the envelope: `ChangeDateTime`, the entity's
/// latest state under [`body_key`](Self::body_key), and `Changes`.
#[derive(Debug, PartialEq, Eq)]
pub struct Entity {
    /// `customer`: the endpoint's last path segment.
    pub name: &'static str,
    /// The body's key holding the entity's latest state (`Customer`).
    pub body_key: &'static str,
    /// The prefix of the entity's fields in the event (`customer_`).
    pub prefix: &'static str,
    /// The event key of the entity's id (`customer_id`).
    pub id_key: &'static str,
    /// The fields the contract types.
    pub known: &'static [KnownField],
}

impl Entity {
    /// The known field whose event key is `key`.
    pub fn known_field(&self, key: &str) -> Option<&'static KnownField> {
        self.known.iter().find(|field| field.key == key)
    }
}

/// Customer change notifications, `POST /webhooks/customer`.
pub static CUSTOMER: Entity = Entity {
    name: "customer",
    body_key: "Customer",
    prefix: "customer_",
    id_key: "customer_id",
    known: &CUSTOMER_FIELDS,
};

/// The type of a known field's value in the event; `null` is always allowed (the
/// platform sends `null` for what is not set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    Text,
    /// A 64-bit signed integer.
    Integer,
    Boolean,
    /// A date-time the normalizer writes as RFC 3339 UTC with `Z`.
    DateTime,
}

impl FieldType {
    /// What the field must hold, for error messages: "text or null".
    pub fn expected(self) -> &'static str {
        match self {
            FieldType::Text => "text or null",
            FieldType::Integer => "a 64-bit integer or null",
            FieldType::Boolean => "true, false or null",
            FieldType::DateTime => "a date-time (e.g. 2018-11-12T10:15:00Z) or null",
        }
    }
}

/// A field of the entity the contract names and types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownField {
    /// The name in the webhook body (`FirstName`).
    pub name: &'static str,
    /// The key in the flat event (`customer_first_name`).
    pub key: &'static str,
    pub field_type: FieldType,
}

const fn field(name: &'static str, key: &'static str, field_type: FieldType) -> KnownField {
    KnownField {
        name,
        key,
        field_type,
    }
}

use FieldType::{Boolean, DateTime, Integer, Text};

/// The customer's fields besides `Id`, as the platform's payload description lists them.
pub const CUSTOMER_FIELDS: [KnownField; 19] = [
    field("Title", "customer_title", Text),
    field("FirstName", "customer_first_name", Text),
    field("Surname", "customer_surname", Text),
    field("RelatedProviderId", "customer_related_provider_id", Integer),
    field("MobileNumber", "customer_mobile_number", Text),
    field("Company", "customer_company", Text),
    field("Email", "customer_email", Text),
    field(
        "ReceiveGroupEmailMarketing",
        "customer_receive_group_email_marketing",
        Boolean,
    ),
    field(
        "GroupEmailMarketingOptInDateTime",
        "customer_group_email_marketing_opt_in_date_time",
        DateTime,
    ),
    field(
        "GroupEmailMarketingOptInText",
        "customer_group_email_marketing_opt_in_text",
        Text,
    ),
    field(
        "ReceiveGroupSmsMarketing",
        "customer_receive_group_sms_marketing",
        Boolean,
    ),
    field(
        "GroupSmsMarketingOptInDateTime",
        "customer_group_sms_marketing_opt_in_date_time",
        DateTime,
    ),
    field(
        "GroupSmsMarketingOptInText",
        "customer_group_sms_marketing_opt_in_text",
        Text,
    ),
    field(
        "ReceiveRestaurantEmailMarketing",
        "customer_receive_restaurant_email_marketing",
        Boolean,
    ),
    field(
        "RestaurantEmailMarketingOptInDateTime",
        "customer_restaurant_email_marketing_opt_in_date_time",
        DateTime,
    ),
    field(
        "RestaurantEmailMarketingOptInText",
        "customer_restaurant_email_marketing_opt_in_text",
        Text,
    ),
    field(
        "ReceiveRestaurantSmsMarketing",
        "customer_receive_restaurant_sms_marketing",
        Boolean,
    ),
    field(
        "RestaurantSmsMarketingOptInDateTime",
        "customer_restaurant_sms_marketing_opt_in_date_time",
        DateTime,
    ),
    field(
        "RestaurantSmsMarketingOptInText",
        "customer_restaurant_sms_marketing_opt_in_text",
        Text,
    ),
];
