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

    pub fn matches(&self, c: &super::Consent) -> bool {
        self.number.is_none_or(|n| n == c.number)
            && self.digits.as_ref().is_none_or(|d| d.matches(c.number))
            && self.consent.is_none_or(|v| v == c.consent)
            && self.usage.is_none_or(|u| u == c.usage)
            && self.created_from.is_none_or(|t| c.created_at >= t)
            && self.created_before.is_none_or(|t| c.created_at < t)
    }
}

/// Criteria as people and programs type them (query parameters, CLI flags, saved searches): strings
/// that [`CriteriaText::parse`] turns into [`Criteria`], naming the field that is wrong.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CriteriaText {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digits: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<String>,
    /// At or after: RFC 3339, or a date (its start, UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_from: Option<String>,
    /// At or before: RFC 3339, or a date for that whole day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_to: Option<String>,
}

/// A criterion that could not be read: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct BadCriterion {
    pub field: &'static str,
    pub reason: String,
}

impl CriteriaText {
    /// Parses every field that is set (empty strings count as unset).
    pub fn parse(&self, phones: &super::PhoneParser) -> Result<Criteria, BadCriterion> {
        let bad = |field: &'static str| {
            move |e: &dyn std::fmt::Display| BadCriterion {
                field,
                reason: e.to_string(),
            }
        };
        let set = |v: &Option<String>| v.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_string);
        Ok(Criteria {
            number: set(&self.number)
                .map(|n| phones.parse(&n).map_err(|e| bad("number")(&e)))
                .transpose()?,
            digits: set(&self.digits)
                .map(|d| Digits::parse(&d).map_err(|e| bad("digits")(&e)))
                .transpose()?,
            consent: set(&self.consent)
                .map(|v| match v.to_ascii_lowercase().as_str() {
                    "true" | "given" => Ok(true),
                    "false" | "denied" => Ok(false),
                    _ => Err(bad("consent")(&format!("{v:?} is not true or false"))),
                })
                .transpose()?,
            usage: set(&self.usage)
                .map(|u| Usage::parse(&u).map_err(|e| bad("usage")(&e)))
                .transpose()?,
            created_from: set(&self.created_from)
                .map(|t| Timestamp::parse_bound(&t).map(|(t, _)| t).map_err(|e| bad("created_from")(&e)))
                .transpose()?,
            created_before: set(&self.created_to)
                .map(|t| Timestamp::parse_upper_bound(&t).map_err(|e| bad("created_to")(&e)))
                .transpose()?,
        })
    }

    /// The same criteria with the number and digits in their normal form, for keeping.
    pub fn normalised(&self, c: &Criteria) -> Self {
        Self {
            number: c.number.map(|n| n.to_string()),
            digits: c.digits.as_ref().map(|d| d.as_str().to_string()),
            consent: c.consent.map(|v| v.to_string()),
            usage: c.usage.map(|u| u.as_str().to_string()),
            ..self.clone()
        }
    }
}
