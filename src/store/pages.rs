//! A sorted map kept in pages: each sled value holds a run of small, sorted entries, keyed by the
//! lowest key the page may hold. One sled write then carries many entries, which is what makes bulk
//! imports cheap (a sled insert costs about as much whatever its size). Page layout:
//! `[PAGE_FORMAT] ([key len u8][key][value len u8][value])*`, entries sorted by key; the first page is
//! keyed by the empty key, so every key has exactly one page: the greatest page key <= it.
//!
//! A few changes at a time (single writes: an agent, the IVR) would rewrite a whole page each; they go
//! to a *delta* tree instead, one small sled entry per key (`1 · value`, or `0` for a removal), which
//! reads look at first. The delta is folded into the pages before a bulk change, when it passes
//! [`FOLD_ABOVE`] entries, and by a compaction.

use sled::IVec;
use std::ops::Bound;

const PAGE_FORMAT: u8 = 1;
/// An apply of at most this many changes goes to the delta.
pub const SMALL_APPLY: usize = 64;
/// The delta is folded into the pages when it holds more keys than this. A fold rewrites every page
/// the delta touches (all of them, for a delta this large), so the bound keeps that cost under 1 KB a
/// key; compactions fold it long before, in the daemon.
const FOLD_ABOVE: usize = 1_000_000;

fn delta_value(v: &Option<Small>) -> Vec<u8> {
    match v {
        Some(v) => [&[1u8][..], v].concat(),
        None => vec![0],
    }
}

/// A delta value: `Some(value)` set, `None` removed.
fn from_delta(v: &[u8]) -> Option<&[u8]> {
    match v.split_first() {
        Some((1, rest)) => Some(rest),
        _ => None,
    }
}
/// A page that has grown to this many times the largest page is written out (split) before more
/// changes are merged into it.
const GROW_PAGES: usize = 32;

/// A key or value of at most 32 bytes, kept inline (no allocation per entry).
#[derive(Clone, Copy, Default)]
pub struct Small {
    len: u8,
    buf: [u8; 32],
}

impl Small {
    pub fn new(bytes: &[u8]) -> Self {
        let mut s = Small {
            len: bytes.len() as u8,
            buf: [0; 32],
        };
        s.buf[..bytes.len()].copy_from_slice(bytes);
        s
    }

    pub fn push(&mut self, bytes: &[u8]) {
        let at = self.len as usize;
        self.buf[at..at + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len() as u8;
    }
}

impl std::ops::Deref for Small {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }
}

impl PartialEq for Small {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for Small {}

impl PartialOrd for Small {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Small {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (**self).cmp(&**other)
    }
}

impl std::fmt::Debug for Small {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", &**self)
    }
}

/// One change to a paged map: set the key to a value, or remove it.
pub type Change = (Small, Option<Small>);

/// The entries of one encoded page, in order.
struct Entries<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Entries<'a> {
    fn new(page: &'a [u8]) -> Result<Self, sled::Error> {
        match page.first() {
            None => Ok(Entries { bytes: page, at: 0 }),
            Some(&PAGE_FORMAT) => Ok(Entries { bytes: page, at: 1 }),
            Some(v) => Err(sled::Error::Unsupported(format!("page format {v} is not known to this version"))),
        }
    }
}

impl<'a> Iterator for Entries<'a> {
    type Item = (&'a [u8], &'a [u8]);
    fn next(&mut self) -> Option<Self::Item> {
        let b = self.bytes;
        if self.at >= b.len() {
            return None;
        }
        let kl = b[self.at] as usize;
        let k = &b[self.at + 1..self.at + 1 + kl];
        let vs = self.at + 1 + kl;
        let vl = b[vs] as usize;
        let v = &b[vs + 1..vs + 1 + vl];
        self.at = vs + 1 + vl;
        Some((k, v))
    }
}

fn push_entry(out: &mut Vec<u8>, k: &[u8], v: &[u8]) {
    out.push(k.len() as u8);
    out.extend_from_slice(k);
    out.push(v.len() as u8);
    out.extend_from_slice(v);
}

/// A page being rebuilt: its encoded entries and where each one starts.
#[derive(Default)]
struct Merged {
    bytes: Vec<u8>,
    starts: Vec<usize>,
}

impl Merged {
    fn clear(&mut self) {
        self.bytes.clear();
        self.starts.clear();
        self.bytes.push(PAGE_FORMAT);
    }

    fn push(&mut self, k: &[u8], v: &[u8]) {
        self.starts.push(self.bytes.len());
        push_entry(&mut self.bytes, k, v);
    }

    /// Copies the old entries below the change's key, drops the old entry at it, adds the change.
    fn merge(&mut self, old: &mut std::iter::Peekable<Entries<'_>>, (k, v): &Change) {
        while let Some((ok, ov)) = old.next_if(|(ok, _)| *ok < &**k) {
            self.push(ok, ov);
        }
        old.next_if(|(ok, _)| *ok == &**k);
        if let Some(v) = v {
            self.push(k, v);
        }
    }
}

#[derive(Clone)]
pub struct PagedMap {
    tree: sled::Tree,
    /// Recent single changes, by key, over the pages.
    delta: sled::Tree,
    /// Keys in `delta` (read without a lock: a reader that sees 0 skips the delta).
    delta_keys: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// A page that grows past this many bytes is split.
    max_page: usize,
}

impl PagedMap {
    pub fn new(tree: sled::Tree, delta: sled::Tree, max_page: usize) -> Self {
        let keys = delta.len();
        Self {
            tree,
            delta,
            delta_keys: std::sync::Arc::new(keys.into()),
            max_page,
        }
    }

    fn delta_keys(&self) -> usize {
        self.delta_keys.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The delta tree (for the store's size).
    pub fn delta_tree(&self) -> &sled::Tree {
        &self.delta
    }

    /// Writes the delta into the pages and empties it.
    pub fn fold(&self) -> sled::Result<()> {
        if self.delta_keys() == 0 {
            return Ok(());
        }
        // Streamed in key order; the pages first, then the delta goes: a reader finds every value
        // all along.
        let mut failed = None;
        let changes = self.delta.iter().map_while(|kv| match kv {
            Ok((k, v)) => Some((Small::new(&k), from_delta(&v).map(Small::new))),
            Err(e) => {
                failed = Some(e);
                None
            }
        });
        self.apply_pages(changes)?;
        if let Some(e) = failed {
            return Err(e);
        }
        self.delta.clear()?;
        self.delta_keys.store(0, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    /// The page that holds `key`: (page key, page bytes, next page's key).
    fn page_for(&self, key: &[u8]) -> sled::Result<(IVec, IVec, Option<IVec>)> {
        let (pk, page) = self.tree.range(..=key).next_back().transpose()?.unwrap_or_default();
        let next = self
            .tree
            .range::<&[u8], _>((Bound::Excluded(&*pk), Bound::Unbounded))
            .next()
            .transpose()?
            .map(|(k, _)| k);
        Ok((pk, page, next))
    }

    /// The sled tree the pages are kept in.
    pub fn tree(&self) -> &sled::Tree {
        &self.tree
    }

    /// Copies the map into `to` (empty), the delta merged into the pages on the way: each page is
    /// written once, keyed by its first entry (the first page by the empty key), and empty pages are
    /// left out. So nothing the delta removed reaches `to`'s files, not even as a page key (a page key
    /// is the key of an entry the page once held, which a purge may have removed).
    pub fn copy_into(&self, to: &PagedMap) -> sled::Result<u64> {
        let mut delta = self.delta.iter().peekable();
        let mut pages = self.tree.iter().peekable();
        let mut merged = Merged::default();
        let mut written = 0;
        let mut first = true;
        loop {
            let (pk, page) = match pages.next() {
                Some(kv) => kv?,
                // A map without pages: one empty first page takes the delta.
                None if first => (IVec::default(), IVec::default()),
                None => break,
            };
            first = false;
            let next_pk = match pages.peek() {
                Some(Ok((k, _))) => Some(k.clone()),
                _ => None,
            };
            merged.clear();
            let mut old = Entries::new(&page)?.peekable();
            while let Some(d) = delta.next_if(|d| match (d, &next_pk) {
                (Ok((dk, _)), Some(n)) => dk < n,
                _ => true,
            }) {
                let (dk, dv) = d?;
                merged.merge(&mut old, &(Small::new(&dk), from_delta(&dv).map(Small::new)));
            }
            for (ok, ov) in old {
                merged.push(ok, ov);
            }
            let key = match merged.starts.first() {
                _ if pk.is_empty() => IVec::default(),
                Some(&s) => {
                    let (k, _) = Entries {
                        bytes: &merged.bytes,
                        at: s,
                    }
                    .next()
                    .expect("an entry");
                    IVec::from(k)
                }
                None => continue,
            };
            to.write_pages(&key, &merged.bytes, &merged.starts)?;
            written += 1;
        }
        Ok(written)
    }

    pub fn get(&self, key: &[u8]) -> sled::Result<Option<Small>> {
        if self.delta_keys() > 0 {
            if let Some(v) = self.delta.get(key)? {
                return Ok(from_delta(&v).map(Small::new));
            }
        }
        let Some((_, page)) = self.tree.range(..=key).next_back().transpose()? else {
            return Ok(None);
        };
        Ok(Entries::new(&page)?
            .find(|(k, _)| *k >= key)
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| Small::new(v)))
    }

    /// A reader for many lookups in ascending key order, reusing the page in hand.
    pub fn sorted_lookup(&self) -> SortedLookup<'_> {
        SortedLookup { map: self, page: None }
    }

    /// Entries with `from <= key < to` (or to the end), in key order.
    pub fn scan(&self, from: &[u8], to: Option<&[u8]>) -> Scan {
        let start = match self.tree.range(..=from).next_back() {
            Some(Ok((pk, _))) => pk,
            Some(Err(e)) => return Scan::failed(e),
            None => IVec::default(),
        };
        let delta = (self.delta_keys() > 0).then(|| match to {
            Some(t) => self.delta.range(from.to_vec()..t.to_vec()),
            None => self.delta.range(from.to_vec()..),
        });
        Scan {
            pages: Some(self.tree.range(start..)),
            page: IVec::default(),
            at: 0,
            from: from.to_vec(),
            to: to.map(<[u8]>::to_vec),
            failed: None,
            done: false,
            pages_done: false,
            delta,
            delta_head: None,
            current: None,
        }
    }

    /// Applies changes in order: a later change to a key wins. Up to [`SMALL_APPLY`] changes go to the
    /// delta, one small sled entry each; more are merged into the pages (the delta folded first).
    pub fn apply(&self, changes: impl IntoIterator<Item = Change>) -> sled::Result<()> {
        let mut changes = changes.into_iter();
        let mut few: Vec<Change> = Vec::with_capacity(SMALL_APPLY + 1);
        while few.len() <= SMALL_APPLY {
            match changes.next() {
                Some(c) => few.push(c),
                None => break,
            }
        }
        if few.len() <= SMALL_APPLY {
            for (k, v) in &few {
                if self.delta.insert(&**k, delta_value(v))?.is_none() {
                    self.delta_keys.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            }
            if self.delta_keys() > FOLD_ABOVE {
                self.fold()?;
            }
            return Ok(());
        }
        self.fold()?;
        self.apply_pages(few.into_iter().chain(changes))
    }

    /// Merges changes into the pages, in order: a later change to a key wins. Changes in ascending key
    /// order (equal keys next to each other) are the fast case: each page touched is read once and
    /// written once, and the changes are consumed as they come, so they need not all be in memory. A
    /// key lower than the one before starts over at its page. Pages that grow too large are split,
    /// empty ones removed. New pages are written before the page they split from, so a concurrent
    /// reader always finds every entry.
    fn apply_pages(&self, changes: impl IntoIterator<Item = Change>) -> sled::Result<()> {
        let mut changes = changes.into_iter().peekable();
        let mut merged = Merged::default();
        while let Some((first, _)) = changes.peek() {
            let (pk, page, next) = self.page_for(first)?;
            merged.clear();
            let mut old = Entries::new(&page)?.peekable();
            // The change in hand: the last one seen for its key wins.
            let mut held: Option<Change> = None;
            while let Some((k, _)) = changes.peek() {
                let past_page = next.as_ref().is_some_and(|n| **k >= **n);
                let backwards = held.as_ref().is_some_and(|(h, _)| k < h);
                // Many changes into one page (a young map): write what we have as pages and go on
                // from the last of them, so the page in hand stays small.
                let full = merged.bytes.len() >= GROW_PAGES * self.max_page;
                if past_page || backwards || full {
                    break;
                }
                let change = changes.next().expect("peeked");
                if let Some(h) = held.take().filter(|(hk, _)| *hk != change.0) {
                    merged.merge(&mut old, &h);
                }
                held = Some(change);
            }
            if let Some(h) = held {
                merged.merge(&mut old, &h);
            }
            for (ok, ov) in old {
                merged.push(ok, ov);
            }
            self.write_pages(&pk, &merged.bytes, &merged.starts)?;
        }
        Ok(())
    }

    /// Writes the merged entries of the page at `pk`, split into pages of about half the maximum.
    fn write_pages(&self, pk: &IVec, merged: &[u8], starts: &[usize]) -> sled::Result<()> {
        if starts.is_empty() {
            self.tree.remove(pk)?;
            return Ok(());
        }
        if merged.len() <= self.max_page {
            self.tree.insert(pk, merged)?;
            return Ok(());
        }
        let body = merged.len() - 1;
        let parts = body.div_ceil(self.max_page / 2).max(2);
        let target = body / parts;
        // Cut points: entry starts where each part begins.
        let mut cuts = vec![0usize];
        for (n, &s) in starts.iter().enumerate() {
            if s - starts[cuts[cuts.len() - 1]] >= target && cuts.len() < parts {
                cuts.push(n);
            }
        }
        let mut page = Vec::with_capacity(self.max_page);
        for (n, &c) in cuts.iter().enumerate().rev() {
            let from = starts[c];
            let to = cuts.get(n + 1).map_or(merged.len(), |&c2| starts[c2]);
            page.clear();
            page.push(PAGE_FORMAT);
            page.extend_from_slice(&merged[from..to]);
            if n == 0 {
                self.tree.insert(pk, page.as_slice())?;
            } else {
                let first_key = Entries::new(&page)?.next().map(|(k, _)| k.to_vec()).unwrap_or_default();
                self.tree.insert(first_key, page.as_slice())?;
            }
        }
        Ok(())
    }
}

/// Ascending lookups that reuse the page in hand and never go back in it.
pub struct SortedLookup<'a> {
    map: &'a PagedMap,
    page: Option<(IVec, IVec, Option<IVec>, usize)>,
}

impl SortedLookup<'_> {
    /// The value at `key`; keys must come in ascending order.
    pub fn get(&mut self, key: &[u8]) -> sled::Result<Option<Small>> {
        if self.map.delta_keys() > 0 {
            if let Some(v) = self.map.delta.get(key)? {
                return Ok(from_delta(&v).map(Small::new));
            }
        }
        let covers = |p: &(IVec, IVec, Option<IVec>, usize)| *p.0 <= *key && p.2.as_ref().is_none_or(|n| key < &**n);
        if !self.page.as_ref().is_some_and(covers) {
            let (pk, page, next) = self.map.page_for(key)?;
            let at = usize::from(!page.is_empty());
            Entries::new(&page)?;
            self.page = Some((pk, page, next, at));
        }
        let (_, page, _, at) = self.page.as_mut().expect("set above");
        let mut entries = Entries { bytes: page, at: *at };
        loop {
            let before = entries.at;
            match entries.next() {
                Some((k, _)) if k < key => continue,
                Some((k, v)) if k == key => {
                    *at = before;
                    return Ok(Some(Small::new(v)));
                }
                _ => {
                    *at = before;
                    return Ok(None);
                }
            }
        }
    }
}

/// A forward scan over entries in a key range, page by page, with the delta's entries merged in.
pub struct Scan {
    pages: Option<sled::Iter>,
    page: IVec,
    at: usize,
    from: Vec<u8>,
    to: Option<Vec<u8>>,
    failed: Option<sled::Error>,
    done: bool,
    pages_done: bool,
    /// The delta's entries in the range, and the next of them.
    delta: Option<sled::Iter>,
    delta_head: Option<(IVec, IVec)>,
    /// The delta entry last returned (borrowed until the next call).
    current: Option<(IVec, IVec)>,
}

/// What comes next in a scan.
enum Next {
    Page(usize, usize),
    Delta,
    SkipPage(usize),
    End,
}

impl Scan {
    fn failed(e: sled::Error) -> Self {
        Scan {
            pages: None,
            page: IVec::default(),
            at: 0,
            from: vec![],
            to: None,
            failed: Some(e),
            done: false,
            pages_done: true,
            delta: None,
            delta_head: None,
            current: None,
        }
    }

    /// The next page entry in the range, not consumed: its start and end in `page`.
    fn peek_page(&mut self) -> Option<sled::Result<(usize, usize)>> {
        loop {
            if self.pages_done {
                return None;
            }
            if self.at >= self.page.len() {
                match self.pages.as_mut().and_then(Iterator::next) {
                    None => {
                        self.pages_done = true;
                        return None;
                    }
                    Some(Err(e)) => {
                        self.pages_done = true;
                        return Some(Err(e));
                    }
                    Some(Ok((_, page))) => {
                        if let Err(e) = Entries::new(&page) {
                            self.pages_done = true;
                            return Some(Err(e));
                        }
                        self.at = usize::from(!page.is_empty());
                        self.page = page;
                        continue;
                    }
                }
            }
            let mut it = Entries {
                bytes: &self.page,
                at: self.at,
            };
            let (k, _) = it.next().expect("at < len");
            let end = it.at;
            if k < self.from.as_slice() {
                self.at = end;
                continue;
            }
            if self.to.as_deref().is_some_and(|t| k >= t) {
                self.pages_done = true;
                return None;
            }
            return Some(Ok((self.at, end)));
        }
    }

    /// The next entry, borrowed until the next call.
    pub fn next_entry(&mut self) -> Option<sled::Result<(&[u8], &[u8])>> {
        if let Some(e) = self.failed.take() {
            self.done = true;
            return Some(Err(e));
        }
        loop {
            if self.done {
                return None;
            }
            if self.delta_head.is_none() {
                match self.delta.as_mut().and_then(Iterator::next) {
                    Some(Ok(kv)) => self.delta_head = Some(kv),
                    Some(Err(e)) => {
                        self.done = true;
                        return Some(Err(e));
                    }
                    None => self.delta = None,
                }
            }
            let page = match self.peek_page() {
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(e));
                }
                Some(Ok(p)) => Some(p),
                None => None,
            };
            let next = match (page, &self.delta_head) {
                (None, None) => Next::End,
                (None, Some(_)) => Next::Delta,
                (Some((s, e)), None) => Next::Page(s, e),
                (Some((s, e)), Some((dk, _))) => {
                    let (pk, _) = Entries { bytes: &self.page, at: s }.next().expect("peeked");
                    match pk.cmp(dk) {
                        std::cmp::Ordering::Less => Next::Page(s, e),
                        std::cmp::Ordering::Equal => Next::SkipPage(e),
                        std::cmp::Ordering::Greater => Next::Delta,
                    }
                }
            };
            match next {
                Next::End => {
                    self.done = true;
                    return None;
                }
                Next::SkipPage(e) => {
                    // The delta's entry for this key is newer.
                    self.at = e;
                    continue;
                }
                Next::Page(s, e) => {
                    self.at = e;
                    let (k, v) = Entries {
                        bytes: &self.page[..e],
                        at: s,
                    }
                    .next()
                    .expect("entry just read");
                    return Some(Ok((k, v)));
                }
                Next::Delta => {
                    let (k, v) = self.delta_head.take().expect("a delta entry");
                    if from_delta(&v).is_none() {
                        continue;
                    }
                    self.current = Some((k, v));
                    let (k, v) = self.current.as_ref().expect("set above");
                    return Some(Ok((k, from_delta(v).expect("a set entry"))));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn map(max_page: usize) -> PagedMap {
        let db = sled::Config::new().temporary(true).open().unwrap();
        PagedMap::new(db.open_tree("t").unwrap(), db.open_tree("t.delta").unwrap(), max_page)
    }

    fn contents(m: &PagedMap) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut s = m.scan(b"", None);
        let mut out = vec![];
        while let Some(e) = s.next_entry() {
            let (k, v) = e.unwrap();
            out.push((k.to_vec(), v.to_vec()));
        }
        out
    }

    proptest! {
        #[test]
        fn behaves_like_a_btreemap(batches in prop::collection::vec(prop::collection::btree_map(prop::collection::vec(0u8..4, 0..6), prop::option::of(prop::collection::vec(any::<u8>(), 0..8)), 0..60), 1..6), from in prop::collection::vec(0u8..4, 0..4)) {
            let m = map(64);
            let mut model = BTreeMap::new();
            for batch in &batches {
                let changes: Vec<Change> = batch.iter().map(|(k, v)| (Small::new(k), v.as_deref().map(Small::new))).collect();
                m.apply(changes).unwrap();
                for (k, v) in batch {
                    match v { Some(v) => { model.insert(k.clone(), v.clone()); } None => { model.remove(k); } }
                }
            }
            let want: Vec<_> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            prop_assert_eq!(contents(&m), want);
            let mut lookup = m.sorted_lookup();
            for (k, v) in &model {
                prop_assert_eq!(m.get(k).unwrap().map(|s| s.to_vec()), Some(v.clone()));
                prop_assert_eq!(lookup.get(k).unwrap().map(|s| s.to_vec()), Some(v.clone()));
            }
            let mut s = m.scan(&from, Some(&[2, 2]));
            let mut got = vec![];
            while let Some(e) = s.next_entry() { got.push(e.unwrap().0.to_vec()); }
            let want: Vec<_> = model.keys().filter(|k| k.as_slice() >= from.as_slice() && k.as_slice() < [2u8, 2].as_slice()).cloned().collect();
            prop_assert_eq!(got, want);
        }
    }

    proptest! {
        #[test]
        fn changes_in_any_order_apply_in_turn(batches in prop::collection::vec(prop::collection::vec((prop::collection::vec(0u8..4, 0..5), prop::option::of(prop::collection::vec(any::<u8>(), 0..8))), 0..80), 1..5)) {
            let m = map(64);
            let mut model = BTreeMap::new();
            for batch in &batches {
                m.apply(batch.iter().map(|(k, v)| (Small::new(k), v.as_deref().map(Small::new)))).unwrap();
                for (k, v) in batch {
                    match v { Some(v) => { model.insert(k.clone(), v.clone()); } None => { model.remove(k); } }
                }
            }
            let want: Vec<_> = model.into_iter().collect();
            prop_assert_eq!(contents(&m), want);
        }
    }

    #[test]
    fn single_changes_go_to_the_delta_and_fold_into_the_pages() {
        let m = map(64);
        let big: Vec<Change> = (0u8..200).map(|i| (Small::new(&[i]), Some(Small::new(&[i, i])))).collect();
        m.apply(big).unwrap();
        let pages = m.tree.len();
        // A few changes: into the delta, the pages untouched; reads and scans see them.
        m.apply(vec![
            (Small::new(&[5]), None),
            (Small::new(&[7]), Some(Small::new(b"new"))),
            (Small::new(&[250]), Some(Small::new(b"x"))),
        ])
        .unwrap();
        assert_eq!((m.delta.len(), m.tree.len()), (3, pages));
        assert_eq!(m.get(&[5]).unwrap(), None);
        assert_eq!(m.get(&[7]).unwrap().map(|v| v.to_vec()), Some(b"new".to_vec()));
        let all = contents(&m);
        assert_eq!(all.len(), 200);
        assert_eq!(all.last().unwrap().0, vec![250]);
        assert!(!all.iter().any(|(k, _)| k == &vec![5]));
        // A copy merges the delta into its pages: the removed key is in no page and no page key.
        let db = sled::Config::new().temporary(true).open().unwrap();
        let copy = PagedMap::new(db.open_tree("t").unwrap(), db.open_tree("t.delta").unwrap(), 64);
        m.copy_into(&copy).unwrap();
        assert_eq!(contents(&copy), all);
        assert_eq!(copy.delta.len(), 0);
        for kv in copy.tree.iter() {
            let (k, v) = kv.unwrap();
            assert_ne!(&*k, &[5u8][..]);
            assert!(!Entries::new(&v).unwrap().any(|(ek, _)| ek == [5u8]));
        }
        // A fold writes the delta into the pages and empties it.
        m.fold().unwrap();
        assert_eq!((m.delta.len(), m.delta_keys()), (0, 0));
        assert_eq!(contents(&m), all);
    }

    #[test]
    fn big_batches_split_into_pages() {
        // 256-byte pages: the batch is far more than GROW_PAGES pages, so it is written in parts.
        for max_page in [4096, 256] {
            let m = map(max_page);
            let changes: Vec<Change> = (0u32..10_000)
                .map(|i| (Small::new(&i.to_be_bytes()), Some(Small::new(b"value"))))
                .collect();
            m.apply(changes).unwrap();
            assert!(m.tree.len() > 10, "{} pages", m.tree.len());
            assert!(m.tree.iter().all(|p| p.unwrap().1.len() <= max_page));
            assert_eq!(contents(&m).len(), 10_000);
            let removals: Vec<Change> = (0u32..10_000).map(|i| (Small::new(&i.to_be_bytes()), None)).collect();
            m.apply(removals).unwrap();
            assert_eq!(m.tree.len(), 0);
        }
    }
}
