//! What libphonenumber's metadata says about each country calling code, read once: the region it
//! belongs to, the lengths its national numbers may have, and whether a number written with `+` can
//! be taken as it stands (the fast path of [`super::PhoneParser`]), or needs the full parse because a
//! national prefix might have to come off it.

use rlibphonenumber::interfaces::AsOriginal;
use rlibphonenumber::{Region as Lib, PHONE_NUMBER_UTIL};
use std::sync::LazyLock;

/// One country calling code.
#[derive(Debug, Clone, Copy)]
pub(super) struct CallingCode {
    /// The main region of the code (`US` for 1, `GB` for 44).
    pub region: Lib,
    /// Bit `n` set: a national significant number of `n` digits is possible.
    pub lengths: u32,
    /// The first digit of the national prefix. A number written with `+` and the code whose national
    /// part starts with another digit (with any, when there is no prefix) is read by libphonenumber
    /// exactly as written: no national prefix can come off it.
    pub prefix_digit: Option<u8>,
    /// The national prefix is read by a pattern (or transformed), so no number of this code takes the
    /// fast path.
    pub slow: bool,
}

/// Calling codes 1 to 999, by code.
pub(super) static CODES: LazyLock<Vec<Option<CallingCode>>> = LazyLock::new(|| {
    let util = &*PHONE_NUMBER_UTIL;
    let mut codes = vec![None; 1000];
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
        let bits = |lengths: &[i32]| lengths.iter().filter(|l| (0..32).contains(*l)).fold(0u32, |b, l| b | 1 << l);
        let general = &meta.general_desc.original;
        let lengths = bits(&general.possible_length);
        let national = meta.original.national_prefix.as_deref().unwrap_or("");
        *slot = Some(CallingCode {
            region,
            lengths,
            prefix_digit: national.bytes().next().map(|b| b.wrapping_sub(b'0')),
            slow: meta.national_prefix_for_parsing().pattern_base.is_some()
                || meta.original.national_prefix_transform_rule.is_some()
                || lengths == 0,
        });
    }
    codes
});

/// The calling code that starts `digits` (codes are prefix-free), and its length in digits.
pub(super) fn split_code(digits: u64, len: u32) -> Option<(u16, u32, &'static CallingCode)> {
    (1..=3u32).filter(|n| *n < len).find_map(|n| {
        let code = digits / 10u64.pow(len - n);
        let c = CODES.get(code as usize)?.as_ref()?;
        Some((code as u16, n, c))
    })
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
