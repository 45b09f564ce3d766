//! The consent domain: phone numbers, usages, consents, sources, timestamps and search criteria.
//! Raw strings are parsed into these types once, at the edge; nothing in here does I/O.

/// A type the API writes as a string (its `Display`), described so in the OpenAPI document: a
/// description, and builder settings such as `pattern` or `format`.
macro_rules! string_schema {
    ($ty:ty, $description:expr $(, $setting:ident($value:expr))*) => {
        impl utoipa::PartialSchema for $ty {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .description(Some($description))
                    $(.$setting(Some($value)))*
                    .into()
            }
        }

        impl utoipa::ToSchema for $ty {}
    };
}

pub mod checks;
pub mod consent;
pub mod phone;
mod phone_rules;
pub mod search;
pub mod time;
pub mod usage;

pub use consent::{BadConsentId, Consent, ConsentId, Decision, Held, Incoming, Op, Prefer, Source};
pub use phone::{mask_numbers, Digits, PhoneError, PhoneNumber, PhoneParser, Region};
pub use search::{BadCriterion, Criteria, CriteriaError, CriteriaText};
pub use time::Timestamp;
pub use usage::Usage;
