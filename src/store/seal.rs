//! Sealed numbers. What a purge must keep of a number for a while — the erasures still owed to other
//! systems (we must tell them which number), the marker of a purge in progress — is kept encrypted
//! (ChaCha20-Poly1305) under a key of that purge's own, kept apart in `meta` (`seal:<hash>`), and the
//! key is destroyed when nothing needs the number any more. No cleartext of the number is written.

use super::{Result, SledStore, StoreError};
use crate::domain::PhoneNumber;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};

pub(super) fn key_name(hash: &str) -> String {
    format!("seal:{hash}")
}

fn random<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::getrandom(&mut b).map_err(|e| StoreError::Corrupt(format!("no randomness for a seal: {e}")))?;
    Ok(b)
}

/// `number` sealed under `key` for the purge whose keyed hash is `hash`: hex of nonce and ciphertext.
pub(super) fn seal_with(key: &[u8], hash: &str, number: PhoneNumber) -> Result<String> {
    let sealing = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, key).map_err(|_| StoreError::Corrupt("seal key".into()))?);
    let nonce = random::<NONCE_LEN>()?;
    let mut text = number.as_u64().to_be_bytes().to_vec();
    sealing
        .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(hash.as_bytes()), &mut text)
        .map_err(|_| StoreError::Corrupt("cannot seal".into()))?;
    Ok(hex::encode([&nonce[..], &text].concat()))
}

/// The number [`seal_with`] sealed.
pub(super) fn open_with(key: &[u8], hash: &str, sealed: &str) -> Result<PhoneNumber> {
    let bytes = hex::decode(sealed).map_err(|_| StoreError::Corrupt("sealed number".into()))?;
    if bytes.len() < NONCE_LEN {
        return Err(StoreError::Corrupt("sealed number".into()));
    }
    let (nonce, text) = bytes.split_at(NONCE_LEN);
    let opening = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, key).map_err(|_| StoreError::Corrupt("seal key".into()))?);
    let mut text = text.to_vec();
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| StoreError::Corrupt("sealed number".into()))?;
    let plain = opening
        .open_in_place(nonce, Aad::from(hash.as_bytes()), &mut text)
        .map_err(|_| StoreError::Corrupt("a sealed number does not open with its key".into()))?;
    let raw: [u8; 8] = plain.try_into().map_err(|_| StoreError::Corrupt("sealed number".into()))?;
    PhoneNumber::from_u64(u64::from_be_bytes(raw)).ok_or_else(|| StoreError::Corrupt("sealed number".into()))
}

/// A new key for [`seal_with`].
pub(super) fn new_key() -> Result<[u8; 32]> {
    random::<32>()
}

impl SledStore {
    /// The number sealed under the key of its purge (`hash`: the number's keyed hash), made on first
    /// use: hex of nonce and ciphertext.
    pub fn seal(&self, hash: &str, number: PhoneNumber) -> Result<String> {
        let name = key_name(hash);
        let key = match self.g().meta.get(&name)? {
            Some(k) => k.to_vec(),
            None => {
                let k = new_key()?;
                match self.g().meta.compare_and_swap(&name, None as Option<&[u8]>, Some(&k[..]))? {
                    Ok(()) => {
                        self.g().meta.flush()?;
                        k.to_vec()
                    }
                    Err(current) => current.current.map(|c| c.to_vec()).unwrap_or_default(),
                }
            }
        };
        seal_with(&key, hash, number)
    }

    /// The number in `sealed`, while its key lives; `None` once it is destroyed.
    pub fn unseal(&self, hash: &str, sealed: &str) -> Result<Option<PhoneNumber>> {
        let Some(key) = self.g().meta.get(key_name(hash))? else {
            return Ok(None);
        };
        open_with(&key, hash, sealed).map(Some)
    }

    /// Destroys the key of a purge: what was sealed under it can no longer be read.
    pub fn destroy_seal(&self, hash: &str) -> Result<()> {
        self.g().meta.remove(key_name(hash))?;
        self.g().meta.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_number_opens_until_its_key_is_destroyed_and_holds_no_cleartext() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path(), &Default::default()).unwrap();
        let n = PhoneNumber::parse("+491511234567").unwrap();
        let sealed = s.seal("h1", n).unwrap();
        let again = s.seal("h1", n).unwrap();
        assert_ne!(sealed, again, "a fresh nonce each time");
        for form in ["491511234567", "+491511234567", "765432115194"] {
            assert!(!sealed.contains(form));
        }
        assert!(!hex::decode(&sealed).unwrap().windows(8).any(|w| w == n.as_u64().to_be_bytes()));
        assert_eq!(s.unseal("h1", &sealed).unwrap(), Some(n));
        assert!(s.unseal("h2", &sealed).unwrap().is_none(), "no key under another hash");
        s.seal("h2", n).unwrap();
        assert!(s.unseal("h2", &sealed).is_err(), "another purge's key does not open it");
        s.destroy_seal("h1").unwrap();
        assert_eq!(s.unseal("h1", &sealed).unwrap(), None);
    }
}
