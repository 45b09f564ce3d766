//! Connector schedules: a cron expression read in a time zone (UTC unless one is named), parsed with
//! croner, the parser tokio-cron-scheduler uses, so what we check and show is what runs. Pure
//! functions of a time the caller passes in: tests move the clock, nobody sleeps.

use crate::domain::Timestamp;
use chrono::{TimeZone, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds};
use croner::Cron;

/// A parsed schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub expression: String,
    cron: Cron,
    zone: Tz,
}

impl Schedule {
    /// `expression`: `sec min hour day month weekday`, or five fields without seconds.
    pub fn parse(expression: &str, zone: Option<&str>) -> Result<Self, String> {
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .build()
            .parse(expression)
            .map_err(|e| format!("{expression:?} is not a cron expression: {e}"))?;
        let zone = match zone {
            None => Tz::UTC,
            Some(z) => z
                .parse::<Tz>()
                .map_err(|_| format!("{z:?} is not an IANA time zone such as Europe/Berlin"))?,
        };
        Ok(Self {
            expression: expression.to_string(),
            cron,
            zone,
        })
    }

    pub fn zone(&self) -> Tz {
        self.zone
    }

    /// The first run strictly after `t`.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        // On a whole second (croner keeps the milliseconds of `t`): every daemon sharing a store then
        // names a tick alike, and the tick's lease is taken once.
        let t = Timestamp::from_millis(t.millis() - t.millis().rem_euclid(1000));
        let local = self.zone.from_utc_datetime(&t.to_datetime().naive_utc());
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|d| Timestamp::from_datetime(&d.with_timezone(&Utc)))
    }

    /// Whether a run was due between the last run's start and `now` and did not happen: the daemon
    /// was down at that time.
    pub fn missed(&self, last_run: Option<Timestamp>, now: Timestamp) -> bool {
        match last_run {
            None => false,
            Some(last) => self.next_after(last).is_some_and(|due| due <= now),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        Timestamp::parse_rfc3339(s).unwrap()
    }

    #[test]
    fn next_runs_in_utc_and_with_seconds_or_without() {
        let s = Schedule::parse("0 */15 * * * *", None).unwrap();
        assert_eq!(s.next_after(ts("2025-01-01T10:07:00Z")), Some(ts("2025-01-01T10:15:00Z")));
        assert_eq!(s.next_after(ts("2025-01-01T10:15:00Z")), Some(ts("2025-01-01T10:30:00Z")));
        // On whole seconds, whatever the milliseconds of the time asked from.
        assert_eq!(s.next_after(ts("2025-01-01T10:14:59.999Z")), Some(ts("2025-01-01T10:15:00Z")));
        assert_eq!(s.next_after(ts("2025-01-01T10:15:00.206Z")), Some(ts("2025-01-01T10:30:00Z")));
        let five = Schedule::parse("30 2 * * *", None).unwrap();
        assert_eq!(five.next_after(ts("2025-01-01T10:00:00Z")), Some(ts("2025-01-02T02:30:00Z")));
    }

    #[test]
    fn a_named_zone_is_right_across_daylight_saving_changes() {
        // 03:30 Berlin time every day: CET (+1) before 30 March 2025, CEST (+2) after.
        let s = Schedule::parse("0 30 3 * * *", Some("Europe/Berlin")).unwrap();
        assert_eq!(s.next_after(ts("2025-03-29T12:00:00Z")), Some(ts("2025-03-30T01:30:00Z")));
        assert_eq!(s.next_after(ts("2025-03-30T12:00:00Z")), Some(ts("2025-03-31T01:30:00Z")));
        assert_eq!(s.next_after(ts("2025-10-25T12:00:00Z")), Some(ts("2025-10-26T02:30:00Z")));
        // 02:30 does not exist on the spring-forward day: the run is not lost twice, nor run twice.
        let gap = Schedule::parse("0 30 2 * * *", Some("Europe/Berlin")).unwrap();
        let first = gap.next_after(ts("2025-03-29T12:00:00Z")).unwrap();
        let second = gap.next_after(first).unwrap();
        assert!(
            first < second && second.millis() - first.millis() >= 22 * 3600 * 1000,
            "{first} {second}"
        );
    }

    #[test]
    fn missed_runs_are_noticed() {
        let s = Schedule::parse("0 0 * * * *", None).unwrap();
        assert!(!s.missed(None, ts("2025-01-01T10:30:00Z")));
        assert!(!s.missed(Some(ts("2025-01-01T10:00:00Z")), ts("2025-01-01T10:59:59Z")));
        assert!(s.missed(Some(ts("2025-01-01T10:00:00Z")), ts("2025-01-01T11:00:00Z")));
    }

    #[test]
    fn bad_schedules_and_zones_are_refused() {
        assert!(Schedule::parse("every minute", None).is_err());
        assert!(Schedule::parse("0 0 25 * * *", None).is_err());
        assert!(Schedule::parse("0 0 * * * *", Some("Mars/Olympus")).is_err());
    }
}
