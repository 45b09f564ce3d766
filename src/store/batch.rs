//! Incoming changes held compactly (32 bytes each) until the store decides them. An import gathers a
//! chunk of them at a time, so this is most of an import's own memory.

use super::keys;
use crate::domain::{Incoming, Op, Timestamp};

/// Incoming changes for one [`Store::apply_batch`](super::Store::apply_batch), in arrival order.
#[derive(Debug, Default)]
pub struct Batch {
    items: Vec<Packed>,
    /// The files of the changes' places, by index.
    files: Vec<Box<str>>,
    /// Reserved when the first change arrives after the memory was given back.
    reserve: usize,
}

/// One incoming change: packed `by_number` key, the op's times and flags, and its place in the batch.
#[derive(Debug, Clone, Copy)]
struct Packed {
    key: u64,
    t1: i64,
    t2: i64,
    ordinal: u32,
    /// Where the change was read: file index | [`BY_RECORD`] ([`NOWHERE`]: not known), and line or
    /// record. Kept here rather than beside, as the changes are decided in key order.
    file: u32,
    at: u32,
    flags: u8,
}

const KIND: u8 = 0b11;
const SET: u8 = 0;
const DELETE: u8 = 1;
const TOGGLE: u8 = 2;
const CONSENT: u8 = 1 << 2;
const HAS_T1: u8 = 1 << 3;
const HAS_T2: u8 = 1 << 4;

const NOWHERE: u32 = u32::MAX;
const BY_RECORD: u32 = 1 << 31;

/// Where a change was read: the index of its file among the batch's files, and its line, or its
/// record when the format has no lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Place {
    pub file: usize,
    pub at: u32,
    pub by_record: bool,
}

impl Batch {
    /// Memory one change takes in a batch, in bytes.
    pub const BYTES_PER_CHANGE: usize = std::mem::size_of::<Packed>();

    /// A batch that reserves room for `n` changes when it fills.
    pub fn with_capacity(n: usize) -> Self {
        Batch {
            items: Vec::new(),
            files: Vec::new(),
            reserve: n,
        }
    }

    /// Adds a change read from `file` at `line` (or, in a format without lines, as its `record`th
    /// record), which its audit entry will name. Lines and records past 2^31 are not kept.
    pub fn push_from(&mut self, inc: &Incoming, file: &str, line: Option<u64>, record: u64) {
        let f = match self.files.iter().rposition(|f| **f == *file) {
            Some(f) => f,
            None => {
                self.files.push(file.into());
                self.files.len() - 1
            }
        };
        let place = match (line, u32::try_from(f)) {
            (Some(l), Ok(f)) if l < u64::from(BY_RECORD) && f < BY_RECORD => (f, l as u32),
            (None, Ok(f)) if record < u64::from(BY_RECORD) && f < BY_RECORD => (f | BY_RECORD, record as u32),
            _ => (NOWHERE, 0),
        };
        self.push_at(inc, place);
    }

    pub fn push(&mut self, inc: &Incoming) {
        self.push_at(inc, (NOWHERE, 0));
    }

    fn push_at(&mut self, inc: &Incoming, place: (u32, u32)) {
        if self.items.capacity() == 0 {
            self.items.reserve_exact(self.reserve);
        }
        let time = |t: Option<Timestamp>, has: u8| t.map_or((0, 0), |t| (t.millis(), has));
        let ((t1, h1), (t2, h2), kind) = match inc.op {
            Op::Set {
                consent,
                created_at,
                updated_at,
            } => (
                time(created_at, HAS_T1),
                time(updated_at, HAS_T2),
                SET | if consent { CONSENT } else { 0 },
            ),
            Op::Delete { at } => (time(at, HAS_T1), (0, 0), DELETE),
            Op::Toggle => ((0, 0), (0, 0), TOGGLE),
        };
        self.items.push(Packed {
            key: keys::packed_number_key(inc.number, inc.usage),
            t1,
            t2,
            ordinal: u32::try_from(self.items.len()).expect("fewer than 2^32 changes in a batch"),
            file: place.0,
            at: place.1,
            flags: kind | h1 | h2,
        });
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Puts the changes in key order; changes to one consent keep their arrival order.
    pub(super) fn sort(&mut self) {
        self.items.sort_unstable_by_key(|p| (p.key, p.ordinal));
    }

    /// The changes as (place in arrival order, packed key, change, where it was read).
    pub(super) fn iter(&self) -> impl Iterator<Item = (usize, u64, Incoming, Option<Place>)> + '_ {
        self.items.iter().map(|p| {
            let (number, usage) = keys::unpack_number_key(p.key).expect("packed from a valid number");
            let time = |t: i64, has: u8| (p.flags & has != 0).then(|| Timestamp::from_millis(t));
            let op = match p.flags & KIND {
                SET => Op::Set {
                    consent: p.flags & CONSENT != 0,
                    created_at: time(p.t1, HAS_T1),
                    updated_at: time(p.t2, HAS_T2),
                },
                DELETE => Op::Delete { at: time(p.t1, HAS_T1) },
                _ => Op::Toggle,
            };
            let place = (p.file != NOWHERE).then_some(Place {
                file: (p.file & !BY_RECORD) as usize,
                at: p.at,
                by_record: p.file & BY_RECORD != 0,
            });
            (p.ordinal as usize, p.key, Incoming { number, usage, op }, place)
        })
    }

    /// The files changes were read from, by the index their [`Place`]s give.
    pub(super) fn files(&self) -> &[Box<str>] {
        &self.files
    }

    /// Empties the batch and gives its memory back.
    pub(super) fn release(&mut self) {
        self.items = Vec::new();
        self.files = Vec::new();
    }
}

impl From<&[Incoming]> for Batch {
    fn from(changes: &[Incoming]) -> Self {
        let mut b = Batch::with_capacity(changes.len());
        for c in changes {
            b.push(c);
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{PhoneNumber, Usage};

    #[test]
    fn changes_come_back_in_key_order_and_as_they_went_in() {
        let n = |d: u64| PhoneNumber::from_u64(d).unwrap();
        let t = |ms: i64| Some(Timestamp::from_millis(ms));
        let changes = [
            Incoming {
                number: n(491512345678),
                usage: Usage::Whatsapp,
                op: Op::Set {
                    consent: true,
                    created_at: t(-5),
                    updated_at: None,
                },
            },
            Incoming {
                number: n(33123456789),
                usage: Usage::CallRecording,
                op: Op::Delete { at: t(7) },
            },
            Incoming {
                number: n(491512345678),
                usage: Usage::Whatsapp,
                op: Op::Toggle,
            },
            Incoming {
                number: n(491512345678),
                usage: Usage::CallRecording,
                op: Op::Set {
                    consent: false,
                    created_at: None,
                    updated_at: t(i64::MAX),
                },
            },
        ];
        let mut b = Batch::from(&changes[..]);
        assert_eq!(Batch::BYTES_PER_CHANGE, 40);
        b.sort();
        let got: Vec<_> = b.iter().map(|(i, _, c, _)| (i, c)).collect();
        // Reversed digits: 8765… (+49…) before 9876… (+33…); a number's usages together, in code
        // order; two changes to one consent in arrival order.
        let order: Vec<usize> = got.iter().map(|(i, _)| *i).collect();
        assert_eq!(order, vec![3, 0, 2, 1]);
        for (i, c) in got {
            assert_eq!(c, changes[i]);
        }
        b.release();
        assert!(b.is_empty());
    }

    #[test]
    fn changes_keep_where_they_were_read() {
        let n = |d: u64| PhoneNumber::from_u64(d).unwrap();
        let inc = |d| Incoming {
            number: n(d),
            usage: Usage::Whatsapp,
            op: Op::Toggle,
        };
        let mut b = Batch::default();
        b.push_from(&inc(491512345679), "a.csv", Some(2), 1);
        b.push(&inc(491512345678));
        b.push_from(&inc(491512345677), "b.json", None, 7);
        b.push_from(&inc(491512345676), "a.csv", Some(u64::MAX), 9);
        b.sort();
        let places: Vec<_> = b
            .iter()
            .map(|(i, _, _, p)| (i, p.map(|p| (&*b.files()[p.file], p.at, p.by_record))))
            .collect();
        assert_eq!(
            places,
            [(3, None), (2, Some(("b.json", 7, true))), (1, None), (0, Some(("a.csv", 2, false)))],
            "a line too large to keep is not kept"
        );
    }
}
