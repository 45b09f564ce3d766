//! The consent domain: phone numbers, usages, consents, sources, timestamps and search criteria.
//! Raw strings are parsed into these types once, at the edge; nothing in here does I/O.

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
