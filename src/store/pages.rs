//! A sorted map kept in pages: each sled value holds a run of small, sorted entries, keyed by the
//! lowest key the page may hold. One sled write then carries many entries, which is what makes bulk
//! imports cheap (a sled insert costs about as much whatever its size). Page layout:
//! `[PAGE_FORMAT] ([key len u8][key][value len u8][value])*`, entries sorted by key; the first page is
//! keyed by the empty key, so every key has exactly one page: the greatest page key <= it.

use sled::IVec;
use std::ops::Bound;

const PAGE_FORMAT: u8 = 1;
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
    /// A page that grows past this many bytes is split.
    max_page: usize,
}

impl PagedMap {
    pub fn new(tree: sled::Tree, max_page: usize) -> Self {
        Self { tree, max_page }
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

    /// Copies every page into `to`, each keyed by its first entry (the first page by the empty key),
    /// and leaves out empty pages: a page key is the key of an entry it once held, which a purge may
    /// have removed, and must not outlive it in a copy.
    pub fn copy_rekeyed(&self, to: &sled::Tree) -> sled::Result<u64> {
        let mut batch = sled::Batch::default();
        let (mut bytes, mut pages) = (0usize, 0u64);
        for kv in self.tree.iter() {
            let (k, v) = kv?;
            let first = Entries::new(&v)?.next().map(|(fk, _)| fk.to_vec());
            let key = match first {
                _ if k.is_empty() => Vec::new(),
                Some(fk) => fk,
                None => continue,
            };
            bytes += key.len() + v.len();
            batch.insert(key, v);
            pages += 1;
            if bytes >= 4 << 20 {
                to.apply_batch(std::mem::take(&mut batch))?;
                bytes = 0;
            }
        }
        to.apply_batch(batch)?;
        Ok(pages)
    }

    pub fn get(&self, key: &[u8]) -> sled::Result<Option<Small>> {
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
        Scan {
            pages: Some(self.tree.range(start..)),
            page: IVec::default(),
            at: 0,
            from: from.to_vec(),
            to: to.map(<[u8]>::to_vec),
            failed: None,
            done: false,
        }
    }

    /// Applies changes in order: a later change to a key wins. Changes in ascending key order (equal
    /// keys next to each other) are the fast case: each page touched is read once and written once,
    /// and the changes are consumed as they come, so they need not all be in memory. A key lower than
    /// the one before starts over at its page. Pages that grow too large are split, empty ones removed.
    /// New pages are written before the page they split from, so a concurrent reader always finds every
    /// entry.
    pub fn apply(&self, changes: impl IntoIterator<Item = Change>) -> sled::Result<()> {
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

/// A forward scan over entries in a key range, page by page.
pub struct Scan {
    pages: Option<sled::Iter>,
    page: IVec,
    at: usize,
    from: Vec<u8>,
    to: Option<Vec<u8>>,
    failed: Option<sled::Error>,
    done: bool,
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
            if self.at >= self.page.len() {
                match self.pages.as_mut().and_then(Iterator::next) {
                    None => {
                        self.done = true;
                        return None;
                    }
                    Some(Err(e)) => {
                        self.done = true;
                        return Some(Err(e));
                    }
                    Some(Ok((_, page))) => {
                        if let Err(e) = Entries::new(&page) {
                            self.done = true;
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
            let (start, end) = (self.at, it.at);
            self.at = end;
            if k < self.from.as_slice() {
                continue;
            }
            if self.to.as_deref().is_some_and(|t| k >= t) {
                self.done = true;
                return None;
            }
            let (k, v) = Entries {
                bytes: &self.page[..end],
                at: start,
            }
            .next()
            .expect("entry just read");
            return Some(Ok((k, v)));
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
        PagedMap::new(db.open_tree("t").unwrap(), max_page)
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
