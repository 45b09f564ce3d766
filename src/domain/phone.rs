//! Phone numbers, normalised to E.164 (`+` and at most 15 digits) once, at the edge.
//! A number is stored as the integer of its digits: E.164 numbers never start with 0.

use std::fmt;

/// Fewest digits (country code included) we accept as a complete number.
pub const MIN_DIGITS: usize = 7;
/// E.164 allows at most 15 digits, country code included.
pub const MAX_DIGITS: usize = 15;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("the number is empty")]
    Empty,
    #[error("the number contains {0:?}, which is not a digit or a separator")]
    InvalidCharacter(char),
    #[error("the number has {0} digits, fewer than the {MIN_DIGITS} of a complete E.164 number")]
    TooShort(usize),
    #[error("the number has {0} digits, more than the {MAX_DIGITS} E.164 allows")]
    TooLong(usize),
    #[error("a national number (leading 0) needs a default country code, and none is configured")]
    NoDefaultCountry,
    #[error("a country code cannot start with 0")]
    BadCountryCode,
    #[error("trailing digits need at least 3 digits, got {0}")]
    TooFewDigits(usize),
}

/// A phone number in E.164 form, e.g. `+491512345678`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PhoneNumber(u64);

impl PhoneNumber {
    /// Parses an international number (`+49 151 …`, `0049 151 …`, `491512345678`).
    /// National numbers (one leading 0) are refused; use [`PhoneParser`] to allow them.
    pub fn parse(input: &str) -> Result<Self, PhoneError> {
        PhoneParser::default().parse(input)
    }

    /// The number from its digits as an integer, as the store keeps it.
    pub fn from_u64(digits: u64) -> Option<Self> {
        let n = digits.checked_ilog10().map(|l| l as usize + 1)?;
        (MIN_DIGITS..=MAX_DIGITS).contains(&n).then_some(Self(digits))
    }

    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// The digits without the `+`.
    pub fn digits(self) -> String {
        self.0.to_string()
    }

    /// Appends the number as `Display` writes it (`+491512345678`), without going through `fmt`:
    /// an export writes one per record.
    pub fn push_to(self, out: &mut String) {
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        let mut n = self.0;
        loop {
            at -= 1;
            digits[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        out.push('+');
        out.push_str(std::str::from_utf8(&digits[at..]).expect("ASCII digits"));
    }

    /// The digits last to first, as ASCII: the key under which trailing digits are found.
    pub fn reversed_digits(self, out: &mut Vec<u8>) {
        let mut n = self.0;
        while n > 0 {
            out.push(b'0' + (n % 10) as u8);
            n /= 10;
        }
    }

    /// Builds the number back from [`Self::reversed_digits`].
    pub fn from_reversed_digits(rev: &[u8]) -> Option<Self> {
        let mut n: u64 = 0;
        for &b in rev.iter().rev() {
            if !b.is_ascii_digit() {
                return None;
            }
            n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
        }
        Self::from_u64(n)
    }
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "+{}", self.0)
    }
}

/// Debug hides all but the last two digits: a number is personal data and Debug output ends up in logs.
impl fmt::Debug for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PhoneNumber(+…{:02})", self.0 % 100)
    }
}

impl serde::Serialize for PhoneNumber {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Normalises numbers, with the default country code used for national numbers.
#[derive(Debug, Clone, Copy, Default)]
pub struct PhoneParser {
    default_country: Option<u16>,
}

impl PhoneParser {
    pub fn new(default_country: Option<u16>) -> Self {
        Self { default_country }
    }

    /// `+49 151 2345-678`, `0049 151 2345678`, `+49 (0)151 2345678` and, with default country 49,
    /// `0151 2345678` all give `+491512345678`. Digits with no prefix are read as international.
    pub fn parse(&self, input: &str) -> Result<PhoneNumber, PhoneError> {
        let s = input.trim();
        if s.is_empty() {
            return Err(PhoneError::Empty);
        }
        let mut digits = String::with_capacity(16);
        let mut plus = false;
        let mut chars = s.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '0'..='9' => digits.push(c),
                '+' if i == 0 => plus = true,
                ' ' | '-' | '.' | '/' | '\u{a0}' | '\t' => {}
                '(' => {
                    // A trunk prefix "(0)" after the country code is dropped; other brackets are separators.
                    if s[i..].starts_with("(0)") && (plus || digits.starts_with("00")) {
                        chars.next();
                        chars.next();
                    }
                }
                ')' => {}
                other => return Err(PhoneError::InvalidCharacter(other)),
            }
        }
        if digits.is_empty() {
            return Err(PhoneError::Empty);
        }
        let international: &str = if plus {
            &digits
        } else if let Some(rest) = digits.strip_prefix("00") {
            rest
        } else if let Some(rest) = digits.strip_prefix('0') {
            let cc = self.default_country.ok_or(PhoneError::NoDefaultCountry)?;
            digits = format!("{cc}{rest}");
            &digits
        } else {
            &digits
        };
        if international.starts_with('0') {
            return Err(PhoneError::BadCountryCode);
        }
        let n = international.len();
        if n < MIN_DIGITS {
            return Err(PhoneError::TooShort(n));
        }
        if n > MAX_DIGITS {
            return Err(PhoneError::TooLong(n));
        }
        Ok(PhoneNumber(international.parse().expect("at most 15 ASCII digits fit in u64")))
    }
}

/// Trailing digits of a number, as a DPO types them (at least 3, separators ignored).
#[derive(Clone, PartialEq, Eq)]
pub struct Digits(String);

impl Digits {
    pub fn parse(input: &str) -> Result<Self, PhoneError> {
        let mut d = String::new();
        for c in input.trim().chars() {
            match c {
                '0'..='9' => d.push(c),
                '+' | ' ' | '-' | '.' | '/' | '(' | ')' => {}
                other => return Err(PhoneError::InvalidCharacter(other)),
            }
        }
        if d.len() < 3 {
            return Err(PhoneError::TooFewDigits(d.len()));
        }
        if d.len() > MAX_DIGITS {
            return Err(PhoneError::TooLong(d.len()));
        }
        Ok(Self(d))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The digits last to first: the key prefix of every number ending in them.
    pub fn reversed(&self) -> Vec<u8> {
        self.0.bytes().rev().collect()
    }

    pub fn matches(&self, number: PhoneNumber) -> bool {
        number.digits().ends_with(&self.0)
    }
}

impl fmt::Debug for Digits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digits({} digits)", self.0.len())
    }
}

/// `text` with every run of 6 or more digits (spaces and a leading `+` allowed inside), which may be a
/// phone number, replaced by `[number hidden]`; dates and times (digits split by `-` or `:`) stay.
pub fn mask_numbers(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        let kept = run.trim_end().len();
        if run.chars().filter(char::is_ascii_digit).count() >= 6 {
            out.push_str("[number hidden]");
            out.push_str(&run[kept..]);
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in text.chars() {
        if c.is_ascii_digit() || (c == ' ' && !run.is_empty()) || (c == '+' && run.is_empty()) {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

#[cfg(test)]
mod tests {

    #[test]
    fn numbers_in_free_text_are_masked_and_dates_are_not() {
        let text = r#"HTTP 400: {"error": "bad number +49 151 2345678", "at": "2024-01-01T10:00:00Z", "n": 12}"#;
        assert_eq!(
            mask_numbers(text),
            r#"HTTP 400: {"error": "bad number [number hidden]", "at": "2024-01-01T10:00:00Z", "n": 12}"#
        );
        assert_eq!(mask_numbers("call 0151-2345678 now"), "call 0151-[number hidden] now");
        assert_eq!(mask_numbers("491512345678"), "[number hidden]");
        assert_eq!(mask_numbers("no digits"), "no digits");
    }
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_written_forms_of_one_number_become_one_key() {
        let p = PhoneParser::new(Some(49));
        for s in [
            "+49 151 2345-678",
            "0049 151 2345678",
            "+49 (0)151 2345678",
            "0151 2345678",
            "+491512345678",
            "491512345678",
            "+49/151.234 56 78",
        ] {
            assert_eq!(p.parse(s).unwrap().to_string(), "+491512345678", "{s}");
        }
    }

    #[test]
    fn bad_numbers_are_refused_with_the_reason() {
        let p = PhoneParser::new(Some(49));
        assert_eq!(p.parse("+49 151 CALLME"), Err(PhoneError::InvalidCharacter('C')));
        assert_eq!(p.parse("+49 12"), Err(PhoneError::TooShort(4)));
        assert_eq!(p.parse("+49 1512 3456 7890 12"), Err(PhoneError::TooLong(16)));
        assert_eq!(p.parse("  "), Err(PhoneError::Empty));
        assert_eq!(p.parse("+0151 2345678"), Err(PhoneError::BadCountryCode));
        assert_eq!(PhoneParser::new(None).parse("0151 2345678"), Err(PhoneError::NoDefaultCountry));
        assert_eq!(p.parse("+49 151+2345678"), Err(PhoneError::InvalidCharacter('+')));
    }

    #[test]
    fn debug_output_hides_the_number() {
        let n = PhoneNumber::parse("+491512345678").unwrap();
        assert_eq!(format!("{n:?}"), "PhoneNumber(+…78)");
    }

    #[test]
    fn digits_need_three() {
        assert!(Digits::parse("12").is_err());
        assert_eq!(Digits::parse("56-78").unwrap().reversed(), b"8765");
        assert!(Digits::parse("678").unwrap().matches(PhoneNumber::parse("+491512345678").unwrap()));
    }

    proptest! {
        #[test]
        fn reversed_digits_round_trip(n in 1_000_000u64..999_999_999_999_999u64) {
            let p = PhoneNumber::from_u64(n).unwrap();
            let mut rev = Vec::new();
            p.reversed_digits(&mut rev);
            prop_assert_eq!(PhoneNumber::from_reversed_digits(&rev), Some(p));
            prop_assert_eq!(PhoneNumber::parse(&p.to_string()), Ok(p));
            let mut pushed = String::new();
            p.push_to(&mut pushed);
            prop_assert_eq!(pushed, p.to_string());
        }
    }
}
