//! The fields of the customer the contract types: their names as the platform
//! sends them, their event keys and their types. The normalizer refuses a
//! notification whose typed field has another type, and the JSON Schema of the
//! flat event (`contract::schema`) is generated from this table, so the two
//! cannot disagree. Every other field passes through untyped (any scalar).

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

/// The known customer field whose event key is `key`.
pub fn customer_field(key: &str) -> Option<&'static KnownField> {
    CUSTOMER_FIELDS.iter().find(|field| field.key == key)
}
