//! The questions other systems ask before acting: may we record this call, may an agent message this
//! WhatsApp number. Pure functions of the consent we hold and the time.

use super::{Consent, Timestamp};
use serde::Serialize;

/// WhatsApp's customer service window: freeform messages only this long after the customer's last one.
pub const WHATSAPP_WINDOW_MS: i64 = 24 * 3600 * 1000;

/// May this call be recorded?
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RecordingDecision {
    Record,
    DoNotRecord,
    /// We hold no answer: ask the caller.
    Ask,
}

pub fn recording(held: Option<&Consent>) -> RecordingDecision {
    match held.map(|c| c.consent) {
        Some(true) => RecordingDecision::Record,
        Some(false) => RecordingDecision::DoNotRecord,
        None => RecordingDecision::Ask,
    }
}

/// What an agent may send on WhatsApp.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct WhatsappAnswer {
    /// Inside the 24 hours after the customer's last message.
    pub freeform: bool,
    /// With a given (TRUE) WhatsApp consent, also outside the window.
    pub template: bool,
    /// When the freeform window closes (RFC 3339), if a last message time was given.
    pub window_closes_at: Option<Timestamp>,
    /// Why, in words.
    pub reason: String,
}

/// The window is half-open: a message exactly 24 hours after the customer's last one is outside it.
/// A last message in the future (clock skew) counts as just now.
pub fn whatsapp(held: Option<&Consent>, last_customer_message_at: Option<Timestamp>, now: Timestamp) -> WhatsappAnswer {
    let closes = last_customer_message_at.map(|t| Timestamp::from_millis(t.millis().min(now.millis()) + WHATSAPP_WINDOW_MS));
    let freeform = closes.is_some_and(|c| now < c);
    let template = held.is_some_and(|c| c.consent);
    let window = match (last_customer_message_at, freeform) {
        (None, _) => "no last customer message was given, so the 24-hour window is closed",
        (Some(_), true) => "the customer wrote within the last 24 hours",
        (Some(_), false) => "the customer's last message is 24 hours or more ago",
    };
    let consent = match held.map(|c| c.consent) {
        Some(true) => "a WhatsApp consent is given, so templates may be sent",
        Some(false) => "the WhatsApp consent is denied, so no template may be sent",
        None => "no WhatsApp consent is held, so no template may be sent",
    };
    WhatsappAnswer {
        freeform,
        template,
        window_closes_at: closes.filter(|_| last_customer_message_at.is_some()),
        reason: format!("{window}; {consent}."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{PhoneNumber, Source, Usage};

    fn ts(s: &str) -> Timestamp {
        Timestamp::parse_rfc3339(s).unwrap()
    }

    fn consent(v: bool) -> Consent {
        Consent {
            number: PhoneNumber::parse("+491512345678").unwrap(),
            usage: Usage::Whatsapp,
            consent: v,
            created_at: ts("2024-01-01T00:00:00Z"),
            updated_at: ts("2024-01-01T00:00:00Z"),
            source: Source::Cli,
        }
    }

    #[test]
    fn the_window_is_24_hours_half_open() {
        let last = ts("2025-03-01T10:00:00Z");
        let at = |s: &str| whatsapp(None, Some(last), ts(s)).freeform;
        assert!(at("2025-03-01T10:00:00Z"));
        assert!(at("2025-03-02T09:59:59.999Z"));
        assert!(!at("2025-03-02T10:00:00Z"));
        assert!(!at("2025-03-02T10:00:00.001Z"));
        // The same instant written in another zone.
        assert!(whatsapp(None, Some(ts("2025-03-01T11:00:00+01:00")), ts("2025-03-02T09:59:59Z")).freeform);
        assert!(!whatsapp(None, Some(ts("2025-03-01T05:00:00-05:00")), ts("2025-03-02T10:00:00Z")).freeform);
        assert!(!whatsapp(None, None, last).freeform);
    }

    #[test]
    fn templates_need_a_given_consent() {
        let now = ts("2025-03-01T10:00:00Z");
        assert!(whatsapp(Some(&consent(true)), None, now).template);
        assert!(!whatsapp(Some(&consent(false)), None, now).template);
        assert!(!whatsapp(None, None, now).template);
        assert_eq!(recording(None), RecordingDecision::Ask);
        assert_eq!(recording(Some(&consent(false))), RecordingDecision::DoNotRecord);
    }
}
