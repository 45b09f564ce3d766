//! What sync keeps per connector: its state (watermark, pushed position, batch in flight, recent runs),
//! skipped ticks, the files it has imported, refused records (dead letters) and refused push batches,
//! erasures still owed and erasures done; and the store's id, the start of idempotency keys.
//! Values are JSON (format byte first); the sync module owns their shape, the store only keeps them.

use super::{Result, SledStore, StoreError};
use serde::{de::DeserializeOwned, Serialize};

const SYNC_FORMAT: u8 = 1;

fn key(connector: &str, kind: &str, id: &[u8]) -> Vec<u8> {
    [connector.as_bytes(), &[0], kind.as_bytes(), &[0], id].concat()
}

/// A sync entry as both stores keep it: format byte, JSON.
pub(super) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    super::encode_json(SYNC_FORMAT, value)
}

pub(super) fn decode<T: DeserializeOwned>(v: &[u8]) -> Result<T> {
    super::decode_json(SYNC_FORMAT, v, "sync entry")
}

impl SledStore {
    /// This store's id: random, made once and kept (`meta` `store_id`), so idempotency keys of a store
    /// made again never repeat an old store's.
    pub fn store_id(&self) -> Result<String> {
        if let Some(id) = self.g().meta.get("store_id")? {
            return Ok(String::from_utf8_lossy(&id).into_owned());
        }
        let mut raw = [0u8; 8];
        getrandom::getrandom(&mut raw).map_err(|e| StoreError::Corrupt(format!("no randomness for the store id: {e}")))?;
        let id = hex::encode(raw);
        match self
            .g()
            .meta
            .compare_and_swap("store_id", None as Option<&[u8]>, Some(id.as_bytes()))?
        {
            Ok(()) => {
                self.g().meta.flush()?;
                Ok(id)
            }
            Err(current) => Ok(String::from_utf8_lossy(&current.current.unwrap_or_default()).into_owned()),
        }
    }

    /// A connector's entry of one kind (`state`, `ticks`, `file`, `dead`, `refused`, `erase`, `erased`)
    /// and id (`deadpart`: raw bytes, see [`SledStore::sync_get_bytes`]).
    pub fn sync_get<T: DeserializeOwned>(&self, connector: &str, kind: &str, id: &[u8]) -> Result<Option<T>> {
        self.g().sync.get(key(connector, kind, id))?.map(|v| decode(&v)).transpose()
    }

    /// Writes an entry and flushes: what sync records must survive a crash.
    pub fn sync_put<T: Serialize>(&self, connector: &str, kind: &str, id: &[u8], value: &T) -> Result<()> {
        self.g().sync.insert(key(connector, kind, id), encode(value))?;
        self.g().sync.flush()?;
        Ok(())
    }

    /// Writes raw bytes (not flushed: [`SledStore::sync_put`] after them flushes all).
    pub fn sync_put_bytes(&self, connector: &str, kind: &str, id: &[u8], bytes: &[u8]) -> Result<()> {
        self.g().sync.insert(key(connector, kind, id), bytes)?;
        Ok(())
    }

    pub fn sync_get_bytes(&self, connector: &str, kind: &str, id: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.g().sync.get(key(connector, kind, id))?.map(|v| v.to_vec()))
    }

    /// Removes every entry of a kind whose id starts with `prefix`; flushed.
    pub fn sync_remove_prefix(&self, connector: &str, kind: &str, prefix: &[u8]) -> Result<usize> {
        let keys: Vec<sled::IVec> = self
            .g()
            .sync
            .scan_prefix(key(connector, kind, prefix))
            .keys()
            .collect::<std::result::Result<_, _>>()?;
        for k in &keys {
            self.g().sync.remove(k)?;
        }
        self.g().sync.flush()?;
        Ok(keys.len())
    }

    pub fn sync_remove(&self, connector: &str, kind: &str, id: &[u8]) -> Result<bool> {
        let found = self.g().sync.remove(key(connector, kind, id))?.is_some();
        self.g().sync.flush()?;
        Ok(found)
    }

    /// A connector's entries of one kind, by id: `(id, value)`.
    pub fn sync_list<T: DeserializeOwned>(&self, connector: &str, kind: &str) -> Result<Vec<(Vec<u8>, T)>> {
        let prefix = key(connector, kind, &[]);
        self.g()
            .sync
            .scan_prefix(&prefix)
            .map(|kv| {
                let (k, v) = kv?;
                Ok((k[prefix.len()..].to_vec(), decode(&v)?))
            })
            .collect()
    }

    /// The next id for a connector's entries of one kind (ascending, big-endian u64).
    pub fn sync_next_id(&self, connector: &str, kind: &str) -> Result<u64> {
        let prefix = key(connector, kind, &[]);
        Ok(self
            .g()
            .sync
            .scan_prefix(&prefix)
            .keys()
            .next_back()
            .transpose()?
            .and_then(|k| k[prefix.len()..].try_into().ok())
            .map_or(1, |b| u64::from_be_bytes(b) + 1))
    }
}
