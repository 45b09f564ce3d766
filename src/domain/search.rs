//! Search criteria, as the consent view offers them: number, trailing digits, value, usage, creation range.

use super::{Digits, PhoneNumber, Timestamp, Usage};

/// Any combination of criteria; at least one is required (checked by [`Criteria::require_one`]).
/// The creation range is half-open: `created_from <= t < created_before`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Criteria {
    pub number: Option<PhoneNumber>,
    pub digits: Option<Digits>,
    pub consent: Option<bool>,
    pub usage: Option<Usage>,
    pub created_from: Option<Timestamp>,
    pub created_before: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CriteriaError {
    #[error("give at least one search criterion: number, digits, consent, usage or a creation time")]
    Empty,
}

impl Criteria {
    pub fn is_empty(&self) -> bool {
        self == &Criteria::default()
    }

    pub fn require_one(self) -> Result<Self, CriteriaError> {
        if self.is_empty() {
            Err(CriteriaError::Empty)
        } else {
            Ok(self)
        }
    }

    /// Sets the upper bound from a typed value: a date includes that whole day, a time includes that instant.
    pub fn set_created_to(&mut self, t: Timestamp, date_only: bool) {
        let end = if date_only { t.millis() + 86_400_000 } else { t.millis() + 1 };
        self.created_before = Some(Timestamp::from_millis(end));
    }

    pub fn matches(&self, c: &super::Consent) -> bool {
        self.number.is_none_or(|n| n == c.number)
            && self.digits.as_ref().is_none_or(|d| d.matches(c.number))
            && self.consent.is_none_or(|v| v == c.consent)
            && self.usage.is_none_or(|u| u == c.usage)
            && self.created_from.is_none_or(|t| c.created_at >= t)
            && self.created_before.is_none_or(|t| c.created_at < t)
    }
}
