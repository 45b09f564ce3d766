//! Timestamps: UTC milliseconds inside, RFC 3339 on output.

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use std::fmt;

/// A point in time, UTC, millisecond precision.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a date (YYYY-MM-DD) or an RFC 3339 time (2024-05-01T12:00:00Z)")]
pub struct BadTime(pub String);

impl Timestamp {
    pub fn now() -> Self {
        Self(Utc::now().timestamp_millis())
    }

    pub fn from_millis(ms: i64) -> Self {
        Self(ms)
    }

    pub fn millis(self) -> i64 {
        self.0
    }

    pub fn from_datetime<Tz: TimeZone>(dt: &DateTime<Tz>) -> Self {
        Self(dt.timestamp_millis())
    }

    pub fn to_datetime(self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.0).unwrap_or_default()
    }

    /// Parses RFC 3339 (any offset, optional fractions), and the variants large systems write where
    /// the format is still unambiguous: an offset without a colon (`+0000`) or without minutes (`+00`),
    /// and a space instead of the `T`.
    pub fn parse_rfc3339(s: &str) -> Result<Self, BadTime> {
        let t = s.trim();
        if let Ok(d) = DateTime::parse_from_rfc3339(t) {
            return Ok(Self::from_datetime(&d));
        }
        ["%Y-%m-%dT%H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%.f%#z"]
            .iter()
            .find_map(|p| DateTime::parse_from_str(t, p).ok())
            .map(|d| Self::from_datetime(&d))
            .ok_or_else(|| BadTime(s.to_string()))
    }

    /// A bound typed by a person: RFC 3339, or a date meaning its start (UTC). Returns the time and
    /// whether only a date was given, so an upper bound can include that whole day.
    pub fn parse_bound(s: &str) -> Result<(Self, bool), BadTime> {
        if let Ok(t) = Self::parse_rfc3339(s) {
            return Ok((t, false));
        }
        let d = NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").map_err(|_| BadTime(s.to_string()))?;
        Ok((
            Self(d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc().timestamp_millis()),
            true,
        ))
    }

    /// An upper bound typed by a person, as the exclusive end it means: a date includes that whole day,
    /// a time includes that instant.
    pub fn parse_upper_bound(s: &str) -> Result<Self, BadTime> {
        let (t, date_only) = Self::parse_bound(s)?;
        Ok(Self(t.0 + if date_only { 86_400_000 } else { 1 }))
    }

    /// RFC 3339 in UTC with `Z`, milliseconds only when there are some. Export writes one or two per
    /// record, so years 0-9999 are written digit by digit rather than through `fmt`.
    pub fn write_rfc3339(self, out: &mut String) {
        let (y, mo, d) = civil_from_days(self.0.div_euclid(86_400_000));
        let Ok(y @ 0..=9999) = u32::try_from(y) else {
            return self.write_rfc3339_fmt(out);
        };
        let ms_of_day = self.0.rem_euclid(86_400_000) as u32;
        let (s, ms) = (ms_of_day / 1000, ms_of_day % 1000);
        let mut b = *b"0000-00-00T00:00:00.000Z";
        let mut two = |at: usize, n: u32| {
            b[at] = b'0' + (n / 10) as u8;
            b[at + 1] = b'0' + (n % 10) as u8;
        };
        two(0, y / 100);
        two(2, y % 100);
        two(5, mo);
        two(8, d);
        two(11, s / 3600);
        two(14, s / 60 % 60);
        two(17, s % 60);
        two(21, ms % 100);
        let len = if ms == 0 {
            b[19] = b'Z';
            20
        } else {
            b[20] = b'0' + (ms / 100) as u8;
            24
        };
        out.push_str(std::str::from_utf8(&b[..len]).expect("ASCII digits"));
    }

    /// [`Self::write_rfc3339`] through chrono and `fmt`, for any year.
    fn write_rfc3339_fmt(self, out: &mut String) {
        use chrono::{Datelike, Timelike};
        use std::fmt::Write;
        let dt = self.to_datetime();
        let (y, mo, d, h, mi, s) = (dt.year(), dt.month(), dt.day(), dt.hour(), dt.minute(), dt.second());
        let _ = write!(out, "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}");
        let ms = self.0.rem_euclid(1000);
        if ms != 0 {
            let _ = write!(out, ".{ms:03}");
        }
        out.push('Z');
    }

    pub fn to_rfc3339(self) -> String {
        let mut s = String::with_capacity(24);
        self.write_rfc3339(&mut s);
        s
    }
}

/// The proleptic Gregorian (year, month, day) of a day counted from 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, <https://howardhinnant.github.io/date_algorithms.html>).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097) as u32;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (i64::from(yoe) + era * 400 + i64::from(m <= 2), m, d)
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({self})")
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

string_schema!(
    Timestamp,
    "RFC 3339, UTC",
    format(utoipa::openapi::SchemaFormat::KnownFormat(utoipa::openapi::KnownFormat::DateTime))
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips_in_utc() {
        let t = Timestamp::parse_rfc3339("2024-05-01T14:00:00+02:00").unwrap();
        assert_eq!(t.to_rfc3339(), "2024-05-01T12:00:00Z");
        let t = Timestamp::parse_rfc3339("2024-05-01T12:00:00.250Z").unwrap();
        assert_eq!(t.to_rfc3339(), "2024-05-01T12:00:00.250Z");
        assert_eq!(
            Timestamp::parse_bound("2024-05-01").unwrap(),
            (Timestamp::parse_rfc3339("2024-05-01T00:00:00Z").unwrap(), true)
        );
        assert!(Timestamp::parse_bound("2024-02-30").is_err());
    }

    #[test]
    fn offsets_without_colons_as_crms_write_them() {
        let t = Timestamp::parse_rfc3339("2024-01-15T10:30:00Z").unwrap();
        for s in [
            "2024-01-15T10:30:00.000+0000",
            "2024-01-15T11:30:00+0100",
            "2024-01-15T11:30:00+01",
            "2024-01-15 10:30:00+00:00",
            "2024-01-15T05:30:00.000-0500",
        ] {
            assert_eq!(Timestamp::parse_rfc3339(s), Ok(t), "{s}");
        }
        assert_eq!(
            Timestamp::parse_rfc3339("2024-01-15T10:30:00.123+0000").unwrap().millis() % 1000,
            123
        );
        // Without an offset the instant is not known.
        for s in ["2024-01-15T10:30:00", "2024-01-15", "10:30 2024-01-15Z", "2024-01-15T10:30:00+1"] {
            assert!(Timestamp::parse_rfc3339(s).is_err(), "{s}");
        }
    }

    proptest::proptest! {
        /// From year -250 to 10200: by hand in years 0-9999, through chrono outside them.
        #[test]
        fn rfc3339_by_hand_is_what_chrono_writes(ms in -70_000_000_000_000i64..260_000_000_000_000, whole: bool) {
            let t = Timestamp::from_millis(if whole { ms - ms.rem_euclid(1000) } else { ms });
            let (mut by_hand, mut chrono) = (String::new(), String::new());
            t.write_rfc3339(&mut by_hand);
            t.write_rfc3339_fmt(&mut chrono);
            proptest::prop_assert_eq!(by_hand, chrono);
        }
    }
}
