//! Saved searches: criteria kept under a name, each belonging to the token (owner) that saved it.
//! A search may name a number or its trailing digits, so the DPO report lists them and a purge
//! removes them.

use super::{Result, SledStore};
use crate::domain::{CriteriaText, PhoneNumber, PhoneParser};
use serde::{Deserialize, Serialize};

const SEARCH_FORMAT: u8 = 1;

/// A search kept under a name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedSearch {
    pub name: String,
    pub owner: String,
    pub criteria: CriteriaText,
    pub saved_at: String,
}

impl SavedSearch {
    pub(super) fn key(owner: &str, name: &str) -> Vec<u8> {
        [owner.as_bytes(), &[0], name.as_bytes()].concat()
    }

    /// Whether the search names this number, in full or by trailing digits.
    pub fn names(&self, number: PhoneNumber) -> bool {
        let c = self.criteria.parse(&PhoneParser::default());
        let whole = self.criteria.number.as_deref() == Some(number.to_string().as_str());
        whole || c.is_ok_and(|c| c.digits.is_some_and(|d| d.matches(number)))
    }
}

/// A saved search as both stores keep it: format byte, JSON.
pub(super) fn encode(s: &SavedSearch) -> Vec<u8> {
    super::encode_json(SEARCH_FORMAT, s)
}

pub(super) fn decode(v: &[u8]) -> Result<SavedSearch> {
    super::decode_json(SEARCH_FORMAT, v, "saved search")
}

impl SledStore {
    /// Saves (or replaces) a search.
    pub fn save_search(&self, s: &SavedSearch) -> Result<()> {
        self.g().searches.insert(SavedSearch::key(&s.owner, &s.name), encode(s))?;
        self.g().searches.flush()?;
        Ok(())
    }

    /// One owner's saved searches (all owners' when `None`), by owner and name.
    pub fn saved_searches(&self, owner: Option<&str>) -> Result<Vec<SavedSearch>> {
        let prefix = owner.map(|o| [o.as_bytes(), &[0]].concat()).unwrap_or_default();
        self.g().searches.scan_prefix(prefix).map(|kv| decode(&kv?.1)).collect()
    }

    pub fn saved_search(&self, owner: &str, name: &str) -> Result<Option<SavedSearch>> {
        Ok(self.saved_searches(Some(owner))?.into_iter().find(|s| s.name == name))
    }

    /// Removes a saved search; false when there was none.
    pub fn delete_search(&self, owner: &str, name: &str) -> Result<bool> {
        let found = self.g().searches.remove(SavedSearch::key(owner, name))?.is_some();
        self.g().searches.flush()?;
        Ok(found)
    }

    /// Saved searches (of every owner) that name the number.
    pub fn searches_naming(&self, number: PhoneNumber) -> Result<Vec<SavedSearch>> {
        Ok(self.saved_searches(None)?.into_iter().filter(|s| s.names(number)).collect())
    }
}
