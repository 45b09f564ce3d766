//! What libphonenumber's metadata says about each country calling code, read once: the region it
//! belongs to, the lengths its national numbers may have, and the national prefix it may take off the
//! front of one. A number written with `+` whose national part no prefix can come off, and whose
//! length is possible, is taken as it stands (the fast path of [`super::PhoneParser`]); every other
//! number takes libphonenumber's full parse.

use rlibphonenumber::interfaces::AsOriginal;
use rlibphonenumber::{Region as Lib, PHONE_NUMBER_UTIL};
use std::sync::LazyLock;

/// One country calling code.
pub(super) struct CallingCode {
    /// The main region of the code (`US` for 1, `GB` for 44).
    pub region: Lib,
    /// Bit `n` set: a national significant number of `n` digits is possible.
    pub lengths: u32,
    /// What libphonenumber may take off the front of a national number as a national prefix (its
    /// `nationalPrefixForParsing`). A national number this does not match is read exactly as written.
    pub prefix: Prefix,
}

/// A national prefix as libphonenumber reads it.
pub(super) enum Prefix {
    None,
    /// Plain digits (`0`; `0` or `180020` for GB): the common case, compared without a regex.
    Literals(Vec<Vec<u8>>),
    /// A pattern (CN, BR, …), through libphonenumber's own compiled regex.
    Pattern(Box<dyn Fn(&str) -> bool + Send + Sync>),
}

impl Prefix {
    /// Whether a national prefix could come off the front of `national` (digits).
    pub fn may_strip(&self, national: &[u8]) -> bool {
        match self {
            Prefix::None => false,
            Prefix::Literals(l) => l.iter().any(|p| national.starts_with(p)),
            Prefix::Pattern(matches) => std::str::from_utf8(national).map_or(true, matches),
        }
    }
}

/// Calling codes 1 to 999, by code.
pub(super) static CODES: LazyLock<Vec<Option<CallingCode>>> = LazyLock::new(|| {
    let util = &*PHONE_NUMBER_UTIL;
    let mut codes: Vec<Option<CallingCode>> = (0..1000).map(|_| None).collect();
    for code in util.get_supported_calling_codes() {
        let Some(slot) = usize::try_from(code).ok().and_then(|c| codes.get_mut(c)) else {
            continue;
        };
        let Some(region) = util.get_region_for_country_code(code) else {
            continue;
        };
        let Some(meta) = util.as_original().get_metadata_for_region_or_calling_code(code, region) else {
            continue;
        };
        let lengths = length_bits(&meta.general_desc.original.possible_length);
        // libphonenumber keeps the pattern as `^(?:…)$` and matches it at the start of the number.
        let parsing = meta.national_prefix_for_parsing();
        let body = parsing
            .pattern_base
            .as_deref()
            .map(|p| p.strip_prefix("^(?:").and_then(|p| p.strip_suffix(")$")).unwrap_or(p));
        let prefix = match body {
            None | Some("") => Prefix::None,
            Some(b) if b.bytes().all(|c| c.is_ascii_digit() || c == b'|') => {
                Prefix::Literals(b.split('|').filter(|l| !l.is_empty()).map(|l| l.as_bytes().to_vec()).collect())
            }
            // Compiled when first needed (libphonenumber keeps it); one that does not compile sends
            // every number of the code to the full parse.
            Some(_) => Prefix::Pattern(Box::new(move |n: &str| match parsing.anchor_start() {
                Ok(Some(re)) => re.is_match(n),
                _ => true,
            })),
        };
        *slot = Some(CallingCode { region, lengths, prefix });
    }
    codes
});

/// Possible lengths as bits: bit `n` set, `n` digits possible.
fn length_bits(lengths: &[i32]) -> u32 {
    lengths.iter().filter(|l| (0..32).contains(*l)).fold(0u32, |b, l| b | 1 << l)
}

/// The calling code that starts the ASCII digits of a number (codes are prefix-free): its length in
/// digits, and what it is.
pub(super) fn code_of(digits: &[u8]) -> Option<(usize, &'static CallingCode)> {
    let codes = &*CODES;
    let mut code = 0usize;
    for (n, d) in digits.iter().take(3).enumerate() {
        code = code * 10 + usize::from(d - b'0');
        if let Some(c) = codes.get(code).and_then(Option::as_ref) {
            return Some((n + 1, c));
        }
    }
    None
}

/// The regions libphonenumber knows a calling code for.
pub(super) fn calling_code_of(region: Lib) -> Option<u16> {
    PHONE_NUMBER_UTIL
        .get_country_code_for_region(region)
        .and_then(|c| u16::try_from(c).ok())
        .filter(|c| *c > 0)
}

/// The national prefix of a region (`0` in most of Europe, `1` in North America), if it has one.
pub(super) fn national_prefix(region: Lib) -> Option<String> {
    PHONE_NUMBER_UTIL
        .as_original()
        .get_metadata_for_region(region)?
        .original
        .national_prefix
        .clone()
        .filter(|p| !p.is_empty())
}

/// What a region's national numbers need for the fast path of [`super::PhoneParser`]: how
/// libphonenumber would read digits written without `+` in the region, when no regex but two
/// (the region's international prefix, and the pattern of its national numbers) is needed to know.
pub(super) struct National {
    pub code: u16,
    /// Its digits, as written.
    pub code_digits: Vec<u8>,
    /// Bit `n` set: a national number of `n` digits is possible.
    pub lengths: u32,
    /// The national prefix, when the region reads it as plain digits (`0`); `None` when it has none.
    /// Regions whose prefix is a pattern (or more than one literal) take the full parse.
    pub prefix: Option<Vec<u8>>,
    /// Whether the digits start with the region's international prefix (`00`, `011`): then the
    /// number is dialled abroad, and takes the full parse.
    pub dialled_abroad: Box<dyn Fn(&str) -> bool + Send + Sync>,
    /// Whether digits are a national number of the region by its general pattern (libphonenumber's
    /// "viable" national number, which decides whether a prefix comes off).
    pub viable: Box<dyn Fn(&str) -> bool + Send + Sync>,
}

/// The regions whose national numbers can take the fast path, by region.
pub(super) static NATIONAL: LazyLock<std::collections::HashMap<Lib, National>> = LazyLock::new(|| {
    let util = &*PHONE_NUMBER_UTIL;
    let mut regions = std::collections::HashMap::new();
    for region in util.get_supported_regions() {
        let Some(code) = calling_code_of(region) else { continue };
        let Some(c) = CODES.get(usize::from(code)).and_then(Option::as_ref) else {
            continue;
        };
        let Some(meta) = util.as_original().get_metadata_for_region(region) else {
            continue;
        };
        let prefix = match &c.prefix {
            Prefix::None if meta.national_prefix_for_parsing().pattern_base.is_none() => None,
            Prefix::Literals(l) if l.len() == 1 => Some(l[0].clone()),
            _ => continue,
        };
        // The main region's rules are the code's; another region of the code (CA for +1) has its own.
        // libphonenumber checks a number the region cannot be told of (`300 0000` in CA) against the
        // code's main region (US, which takes 10 digits only): the fast path takes only lengths both
        // allow, and leaves the others to the full parse.
        let lengths = length_bits(&meta.general_desc.original.possible_length) & c.lengths;
        let idd = meta.international_prefix();
        let general = meta.general_desc.national_number_pattern();
        regions.insert(
            region,
            National {
                code,
                code_digits: code.to_string().into_bytes(),
                lengths,
                prefix,
                dialled_abroad: Box::new(move |n: &str| match idd.anchor_start() {
                    Ok(Some(re)) => re.is_match(n),
                    Ok(None) => false,
                    Err(_) => true,
                }),
                viable: Box::new(move |n: &str| match general.anchor_full() {
                    Ok(Some(re)) => re.is_match(n),
                    _ => false,
                }),
            },
        );
    }
    regions
});
