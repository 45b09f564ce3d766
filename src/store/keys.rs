//! Byte layouts of the store's keys and values (see the key layout in `store/mod.rs`).

use super::pages::Small;
use crate::domain::{PhoneNumber, Usage};
use std::sync::Arc;

/// A consent as stored beside its key: value, times (UTC ms) and the id of its source's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    pub consent: bool,
    pub created: i64,
    pub updated: i64,
    pub source: u32,
}

/// Where an imported record was read: the name id of its file, and its line, or its record when
/// the format has no lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawPlace {
    pub file: u32,
    pub at: u32,
    pub by_record: bool,
}

/// One change as the journal keeps it: the change feed, the audit trail and the redo log in one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawChange {
    pub seq: u64,
    pub at: i64,
    pub actor: u32,
    pub source: u32,
    pub number: PhoneNumber,
    pub usage: Usage,
    pub before: Option<Stored>,
    pub after: Option<Stored>,
    /// When `after` is none: the deletion time of the tombstone the change leaves (none only in
    /// journals written before tombstones, whose deletions left nothing).
    pub deleted_at: Option<i64>,
    /// Where the change was read (imports from files).
    pub place: Option<RawPlace>,
    /// The IVR call that gave the answer (at most 255 bytes).
    pub call_id: Option<Arc<str>>,
}

/// What `by_number` holds for a number and usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    Consent(Stored),
    /// A tombstone: deleted at this time, by a change from this source.
    Deleted {
        at: i64,
        source: u32,
    },
}

/// Sorts signed times correctly as unsigned big-endian bytes.
fn time_bytes(t: i64) -> [u8; 8] {
    ((t as u64) ^ (1 << 63)).to_be_bytes()
}

fn time_from(b: &[u8]) -> i64 {
    (u64::from_be_bytes(b.try_into().expect("8 bytes")) ^ (1 << 63)) as i64
}

/// [`PhoneNumber::reversed_digits`], without allocating.
fn rev_digits(number: PhoneNumber) -> Small {
    let (mut buf, mut len, mut n) = ([0u8; 20], 0, number.as_u64());
    while n > 0 {
        buf[len] = b'0' + (n % 10) as u8;
        n /= 10;
        len += 1;
    }
    Small::new(&buf[..len])
}

/// `by_number` key: reversed digits, 0, usage code.
pub fn number_key(number: PhoneNumber, usage: Usage) -> Small {
    let mut k = rev_digits(number);
    k.push(&[0, usage.code()]);
    k
}

/// Prefix of both usages' `by_number` keys of one number.
pub fn number_prefix(number: PhoneNumber) -> Small {
    let mut k = rev_digits(number);
    k.push(&[0]);
    k
}

/// The `by_number` key packed into a `u64` that sorts the same way: the reversed digits as nibbles
/// (digit + 1; 0 past the last digit; E.164 has at most 15), then the usage code in the last nibble.
/// Sorting a batch by it needs no allocation per change.
pub fn packed_number_key(number: PhoneNumber, usage: Usage) -> u64 {
    let (mut n, mut shift, mut k) = (number.as_u64(), 60, u64::from(usage.code()));
    while n > 0 && shift > 0 {
        k |= (n % 10 + 1) << shift;
        n /= 10;
        shift -= 4;
    }
    debug_assert!(n == 0, "at most 15 digits");
    k
}

pub fn unpack_number_key(k: u64) -> Option<(PhoneNumber, Usage)> {
    let (mut n, mut scale) = (0u64, 1u64);
    for shift in (4..=60).rev().step_by(4) {
        let nibble = (k >> shift) & 0xf;
        if nibble == 0 {
            break;
        }
        n += (nibble - 1) * scale;
        scale = scale.saturating_mul(10);
    }
    Some((PhoneNumber::from_u64(n)?, Usage::from_code((k & 0xf) as u8)?))
}

pub fn decode_number_key(k: &[u8]) -> Option<(PhoneNumber, Usage)> {
    let [rev @ .., 0, u] = k else { return None };
    Some((PhoneNumber::from_reversed_digits(rev)?, Usage::from_code(*u)?))
}

/// `by_number` value: format, consent, created, updated, source id.
pub fn number_value(s: &Stored) -> Small {
    let mut v = Small::new(&[1, u8::from(s.consent)]);
    v.push(&time_bytes(s.created));
    v.push(&time_bytes(s.updated));
    v.push(&s.source.to_be_bytes());
    v
}

/// `by_number` value of a tombstone: format 2, deletion time, source id.
pub fn tomb_value(at: i64, source: u32) -> Small {
    let mut v = Small::new(&[2]);
    v.push(&time_bytes(at));
    v.push(&source.to_be_bytes());
    v
}

/// The `by_number` value of what a journalled change leaves: its consent, a tombstone, or nothing.
pub fn after_value(c: &RawChange) -> Option<Small> {
    match (&c.after, c.deleted_at) {
        (Some(s), _) => Some(number_value(s)),
        (None, Some(at)) => Some(tomb_value(at, c.source)),
        (None, None) => None,
    }
}

pub fn decode_number_entry(v: &[u8]) -> Option<Entry> {
    match v {
        [1, c, rest @ ..] if rest.len() == 20 => Some(Entry::Consent(Stored {
            consent: *c == 1,
            created: time_from(&rest[0..8]),
            updated: time_from(&rest[8..16]),
            source: u32::from_be_bytes(rest[16..20].try_into().expect("4 bytes")),
        })),
        [2, rest @ ..] if rest.len() == 12 => Some(Entry::Deleted {
            at: time_from(&rest[0..8]),
            source: u32::from_be_bytes(rest[8..12].try_into().expect("4 bytes")),
        }),
        _ => None,
    }
}

/// `by_created` key: usage, consent, created, number.
pub fn created_key(number: PhoneNumber, usage: Usage, consent: bool, created: i64) -> Small {
    let mut k = Small::new(&[usage.code(), u8::from(consent)]);
    k.push(&time_bytes(created));
    k.push(&number.as_u64().to_be_bytes());
    k
}

/// The start of one (usage, consent) partition of `by_created` at a time.
pub fn created_bound(usage: Usage, consent: bool, created: i64) -> Small {
    let mut k = Small::new(&[usage.code(), u8::from(consent)]);
    k.push(&time_bytes(created));
    k
}

pub fn decode_created_key(k: &[u8]) -> Option<(PhoneNumber, Usage, bool, i64)> {
    let [u, c, rest @ ..] = k else { return None };
    if rest.len() != 16 {
        return None;
    }
    let number = PhoneNumber::from_u64(u64::from_be_bytes(rest[8..16].try_into().ok()?))?;
    Some((number, Usage::from_code(*u)?, *c == 1, time_from(&rest[0..8])))
}

/// `by_created` value: format, updated, source id.
pub fn created_value(s: &Stored) -> Small {
    let mut v = Small::new(&[1]);
    v.push(&time_bytes(s.updated));
    v.push(&s.source.to_be_bytes());
    v
}

pub fn decode_created_value(v: &[u8]) -> Option<(i64, u32)> {
    let [1, rest @ ..] = v else { return None };
    (rest.len() == 12).then(|| (time_from(&rest[0..8]), u32::from_be_bytes(rest[8..12].try_into().expect("4 bytes"))))
}

/// `audit_by_number` key: reversed digits, 0, sequence number.
pub fn audit_key(number: PhoneNumber, seq: u64) -> Small {
    let mut k = number_prefix(number);
    k.push(&seq.to_be_bytes());
    k
}

pub fn decode_audit_seq(k: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(k.get(k.len().checked_sub(8)?..)?.try_into().ok()?))
}

const JOURNAL_FORMAT: u8 = 1;
const KIND_CHANGE: u8 = 0;
/// Flags of a change's kind byte (store format 3): a place (file id and line or record, each a
/// LEB128 varint: a file of a million lines costs 4 bytes a change) and a call id (length u8, bytes)
/// follow the change.
const HAS_PLACE: u8 = 1 << 4;
const PLACE_BY_RECORD: u8 = 1 << 5;
const HAS_CALL: u8 = 1 << 6;

/// A consent (`1`), nothing (`0`), or after a deletion the tombstone's time (`2`).
fn put_stored(out: &mut Vec<u8>, s: &Option<Stored>, deleted_at: Option<i64>) {
    match (s, deleted_at) {
        (Some(s), _) => {
            out.extend_from_slice(&[1, u8::from(s.consent)]);
            out.extend_from_slice(&s.created.to_be_bytes());
            out.extend_from_slice(&s.updated.to_be_bytes());
            out.extend_from_slice(&s.source.to_be_bytes());
        }
        (None, None) => out.push(0),
        (None, Some(at)) => {
            out.push(2);
            out.extend_from_slice(&at.to_be_bytes());
        }
    }
}

/// Bytes one change takes in a journal block.
pub fn encoded_len(c: &RawChange) -> usize {
    let stored = |s: &Option<Stored>| if s.is_some() { 22 } else { 1 };
    let after = if c.after.is_none() && c.deleted_at.is_some() {
        9
    } else {
        stored(&c.after)
    };
    34 + stored(&c.before)
        + after
        + c.place.map_or(0, |p| varint_len(p.file) + varint_len(p.at))
        + c.call_id.as_ref().map_or(0, |id| 1 + call_len(id))
}

fn varint_len(v: u32) -> usize {
    (32 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn put_varint(out: &mut Vec<u8>, mut v: u32) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Bytes of a call id the journal keeps: at most 255, cut at a character boundary.
fn call_len(id: &str) -> usize {
    let mut n = id.len().min(255);
    while !id.is_char_boundary(n) {
        n -= 1;
    }
    n
}

/// A journal block: many changes in one sled value, keyed by its first sequence number.
pub fn encode_block(changes: &[RawChange]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + changes.iter().map(encoded_len).sum::<usize>());
    out.push(JOURNAL_FORMAT);
    out.extend_from_slice(&(changes.len() as u32).to_be_bytes());
    for c in changes {
        let place = match c.place {
            Some(p) if p.by_record => HAS_PLACE | PLACE_BY_RECORD,
            Some(_) => HAS_PLACE,
            None => 0,
        };
        out.push(KIND_CHANGE | place | if c.call_id.is_some() { HAS_CALL } else { 0 });
        out.extend_from_slice(&c.seq.to_be_bytes());
        out.extend_from_slice(&c.at.to_be_bytes());
        out.extend_from_slice(&c.actor.to_be_bytes());
        out.extend_from_slice(&c.source.to_be_bytes());
        out.extend_from_slice(&c.number.as_u64().to_be_bytes());
        out.push(c.usage.code());
        put_stored(&mut out, &c.before, None);
        put_stored(&mut out, &c.after, c.deleted_at);
        if let Some(p) = c.place {
            put_varint(&mut out, p.file);
            put_varint(&mut out, p.at);
        }
        if let Some(id) = &c.call_id {
            let n = call_len(id);
            out.push(n as u8);
            out.extend_from_slice(&id.as_bytes()[..n]);
        }
    }
    out
}

struct Cur<'a>(&'a [u8]);

impl Cur<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (h, t) = self.0.split_at_checked(N)?;
        self.0 = t;
        h.try_into().ok()
    }
    fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_be_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_be_bytes)
    }
    fn i64(&mut self) -> Option<i64> {
        self.take().map(i64::from_be_bytes)
    }
    fn varint(&mut self) -> Option<u32> {
        let mut v = 0u32;
        for shift in (0..35).step_by(7) {
            let b = self.u8()?;
            v |= u32::from(b & 0x7f).checked_shl(shift)?;
            if b & 0x80 == 0 {
                // The shortest form only, so one value has one encoding.
                return (shift == 0 || b != 0).then_some(v);
            }
        }
        None
    }
    /// A stored consent or nothing, and the deletion time of a tombstone.
    fn stored(&mut self) -> Option<(Option<Stored>, Option<i64>)> {
        match self.u8()? {
            0 => Some((None, None)),
            1 => Some((
                Some(Stored {
                    consent: self.u8()? == 1,
                    created: self.i64()?,
                    updated: self.i64()?,
                    source: self.u32()?,
                }),
                None,
            )),
            2 => Some((None, Some(self.i64()?))),
            _ => None,
        }
    }
}

pub fn decode_block(bytes: &[u8]) -> Option<Vec<RawChange>> {
    let mut c = Cur(bytes);
    if c.u8()? != JOURNAL_FORMAT {
        return None;
    }
    let n = c.u32()? as usize;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let kind = c.u8()?;
        if kind & 0x0f != KIND_CHANGE || kind & 0x80 != 0 {
            return None;
        }
        let (seq, at, actor, source) = (c.u64()?, c.i64()?, c.u32()?, c.u32()?);
        let (number, usage) = (PhoneNumber::from_u64(c.u64()?)?, Usage::from_code(c.u8()?)?);
        let (before, _) = c.stored()?;
        let (after, deleted_at) = c.stored()?;
        let place = if kind & HAS_PLACE != 0 {
            Some(RawPlace {
                file: c.varint()?,
                at: c.varint()?,
                by_record: kind & PLACE_BY_RECORD != 0,
            })
        } else {
            None
        };
        let call_id = if kind & HAS_CALL != 0 {
            let n = c.u8()? as usize;
            let (id, rest) = c.0.split_at_checked(n)?;
            c.0 = rest;
            Some(Arc::from(std::str::from_utf8(id).ok()?))
        } else {
            None
        };
        out.push(RawChange {
            seq,
            at,
            actor,
            source,
            number,
            usage,
            before,
            after,
            deleted_at,
            place,
            call_id,
        });
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn stored() -> impl Strategy<Value = Stored> {
        (any::<bool>(), any::<i64>(), any::<i64>(), any::<u32>()).prop_map(|(consent, created, updated, source)| Stored {
            consent,
            created,
            updated,
            source,
        })
    }

    proptest! {
        #[test]
        fn keys_and_values_round_trip(n in 1_000_000u64..999_999_999_999_999, u in 0u8..2, s in stored(), seq: u64, at: i64, before in prop::option::of(stored()), after in prop::option::of(stored()), deleted_at in prop::option::of(any::<i64>()), place in prop::option::of((any::<u32>(), any::<u32>(), any::<bool>())), call_id in prop::option::of("\\PC{0,90}")) {
            let number = PhoneNumber::from_u64(n).unwrap();
            let usage = Usage::from_code(u).unwrap();
            prop_assert_eq!(decode_number_key(&number_key(number, usage)), Some((number, usage)));
            let mut rev = Vec::new();
            number.reversed_digits(&mut rev);
            prop_assert_eq!(&*rev_digits(number), rev.as_slice());
            prop_assert_eq!(decode_number_entry(&number_value(&s)), Some(Entry::Consent(s)));
            prop_assert_eq!(decode_number_entry(&tomb_value(at, s.source)), Some(Entry::Deleted { at, source: s.source }));
            prop_assert_eq!(decode_created_key(&created_key(number, usage, s.consent, s.created)), Some((number, usage, s.consent, s.created)));
            prop_assert_eq!(decode_created_value(&created_value(&s)), Some((s.updated, s.source)));
            prop_assert_eq!(decode_audit_seq(&audit_key(number, seq)), Some(seq));
            let deleted_at = if after.is_some() { None } else { deleted_at };
            let place = place.map(|(file, at, by_record)| RawPlace { file, at, by_record });
            let c = RawChange { seq, at, actor: 1, source: s.source, number, usage, before, after, deleted_at, place, call_id: call_id.map(Arc::from) };
            let block = encode_block(&[c.clone(), c.clone()]);
            let back = decode_block(&block).unwrap();
            prop_assert_eq!(block.len(), 5 + 2 * encoded_len(&c));
            // A call id is kept to 255 bytes, cut at a character.
            let kept = c.call_id.as_deref().map(|id| &id[..call_len(id)]);
            prop_assert!(kept.is_none_or(|k| k.len() <= 255 && c.call_id.as_deref().unwrap().starts_with(k)));
            let c = RawChange { call_id: kept.map(Arc::from), ..c };
            prop_assert_eq!(back, vec![c.clone(), c]);
        }

        #[test]
        fn packed_number_keys_sort_like_number_keys(a in 1_000_000u64..999_999_999_999_999, b in 1_000_000u64..999_999_999_999_999, ua in 0u8..2, ub in 0u8..2, cut in 0u32..9) {
            // Also numbers that share trailing digits, or one ends the other.
            let b = if cut > 0 { b - b % 10u64.pow(cut) + a % 10u64.pow(cut) } else { b };
            let (a, b) = (PhoneNumber::from_u64(a).unwrap(), PhoneNumber::from_u64(b.max(1_000_000)).unwrap());
            let (ua, ub) = (Usage::from_code(ua).unwrap(), Usage::from_code(ub).unwrap());
            prop_assert_eq!(
                packed_number_key(a, ua).cmp(&packed_number_key(b, ub)),
                number_key(a, ua).cmp(&number_key(b, ub))
            );
            prop_assert_eq!(unpack_number_key(packed_number_key(a, ua)), Some((a, ua)));
            // A number whose reversed digits start with all of `a`'s.
            if let Some(longer) = 10u64.checked_pow(a.digits().len() as u32).and_then(|p| (1 + cut as u64).checked_mul(p)).and_then(|x| PhoneNumber::from_u64(x + a.as_u64())) {
                prop_assert_eq!(
                    packed_number_key(a, ub).cmp(&packed_number_key(longer, ua)),
                    number_key(a, ub).cmp(&number_key(longer, ua))
                );
            }
        }

        #[test]
        fn created_keys_sort_by_time(a: i64, b: i64) {
            let n = PhoneNumber::from_u64(491512345678).unwrap();
            prop_assert_eq!(a.cmp(&b), created_key(n, Usage::Whatsapp, true, a).cmp(&created_key(n, Usage::Whatsapp, true, b)));
        }
    }
}
