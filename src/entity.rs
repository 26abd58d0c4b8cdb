//! The webhook families the connector takes ([`ENTITIES`]: one row per endpoint
//! `POST /webhooks/<name>`, all with the same envelope) and the fields of each the
//! contract names: their names as the platform sends them, their event keys and
//! their types. The normalizer refuses a notification whose typed field has
//! another type, and the JSON Schema of each entity's event (`contract::schema`)
//! is generated from this table, so the two cannot disagree. Every other field
//! passes through untyped (any scalar). A new family with the same envelope is a
//! new row here.

use std::collections::HashMap;
use std::sync::OnceLock;

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
    /// Customer events were published before other families existed: their event
    /// ids do not hash the entity's name, and they have no `entity` field (schema
    /// version 1 refuses fields outside its open set, so adding one would break
    /// consumers validating with it). Both stay as they were; the `entity` header
    /// tells them apart. Every later family has both.
    pub predates_entities: bool,
    /// The published schema's name: `schema/<schema_name>.v1.json`.
    pub schema_name: &'static str,
    /// Whether nested objects of the entity's state become one field per path
    /// (`Customer.FirstName` -> `booking_customer_first_name`); when not, an object
    /// is kept as its JSON text like an array.
    pub flatten_objects: bool,
    /// The fields the contract names.
    pub known: &'static [KnownField],
}

impl Entity {
    /// The known field whose event key is `key`: one hash lookup (it is asked for
    /// every field of every notification).
    pub fn known_field(&self, key: &str) -> Option<&'static KnownField> {
        static BY_KEY: OnceLock<HashMap<&str, &KnownField>> = OnceLock::new();
        let by_key = BY_KEY.get_or_init(|| {
            let known = ENTITIES.iter().flat_map(|entity| entity.known);
            known.map(|field| (field.key, field)).collect()
        });
        // Keys are unique across entities: each starts with its entity's prefix.
        let field = by_key.get(key).copied()?;
        field.key.starts_with(self.prefix).then_some(field)
    }
}

/// Every family, in the order endpoints and documents list them.
pub static ENTITIES: [&Entity; 2] = [&CUSTOMER, &BOOKING];

/// The family named `name` (`customer`).
pub fn by_name(name: &str) -> Option<&'static Entity> {
    ENTITIES.iter().copied().find(|entity| entity.name == name)
}

/// The names of every family, for messages: "customer, booking".
pub fn names() -> String {
    ENTITIES.map(|entity| entity.name).join(", ")
}

/// The body keys of every family, for messages: "Customer, Booking".
pub fn body_keys() -> String {
    ENTITIES.map(|entity| entity.body_key).join(", ")
}

/// Every webhook endpoint, for messages: "POST /webhooks/customer, POST /webhooks/booking".
pub fn endpoints() -> String {
    ENTITIES
        .map(|entity| format!("POST /webhooks/{}", entity.name))
        .join(", ")
}

/// Customer change notifications, `POST /webhooks/customer`. Objects stay text:
/// customer events carried them so before bookings existed.
pub static CUSTOMER: Entity = Entity {
    name: "customer",
    body_key: "Customer",
    prefix: "customer_",
    id_key: "customer_id",
    predates_entities: true,
    schema_name: "flat-event",
    flatten_objects: false,
    known: &CUSTOMER_FIELDS,
};

/// Booking change notifications, `POST /webhooks/booking`.
pub static BOOKING: Entity = Entity {
    name: "booking",
    body_key: "Booking",
    prefix: "booking_",
    id_key: "booking_id",
    predates_entities: false,
    schema_name: "booking-event",
    flatten_objects: true,
    known: &BOOKING_FIELDS,
};

/// The type of a known field's value in the event; `null` is always allowed (the
/// platform sends `null` for what is not set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    /// Named by the platform's description but not typed by it: any scalar (an
    /// array arrives as its JSON text). Typing it later would break consumers'
    /// compatibility, so it stays so within a schema version.
    Scalar,
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
            FieldType::Scalar => "a string, number, boolean or null",
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

use FieldType::{Boolean, DateTime, Integer, Scalar, Text};

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

/// The booking's fields besides `Id`, as the platform's payload description names
/// them (without types: none is typed). Nested objects are listed by path; arrays
/// arrive as their JSON text.
pub const BOOKING_FIELDS: [KnownField; 48] = [
    field("ProviderId", "booking_provider_id", Scalar),
    field("Reference", "booking_reference", Scalar),
    field("RestaurantName", "booking_restaurant_name", Scalar),
    field("MicrositeName", "booking_microsite_name", Scalar),
    field("VisitDate", "booking_visit_date", Scalar),
    field("VisitTime", "booking_visit_time", Scalar),
    field("PartySize", "booking_party_size", Scalar),
    field("ChannelCode", "booking_channel_code", Scalar),
    field("SpecialRequests", "booking_special_requests", Scalar),
    field("IpAddress", "booking_ip_address", Scalar),
    field(
        "IsLeaveTimeConfirmed",
        "booking_is_leave_time_confirmed",
        Scalar,
    ),
    field("BookingDateTime", "booking_booking_date_time", Scalar),
    field("BookingStatus", "booking_booking_status", Scalar),
    field("ArrivalStatus", "booking_arrival_status", Scalar),
    field("MealStatus", "booking_meal_status", Scalar),
    field("BookingDuration", "booking_booking_duration", Scalar),
    field("RoomNumber", "booking_room_number", Scalar),
    field("CustomerSpend", "booking_customer_spend", Scalar),
    field("FunctionSheetUrl", "booking_function_sheet_url", Scalar),
    field("PreOrderUrl", "booking_pre_order_url", Scalar),
    field("TableIds", "booking_table_ids", Scalar),
    field("TableNumbers", "booking_table_numbers", Scalar),
    field("PhantomTableIds", "booking_phantom_table_ids", Scalar),
    field(
        "PhantomTableNumbers",
        "booking_phantom_table_numbers",
        Scalar,
    ),
    field("AreaIdList", "booking_area_id_list", Scalar),
    field("BookingReasonIds", "booking_booking_reason_ids", Scalar),
    field("BookingCodes", "booking_booking_codes", Scalar),
    field("Promotions", "booking_promotions", Scalar),
    field("BookingExtras", "booking_booking_extras", Scalar),
    field("Payments", "booking_payments", Scalar),
    field(
        "CancellationReason.Id",
        "booking_cancellation_reason_id",
        Scalar,
    ),
    field(
        "CancellationReason.Name",
        "booking_cancellation_reason_name",
        Scalar,
    ),
    field("Customer.Id", "booking_customer_id", Scalar),
    field("Customer.Title", "booking_customer_title", Scalar),
    field("Customer.FirstName", "booking_customer_first_name", Scalar),
    field("Customer.Surname", "booking_customer_surname", Scalar),
    field("Customer.Mobile", "booking_customer_mobile", Scalar),
    field("Customer.Email", "booking_customer_email", Scalar),
    field("Customer.Company", "booking_customer_company", Scalar),
    field("Customer.Birthday", "booking_customer_birthday", Scalar),
    field(
        "Customer.Anniversary",
        "booking_customer_anniversary",
        Scalar,
    ),
    field(
        "Customer.CustomerCodes",
        "booking_customer_customer_codes",
        Scalar,
    ),
    field("Customer.IsVip", "booking_customer_is_vip", Scalar),
    field("Customer.OperaId", "booking_customer_opera_id", Scalar),
    field(
        "Customer.CustomerIpAddress",
        "booking_customer_customer_ip_address",
        Scalar,
    ),
    field(
        "Customer.GroupEmailOptInDateTime",
        "booking_customer_group_email_opt_in_date_time",
        Scalar,
    ),
    field(
        "Customer.ReceiveGroupEmailMarketing",
        "booking_customer_receive_group_email_marketing",
        Scalar,
    ),
    field(
        "Customer.ReceiveGroupSmsMarketing",
        "booking_customer_receive_group_sms_marketing",
        Scalar,
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_found_by_name_and_have_distinct_names_keys_and_prefixes() {
        assert_eq!(by_name("booking"), Some(&BOOKING));
        assert_eq!(by_name("customer"), Some(&CUSTOMER));
        assert_eq!(by_name("Booking"), None);
        assert_eq!(names(), "customer, booking");
        assert_eq!(body_keys(), "Customer, Booking");
        assert_eq!(
            endpoints(),
            "POST /webhooks/customer, POST /webhooks/booking"
        );
        for (i, a) in ENTITIES.iter().enumerate() {
            for b in &ENTITIES[i + 1..] {
                assert_ne!(a.name, b.name);
                assert_ne!(a.body_key, b.body_key);
                assert!(!a.prefix.starts_with(b.prefix) && !b.prefix.starts_with(a.prefix));
            }
            assert!(a.id_key.starts_with(a.prefix));
        }
    }

    #[test]
    fn known_fields_are_found_by_key_only_in_their_own_entity() {
        for entity in ENTITIES {
            for field in entity.known {
                assert_eq!(entity.known_field(field.key), Some(field));
            }
            assert_eq!(entity.known_field(entity.id_key), None);
        }
        assert_eq!(BOOKING.known_field("customer_email"), None);
        assert_eq!(CUSTOMER.known_field("booking_customer_email"), None);
        assert_eq!(CUSTOMER.known_field("customer_email_2"), None);
    }

    #[test]
    fn every_known_key_is_its_prefixed_name_and_unique() {
        for entity in ENTITIES {
            for (i, field) in entity.known.iter().enumerate() {
                assert!(field.key.starts_with(entity.prefix), "{}", field.key);
                assert_ne!(field.key, entity.id_key);
                assert!(entity.known[i + 1..].iter().all(|f| f.key != field.key));
            }
        }
    }
}
