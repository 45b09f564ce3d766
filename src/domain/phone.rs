//! Phone numbers, normalised to E.164 (`+` and at most 15 digits) once, at the edge, by libphonenumber's
//! rules for the number's country and the default [`Region`]. A number is stored as the integer of
//! its digits: E.164 numbers never start with 0.

use super::phone_rules as rules;
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
    #[error("a national number (without + and country code) needs a default region, and none is configured")]
    NoDefaultRegion,
    #[error("a country code cannot start with 0")]
    BadCountryCode,
    #[error("+{0} is not a country calling code")]
    UnknownCountryCode(String),
    #[error("not a phone number as {0} writes them: {1}")]
    Unreadable(String, &'static str),
    #[error("too {what} for +{code} ({region}): {digits} digits after the country code, where {expected}")]
    NotPossible {
        what: &'static str,
        code: u16,
        region: String,
        digits: usize,
        expected: String,
    },
    #[error("ambiguous for +{0}: its national part starts with a national prefix, and what is left once that is off reads as another number again")]
    Ambiguous(u16),
    #[error("{0:?} is not a region: use an ISO 3166 code such as DE or US (or a country calling code such as 49)")]
    UnknownRegion(String),
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

    /// The number as dialled inside its own country: the national prefix and the national number
    /// (`01512345678` for `+491512345678`), when its country code is known.
    pub fn national_digits(self) -> Option<String> {
        let digits = self.digits();
        let (code_len, c) = rules::code_of(digits.as_bytes())?;
        let prefix = rules::national_prefix(c.region).unwrap_or_default();
        Some(format!("{prefix}{}", &digits[code_len..]))
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

/// A region whose national formats numbers without a country code are read in: an ISO 3166 code
/// that libphonenumber knows a country calling code for (`DE`, `US`, `GB`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Region(rlibphonenumber::Region);

impl Region {
    /// An ISO 3166 code in any case (`de`, `US`).
    pub fn parse(code: &str) -> Result<Self, PhoneError> {
        let bad = || PhoneError::UnknownRegion(code.chars().take(20).collect());
        let t = code.trim();
        if t.len() != 2 || !t.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(bad());
        }
        let r = rlibphonenumber::Region::from_code(t).map_err(|_| bad())?;
        rules::calling_code_of(r).ok_or_else(bad)?;
        Ok(Region(r))
    }

    /// A region code, or a country calling code (`49`, `+49`, `0049`) meaning its main region, as a
    /// column of a file may hold either.
    pub fn parse_code(s: &str) -> Result<Self, PhoneError> {
        let t = s.trim();
        let digits = t.strip_prefix('+').or_else(|| t.strip_prefix("00")).unwrap_or(t);
        if !digits.is_empty() && digits.len() <= 3 && digits.bytes().all(|b| b.is_ascii_digit()) {
            let code: usize = digits.parse().map_err(|_| PhoneError::UnknownRegion(t.to_string()))?;
            return rules::CODES
                .get(code)
                .and_then(|c| c.as_ref())
                .filter(|c| c.region != rlibphonenumber::Region::World)
                .map(|c| Region(c.region))
                .ok_or_else(|| PhoneError::UnknownRegion(t.to_string()));
        }
        Self::parse(t)
    }

    /// The main region of a country calling code (`US` for 1, `DE` for 49).
    pub fn for_calling_code(code: u16) -> Option<Self> {
        let c = rules::CODES.get(usize::from(code))?.as_ref()?;
        (c.region != rlibphonenumber::Region::World).then_some(Region(c.region))
    }

    /// The main region of the number's country calling code.
    pub fn of(number: PhoneNumber) -> Option<Self> {
        let (_, c) = rules::code_of(number.digits().as_bytes())?;
        (c.region != rlibphonenumber::Region::World).then_some(Region(c.region))
    }

    pub fn calling_code(self) -> u16 {
        rules::calling_code_of(self.0).unwrap_or_default()
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Region({})", self.0)
    }
}

impl std::str::FromStr for Region {
    type Err = PhoneError;
    fn from_str(s: &str) -> Result<Self, PhoneError> {
        Self::parse(s)
    }
}

/// Reads phone numbers as libphonenumber does (Google's rules for every numbering plan, through its
/// Rust port rlibphonenumber): numbers with `+` and a country code anywhere, national numbers (and
/// numbers dialled abroad, such as `0049…` or `011 49…`) as written in the default region.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PhoneParser {
    region: Option<Region>,
}

impl PhoneParser {
    pub fn new(region: Option<Region>) -> Self {
        Self { region }
    }

    /// The region national numbers are read in.
    pub fn region(&self) -> Option<Region> {
        self.region
    }

    /// The same parser reading national numbers in `region`.
    pub fn with_region(self, region: Region) -> Self {
        Self { region: Some(region) }
    }

    /// `+49 151 2345-678`, `tel:+49-151-2345678`, `+49 (0)151 2345678`, `+49 0151 2345678` and, in
    /// region DE, `0151 2345678` and `0049 151 2345678` all give `+491512345678`; in region US,
    /// `(512) 555-1236` gives `+15125551236`. A number that is not possible in its country (too short,
    /// too long) is refused with the lengths it may have. An extension (`;ext=12`, `ext. 12`, `x12`)
    /// is dropped: E.164 has none, and the consent is the line's.
    pub fn parse(&self, input: &str) -> Result<PhoneNumber, PhoneError> {
        let s = input.trim();
        if s.is_empty() {
            return Err(PhoneError::Empty);
        }
        if let Some(n) = fast_international(s).or_else(|| self.fast_national(s)) {
            return Ok(n);
        }
        self.parse_full(s)
    }

    /// Digits with separators, without `+`, as libphonenumber reads them in the default region when
    /// that takes no more than the region's plain-digit national prefix (`0151…` in DE) or none
    /// (`(512) 555-1236` in US, `06…` in IT): taken when the national number fits the region's pattern
    /// and length. `None`: anything else (the full parse decides).
    fn fast_national(&self, s: &str) -> Option<PhoneNumber> {
        let region = self.region?;
        let mut digits = [0u8; MAX_DIGITS + 2];
        let mut len = 0;
        for &b in s.as_bytes() {
            match b {
                b'0'..=b'9' => {
                    *digits.get_mut(len)? = b;
                    len += 1;
                }
                b' ' | b'-' | b'.' | b'/' | b'(' | b')' => {}
                _ => return None,
            }
        }
        let digits = &digits[..len];
        let r = rules::NATIONAL.get(&region.0)?;
        // Digits that start like the region's own country code may be an international number
        // without its `+`: libphonenumber weighs both readings.
        if digits.starts_with(&r.code_digits) {
            return None;
        }
        let text = std::str::from_utf8(digits).ok()?;
        if (r.dialled_abroad)(text) {
            return None;
        }
        let national = match &r.prefix {
            Some(p) if digits.starts_with(p) => &text[p.len()..],
            _ => text,
        };
        // libphonenumber takes the prefix off when what is left is a national number of the region.
        if national.is_empty() || (r.lengths >> national.len()) & 1 == 0 || !(r.viable)(national) {
            return None;
        }
        if national.starts_with('0') && r.prefix.is_some() {
            return None;
        }
        let value = national.bytes().fold(u64::from(r.code), |n, d| n * 10 + u64::from(d - b'0'));
        PhoneNumber::from_u64(value)
    }

    /// Everything the fast path does not take, through libphonenumber's parser.
    fn parse_full(&self, s: &str) -> Result<PhoneNumber, PhoneError> {
        self.parse_full_with(s, true)
    }

    /// The full parse, without checking that its result reads back as itself.
    fn parse_full_once(&self, s: &str) -> Result<PhoneNumber, PhoneError> {
        self.parse_full_with(s, false)
    }

    fn parse_full_with(&self, s: &str, check: bool) -> Result<PhoneNumber, PhoneError> {
        use rlibphonenumber::{NotANumberError, ParseError, PHONE_NUMBER_UTIL};
        let number = check_characters(s)?;
        let international = number.trim_start().starts_with(['+', '\u{ff0b}']);
        if number.trim_start().starts_with("+0") {
            return Err(PhoneError::BadCountryCode);
        }
        if !international && self.region.is_none() {
            return Err(PhoneError::NoDefaultRegion);
        }
        let region_name = self.region.map_or("international numbers".to_string(), |r| format!("region {r}"));
        let parsed = PHONE_NUMBER_UTIL.parse(s, self.region.map(|r| r.0)).map_err(|e| match e {
            ParseError::InvalidCountryCode => {
                let code: String = number.chars().filter(char::is_ascii_digit).take(3).collect();
                if international {
                    PhoneError::UnknownCountryCode(code)
                } else {
                    PhoneError::Unreadable(region_name.clone(), "no country code can be read from it")
                }
            }
            ParseError::TooShortNsn | ParseError::TooShortAfterIdd => PhoneError::Unreadable(region_name.clone(), "too few digits"),
            ParseError::TooLongNsn => PhoneError::TooLong(number.chars().filter(char::is_ascii_digit).count()),
            ParseError::NotANumber(NotANumberError::InvalidPhoneContext) => {
                PhoneError::Unreadable(region_name.clone(), "the tel: URI has an invalid phone-context")
            }
            ParseError::NotANumber(_) => PhoneError::Unreadable(region_name.clone(), "it does not look like a phone number"),
        })?;
        let code = u16::try_from(parsed.country_code).map_err(|_| PhoneError::BadCountryCode)?;
        let zeros = if parsed.italian_leading_zero.unwrap_or(false) {
            parsed.number_of_leading_zeros.unwrap_or(1).max(0) as u32
        } else {
            0
        };
        let national_len = parsed.national_number.checked_ilog10().map_or(1, |l| l + 1) + zeros;
        possible(code, &parsed, national_len)?;
        let total = code.ilog10() + 1 + national_len;
        if total as usize > MAX_DIGITS {
            return Err(PhoneError::TooLong(total as usize));
        }
        let digits = u64::from(code) * 10u64.pow(national_len) + parsed.national_number;
        let n = PhoneNumber::from_u64(digits).ok_or(PhoneError::TooShort(total as usize))?;
        // What is stored must read back as itself from its E.164 form (an export read in again, a
        // remote that echoes it): a national part that still starts with a prefix after one came off
        // (`+855 00…`) would lose another one each time.
        let e164 = n.to_string();
        if check && fast_international(&e164).is_none() && Self::default().parse_full_once(&e164) != Ok(n) {
            return Err(PhoneError::Ambiguous(code));
        }
        Ok(n)
    }
}

/// `+` and digits with separators, whose national part no national prefix can come off: taken as
/// written when its length is possible for its country. `None`: not such a number, or not possible
/// (the full parse then gives the reason). Costs about what reading the digits does.
///
/// A number in E.164 form (`+` and digits only, as consentd and every normalising system write it) is
/// taken digit for digit even where libphonenumber would take a national prefix off because what is
/// left is a number too (`+37588447351` would become `+3758447351`): reading back what we wrote must
/// give the same number. Only a leading trunk 0 still comes off (`+4901512345678`).
fn fast_international(s: &str) -> Option<PhoneNumber> {
    let rest = s.strip_prefix('+')?;
    let mut digits = [0u8; MAX_DIGITS];
    let mut len = 0;
    let bytes = rest.as_bytes();
    let mut e164 = true;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'0'..=b'9' => {
                *digits.get_mut(len)? = b;
                len += 1;
            }
            b' ' | b'-' | b'.' | b'/' | b')' => e164 = false,
            // "(0)" is a trunk prefix: the full parse drops it.
            b'(' if !bytes[i..].starts_with(b"(0") => e164 = false,
            _ => return None,
        }
    }
    let digits = &digits[..len];
    let (code_len, c) = rules::code_of(digits)?;
    let national = &digits[code_len..];
    if national.is_empty() || (c.lengths >> national.len()) & 1 == 0 {
        return None;
    }
    // A leading 0 is a trunk prefix where the country has a national prefix (`+49 0151…`): the full
    // parse takes it off. Where it has none (Italy), it is part of the number.
    if (national[0] == b'0' && !matches!(c.prefix, rules::Prefix::None)) || (!e164 && c.prefix.may_strip(national)) {
        return None;
    }
    PhoneNumber::from_u64(digits.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

/// Whether a parsed number (its national part `len` digits long) is possible for its calling code, as
/// libphonenumber's `isPossibleNumberWithReason` says; a number possible only when dialled locally is
/// not complete.
fn possible(code: u16, number: &rlibphonenumber::PhoneNumber, len: u32) -> Result<(), PhoneError> {
    let reason = match rlibphonenumber::PHONE_NUMBER_UTIL.is_possible_number_with_reason(number) {
        Ok(rlibphonenumber::NumberLengthType::IsPossible) => return Ok(()),
        Ok(rlibphonenumber::NumberLengthType::IsPossibleLocalOnly) => "short (a local number without its area code)",
        Err(rlibphonenumber::ValidationError::InvalidCountryCode) => return Err(PhoneError::UnknownCountryCode(code.to_string())),
        Err(rlibphonenumber::ValidationError::TooShort) => "short",
        Err(rlibphonenumber::ValidationError::TooLong) => "long",
        Err(rlibphonenumber::ValidationError::InvalidLength) => "short or long",
    };
    let c = rules::CODES.get(usize::from(code)).and_then(|c| c.as_ref());
    // Lengths as runs: `9`, `6, 7 or 9`, `4 to 15`.
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for l in (0..32u32).filter(|l| c.is_some_and(|c| (c.lengths >> l) & 1 == 1)) {
        match runs.last_mut() {
            Some((_, end)) if *end + 1 == l => *end = l,
            _ => runs.push((l, l)),
        }
    }
    let lengths: Vec<String> = runs
        .iter()
        .map(|&(a, b)| match b - a {
            0 => a.to_string(),
            1 => format!("{a}, {b}"),
            _ => format!("{a} to {b}"),
        })
        .collect();
    let expected = match lengths.as_slice() {
        [] => "none are known".to_string(),
        [one] => format!("{one} are expected"),
        [init @ .., last] => format!("{} or {last} are expected", init.join(", ")),
    };
    Err(PhoneError::NotPossible {
        what: reason,
        code,
        region: c.map_or("?".to_string(), |c| c.region.to_string()),
        digits: len as usize,
        expected,
    })
}

/// The number part of `s` once a `tel:` scheme and an extension are set aside, refused when it holds
/// a letter or a symbol: libphonenumber would read letters as a keypad's digits (`CALLME`), which no
/// customer's number has.
fn check_characters(s: &str) -> Result<&str, PhoneError> {
    let lower_starts = |t: &str, p: &str| t.get(..p.len()).is_some_and(|h| h.eq_ignore_ascii_case(p));
    let mut number = if lower_starts(s, "tel:") {
        // RFC 3966: parameters (;ext=, ;phone-context=, ;isub=) follow the number.
        s[4..].split(';').next().unwrap_or_default()
    } else {
        s
    };
    // An extension at the end: `ext. 12`, `ext 12`, `x12`, `#12`.
    let tail_digits = number.trim_end_matches(|c: char| c.is_ascii_digit() || c == ' ');
    if tail_digits.len() < number.len() {
        for marker in ["ext.", "ext", "x", "#"] {
            let t = tail_digits.trim_end();
            // `get`: the text before the digits may end in any character, not only ASCII.
            let end = t.len().checked_sub(marker.len()).and_then(|at| Some((at, t.get(at..)?)));
            if let Some((at, tail)) = end.filter(|(_, tail)| tail.eq_ignore_ascii_case(marker)) {
                debug_assert_eq!(tail.len(), marker.len());
                number = &t[..at];
                break;
            }
        }
    }
    let leading_plus = number.trim_start().strip_prefix(['+', '\u{ff0b}']).unwrap_or(number.trim_start());
    if leading_plus.contains(['+', '\u{ff0b}']) {
        return Err(PhoneError::InvalidCharacter('+'));
    }
    match number.chars().find(|&c| (!c.is_numeric() || c.is_alphabetic()) && !is_separator(c)) {
        Some(c) => Err(PhoneError::InvalidCharacter(c)),
        None if !number.chars().any(char::is_numeric) => Err(PhoneError::Empty),
        None => Ok(number),
    }
}

/// Characters people write between digits: spaces, dashes, dots, slashes, brackets, a plus (also in
/// their full-width forms, as East Asian systems write them).
fn is_separator(c: char) -> bool {
    matches!(
        c,
        ' ' | '\t' | '\u{a0}' | '\u{3000}' | '-' | '.' | '/' | '(' | ')' | '+' | '\u{2010}'
            ..='\u{2015}' | '\u{2212}' | '\u{ff0b}' | '\u{ff08}' | '\u{ff09}' | '\u{ff0d}' | '\u{ff0e}' | '\u{ff0f}'
    )
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

/// `text` with everything that may be a phone number replaced by `[number hidden]`: a run of 6 or
/// more digits, however it is written — with a leading `+` or `(`, and spaces, `-`, `.`, `/` and
/// brackets inside (`+49 (0)151-234.56 78`, `0049/151/2345678`). Dates (`2024-01-01`), times
/// (digits split by `:`) and IPv4 addresses (`127.0.0.1`) stay, so messages keep their sense.
pub fn mask_numbers(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        // Separators at the end of a run are not part of the number.
        let kept = run.trim_end_matches(|c: char| !c.is_ascii_digit() && c != ')').len();
        if maybe_number(&run[..kept]) {
            out.push_str("[number hidden]");
            out.push_str(&run[kept..]);
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in text.chars() {
        let inside = !run.is_empty() && matches!(c, ' ' | '-' | '.' | '/' | '(' | ')');
        if c.is_ascii_digit() || inside || (run.is_empty() && matches!(c, '+' | '(')) {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

/// Whether a run of digits and separators may be a phone number.
fn maybe_number(run: &str) -> bool {
    if run.bytes().filter(u8::is_ascii_digit).count() < 6 {
        return false;
    }
    let b = run.as_bytes();
    let digits_at = |r: std::ops::Range<usize>| b.get(r).is_some_and(|s| s.iter().all(u8::is_ascii_digit));
    // A date: 2024-01-01 (what follows it, `T10:00`, is split off at the `T`).
    let date = run.len() == 10 && digits_at(0..4) && b[4] == b'-' && digits_at(5..7) && b[7] == b'-' && digits_at(8..10);
    // An IPv4 address.
    let groups: Vec<&str> = run.split('.').collect();
    let ip = groups.len() == 4
        && groups
            .iter()
            .all(|g| (1..=3).contains(&g.len()) && g.bytes().all(|c| c.is_ascii_digit()));
    !(date || ip)
}

/// Numbers for property tests elsewhere: possible numbers of random countries, as parsing makes them.
#[cfg(test)]
pub(crate) fn possible_numbers() -> impl proptest::strategy::Strategy<Value = PhoneNumber> {
    use proptest::prelude::*;
    let codes: Vec<(u16, Vec<u32>)> = (1..1000u16)
        .filter_map(|c| {
            let cc = rules::CODES[usize::from(c)].as_ref()?;
            let lengths: Vec<u32> = (1..18).filter(|l| (cc.lengths >> l) & 1 == 1 && c.ilog10() + 1 + l <= 15).collect();
            (!lengths.is_empty() && Region::for_calling_code(c).is_some()).then_some((c, lengths))
        })
        .collect();
    (prop::sample::select(codes), any::<u64>(), 1u64..10).prop_filter_map("a possible number", |((code, lengths), seed, first)| {
        let len = lengths[(seed % lengths.len() as u64) as usize];
        let rest = if len > 1 { seed % 10u64.pow(len - 1) } else { 0 };
        let national = first * 10u64.pow(len - 1) + rest;
        PhoneParser::default()
            .parse(&format!("+{code}{national:0width$}", width = len as usize))
            .ok()
    })
}

string_schema!(PhoneNumber, "E.164", pattern(r"^\+[1-9][0-9]{6,14}$"));

#[cfg(test)]
mod tests {

    #[test]
    fn numbers_in_free_text_are_masked_and_dates_are_not() {
        let text = r#"HTTP 400: {"error": "bad number +49 151 2345678", "at": "2024-01-01T10:00:00Z", "n": 12}"#;
        assert_eq!(
            mask_numbers(text),
            r#"HTTP 400: {"error": "bad number [number hidden]", "at": "2024-01-01T10:00:00Z", "n": 12}"#
        );
        assert_eq!(mask_numbers("call 0151-2345678 now"), "call [number hidden] now");
        assert_eq!(mask_numbers("491512345678"), "[number hidden]");
        assert_eq!(mask_numbers("no digits"), "no digits");
    }

    #[test]
    fn a_number_is_masked_however_it_is_written() {
        for written in [
            "+491512345678",
            "+49 151 2345678",
            "+49-151-2345678",
            "+49.151.234.5678",
            "+49/151/2345678",
            "+49 (0)151 2345678",
            "(0151) 234 5678",
            "0151/234 56-78",
            "0049 151 2345678",
            "00491512345678",
            "015 12 34 56 78",
            "+1 (512) 555-1234",
            "512.555.1234",
        ] {
            let text = format!("refused: \"{written}\", try again");
            let masked = mask_numbers(&text);
            assert_eq!(masked, "refused: \"[number hidden]\", try again", "{written}");
            let digits: String = masked.chars().filter(char::is_ascii_digit).collect();
            assert!(digits.is_empty(), "{written} leaves {digits}");
        }
        // What is not a number keeps its sense.
        for kept in [
            "at 2024-01-01T10:00:00Z",
            "http://127.0.0.1:9/consents: connection refused",
            "HTTP 503 after 5 attempt(s)",
            "changes 12 to 345",
        ] {
            assert_eq!(mask_numbers(kept), kept);
        }
    }
    use super::*;
    use proptest::prelude::*;

    fn parser(region: &str) -> PhoneParser {
        PhoneParser::new(Some(Region::parse(region).unwrap()))
    }

    #[test]
    fn the_written_forms_of_one_number_become_one_key() {
        let p = parser("DE");
        for s in [
            "+49 151 2345-678",
            "0049 151 2345678",
            "+49 (0)151 2345678",
            "+49 0151 2345678",
            "0151 2345678",
            "+491512345678",
            "+49/151.234 56 78",
            "tel:+49-151-2345678",
            "tel:+49-151-2345678;ext=123",
            "+49 151 2345678 ext. 12",
            "０１５１ ２３４５６７８",
        ] {
            assert_eq!(p.parse(s).map(|n| n.to_string()), Ok("+491512345678".to_string()), "{s}");
        }
    }

    /// Number shapes per region, as libphonenumber reads them: the E.164 number, or why it is refused.
    #[test]
    fn national_formats_by_region() {
        let table: &[(&str, &str, Result<&str, &str>)] = &[
            ("DE", "0151 23456789", Ok("+4915123456789")),
            ("DE", "+49 (0)151 23456789", Ok("+4915123456789")),
            ("DE", "030 1234567", Ok("+49301234567")),
            ("DE", "01512", Err("fewer than the 7 of a complete E.164 number")),
            ("DE", "+49 12", Err("too short (a local number without its area code) for +49 (DE)")),
            (
                "DE",
                "+49 1512345678901234",
                Err("too long for +49 (DE): 16 digits after the country code, where 4 to 15 are expected"),
            ),
            // Digits without + in DE are a German number, as libphonenumber reads them.
            ("DE", "4915123456789", Ok("+494915123456789")),
            ("US", "5125551235", Ok("+15125551235")),
            ("US", "(512) 555-1236", Ok("+15125551236")),
            ("US", "1-512-555-1238", Ok("+15125551238")),
            ("US", "+1 512 555 1237", Ok("+15125551237")),
            ("US", "011 49 151 23456789", Ok("+4915123456789")),
            ("US", "555-1234", Err("local number without its area code")),
            (
                "US",
                "+1 21210047433",
                Err("too long for +1 (US): 11 digits after the country code, where 10 are expected"),
            ),
            ("GB", "07911 123456", Ok("+447911123456")),
            ("GB", "020 7946 0018", Ok("+442079460018")),
            ("GB", "+44 (0)20 7946 0018", Ok("+442079460018")),
            ("FR", "06 12 34 56 78", Ok("+33612345678")),
            ("FR", "+33 6 12 34 56 78", Ok("+33612345678")),
            ("FR", "+33 1210015838", Err("too long for +33 (FR)")),
            // Italian fixed lines keep their leading 0; there is no trunk prefix to drop.
            ("IT", "06 1234 5678", Ok("+390612345678")),
            ("IT", "+39 06 12345678", Ok("+390612345678")),
            ("IT", "312 345 6789", Ok("+393123456789")),
            ("IN", "098765 43210", Ok("+919876543210")),
            ("IN", "98765 43210", Ok("+919876543210")),
            ("IN", "+91 98765 43210", Ok("+919876543210")),
            ("BR", "(11) 91234-5678", Ok("+5511912345678")),
            ("BR", "0 21 11 91234-5678", Ok("+5511912345678")),
            ("BR", "+55 11 91234-5678", Ok("+5511912345678")),
            ("CN", "138 0013 8000", Ok("+8613800138000")),
            ("CN", "010 1234 5678", Ok("+861012345678")),
            ("CN", "+86 138 0013 8000", Ok("+8613800138000")),
        ];
        for (region, input, expected) in table {
            let got = parser(region).parse(input).map(|n| n.to_string()).map_err(|e| e.to_string());
            match (expected, &got) {
                (Ok(e), Ok(g)) => assert_eq!(g, e, "[{region}] {input}"),
                (Err(why), Err(g)) => assert!(g.contains(why), "[{region}] {input}: {g:?} does not say {why:?}"),
                _ => panic!("[{region}] {input}: expected {expected:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn bad_numbers_are_refused_with_the_reason() {
        let p = parser("DE");
        assert_eq!(p.parse("+49 151 CALLME"), Err(PhoneError::InvalidCharacter('C')));
        assert!(matches!(
            p.parse("+49 12"),
            Err(PhoneError::NotPossible { code: 49, digits: 2, .. })
        ));
        assert!(matches!(p.parse("+49 1512 3456 7890 12"), Err(PhoneError::TooLong(_))));
        assert_eq!(p.parse("  "), Err(PhoneError::Empty));
        assert_eq!(p.parse("+0151 2345678"), Err(PhoneError::BadCountryCode));
        assert_eq!(p.parse("+999 12345678"), Err(PhoneError::UnknownCountryCode("999".into())));
        assert_eq!(PhoneParser::new(None).parse("0151 2345678"), Err(PhoneError::NoDefaultRegion));
        assert_eq!(p.parse("+49 151+2345678"), Err(PhoneError::InvalidCharacter('+')));
        assert_eq!(p.parse("tel:"), Err(PhoneError::Empty));
        assert_eq!(p.parse("0151 2345678!"), Err(PhoneError::InvalidCharacter('!')));
        // Without a region, only numbers with + and a country code are read.
        assert_eq!(
            PhoneParser::new(None).parse("+1 512 555 1237").map(|n| n.to_string()),
            Ok("+15125551237".to_string())
        );
    }

    #[test]
    fn regions_by_code_and_by_calling_code() {
        assert_eq!(Region::parse("de").unwrap().to_string(), "DE");
        assert_eq!(Region::parse_code("+1").unwrap().to_string(), "US");
        assert_eq!(Region::parse_code("0044").unwrap().to_string(), "GB");
        assert_eq!(Region::parse_code("49").unwrap().calling_code(), 49);
        for bad in ["XX", "D", "DEU", "", "+999", "12345"] {
            assert!(Region::parse_code(bad).is_err(), "{bad}");
        }
        let n = PhoneNumber::parse("+390612345678").unwrap();
        assert_eq!(Region::of(n).map(|r| r.to_string()).as_deref(), Some("IT"));
        assert_eq!(n.national_digits().as_deref(), Some("0612345678"));
        assert_eq!(
            PhoneNumber::parse("+491512345678").unwrap().national_digits().as_deref(),
            Some("01512345678")
        );
    }

    /// Found by the import round trip: libphonenumber reads `+37588447351` as `+3758447351` (an 8
    /// is BY's national prefix, and what is left is a number too), so a consent exported and imported
    /// again changed its number. E.164 as written is the number; with spaces, libphonenumber's reading.
    #[test]
    fn a_number_in_e164_form_is_taken_as_written() {
        assert!(PhoneNumber::parse("\\¢²\"Õþ¼0").is_err());
        assert_eq!(
            PhoneNumber::parse("+375888447351").map(|n| n.to_string()),
            Ok("+375888447351".into())
        );
        assert_eq!(PhoneNumber::parse("+37588447351").map(|n| n.to_string()), Ok("+37588447351".into()));
        assert_eq!(
            PhoneNumber::parse("+4901512345678").map(|n| n.to_string()),
            Ok("+491512345678".into())
        );
        assert_eq!(
            PhoneNumber::parse("+375 8 029 123 45 67").map(|n| n.to_string()),
            Ok("+375291234567".into())
        );
    }

    #[test]
    fn the_fast_path_leaves_national_prefixes_to_the_full_parse() {
        // Numbers whose national part starts with what a national prefix pattern matches (CN, GB, RU,
        // BR), or with 0 (a trunk prefix in DE, part of the number in IT).
        for text in [
            "+86 1112345678",
            "+86 17912345678",
            "+86 13800138000",
            "+44 1800201234567",
            "+7 8123456789",
            "+7 9123456789",
            "+55 11 91234 5678",
            "+55 0 21 11 91234 5678",
            "+49 0151 2345678",
            "+39 06 1234 5678",
            "+1 1 512 555 1234",
        ] {
            let full = PhoneParser::default().parse_full(text);
            if let Some(fast) = fast_international(text) {
                assert_eq!(Ok(fast), full, "{text}");
            }
        }
    }

    fn calling_codes() -> Vec<u16> {
        (1..1000u16).filter(|c| rules::CODES[usize::from(*c)].is_some()).collect()
    }

    fn regions() -> Vec<Region> {
        rules::NATIONAL.keys().map(|r| Region(*r)).collect()
    }

    /// A region and a national number of it near one libphonenumber gives as an example (its last
    /// digits changed), written with the national prefix or without.
    fn national_numbers() -> impl Strategy<Value = (Region, String)> {
        let examples: Vec<(Region, String, String)> = regions()
            .into_iter()
            .filter_map(|r| {
                let n = rlibphonenumber::PHONE_NUMBER_UTIL.get_example_number(r.0).ok()?;
                let nsn = rlibphonenumber::PHONE_NUMBER_UTIL
                    .format(&n, rlibphonenumber::PhoneNumberFormat::National)
                    .to_string();
                let digits: String = nsn.chars().filter(char::is_ascii_digit).collect();
                Some((r, digits, rules::national_prefix(r.0).unwrap_or_default()))
            })
            .collect();
        (prop::sample::select(examples), "[0-9]{4}", 0..3usize).prop_map(|((r, digits, prefix), tail, how)| {
            let body = format!("{}{tail}", &digits[..digits.len().saturating_sub(4)]);
            let text = match how {
                0 => body,
                1 => format!("{prefix}{}", body.trim_start_matches(prefix.as_str())),
                _ => body.trim_start_matches(prefix.as_str()).to_string(),
            };
            (r, text)
        })
    }

    /// Found by the property below: in CA, a 7-digit number is local-only by the code's main region
    /// (US), so libphonenumber refuses it; the fast path must not take it.
    #[test]
    fn a_local_only_number_of_a_regions_code_is_left_to_the_full_parse() {
        let p = PhoneParser::new(Some(Region::parse("CA").unwrap()));
        assert_eq!(p.fast_national("3000000"), None);
        assert!(p.parse("300 0000").is_err());
        assert_eq!(p.parse("(416) 555-0100").map(|n| n.to_string()), Ok("+14165550100".to_string()));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]
        /// The fast path for national numbers takes numbers near the regions' own examples only as
        /// libphonenumber's full parse does.
        #[test]
        fn the_national_fast_path_agrees_on_realistic_numbers((region, text) in national_numbers()) {
            let p = PhoneParser::new(Some(region));
            if let Some(fast) = p.fast_national(&text) {
                prop_assert_eq!(Ok(fast), p.parse_full(&text), "[{}] {}", region, text);
            }
        }

        /// The fast path for national numbers takes a number only as libphonenumber's full parse does,
        /// in every region it serves.
        #[test]
        fn the_national_fast_path_agrees_with_the_full_parse(region in prop::sample::select(regions()), digits in "[0-9]{2,14}", spaced: bool) {
            let text = if spaced && digits.len() > 4 { format!("{} {}", &digits[..3], &digits[3..]) } else { digits.clone() };
            let p = PhoneParser::new(Some(region));
            if let Some(fast) = p.fast_national(&text) {
                prop_assert_eq!(Ok(fast), p.parse_full(&text), "[{}] {}", region, text);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]
        /// The fast path for `+` numbers takes a number only as libphonenumber's full parse does, for
        /// every country calling code.
        #[test]
        fn the_fast_path_agrees_with_the_full_parse(code in prop::sample::select(calling_codes()), national in "[0-9]{1,13}") {
            let text = format!("+{code} {national}");
            let full = PhoneParser::default().parse_full(&text);
            if let Some(fast) = fast_international(&text) {
                prop_assert_eq!(Ok(fast), full, "{}", text);
            }
        }

        /// A number in E.164 form is taken digit for digit, or as libphonenumber reads it when it is
        /// not a possible number as written; either way, reading back what it gives gives it again.
        #[test]
        fn a_number_read_back_from_its_e164_form_is_the_same(code in prop::sample::select(calling_codes()), national in "[0-9]{1,13}", region in prop::sample::select(regions())) {
            let text = format!("+{code}{national}");
            if let Some(fast) = fast_international(&text) {
                prop_assert_eq!(fast.to_string(), text.clone());
            }
            for p in [PhoneParser::default(), PhoneParser::new(Some(region))] {
                for written in [text.clone(), format!("+{code} {national}"), national.clone()] {
                    if let Ok(n) = p.parse(&written) {
                        prop_assert_eq!(PhoneParser::default().parse(&n.to_string()), Ok(n), "{} read as {}", written, n.to_string());
                        prop_assert_eq!(p.parse(&n.to_string()), Ok(n), "{} read as {}", written, n.to_string());
                    }
                }
            }
        }
    }

    proptest! {
        /// Found by schemathesis: text ending in a multi-byte character and digits (`…þ¼0`) made the
        /// extension check cut inside the character. Whatever the text, parsing answers.
        #[test]
        fn any_text_is_parsed_or_refused_without_a_panic(text in "\\PC{0,12}[0-9 ]{0,4}", region in prop::sample::select(regions())) {
            let _ = PhoneParser::new(Some(region)).parse(&text);
            let _ = PhoneParser::default().parse(&format!("+{text}"));
        }
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
            let mut pushed = String::new();
            p.push_to(&mut pushed);
            prop_assert_eq!(pushed, p.to_string());
        }
    }
}
