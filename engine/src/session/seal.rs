//! A session record as the shared store holds it: sealed, so that the store alone yields no
//! token.
//!
//! A handle carries two secrets: the session id, whose digest names the record in the store, and
//! a record secret that never leaves the handle. A record is sealed with AES-256-GCM under a key
//! derived (HKDF-SHA256) from the record secret and a cluster key: opening it needs both the
//! client's handle and the cluster's key list. The key list comes from a Secret: the first key
//! seals, every key opens, so a new key is rolled in first and an old one dropped once every
//! record sealed with it has been sealed again or has expired.
//!
//! A record is `SQS1 ‖ key id (8) ‖ generation (8, big-endian) ‖ nonce (12) ‖ ciphertext`. The
//! header is authenticated with the session id: a record moved to another session's name, or
//! rolled back to another generation, does not open.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hkdf::Hkdf;
use sha2::{Digest, Sha256};

const MAGIC: &[u8; 4] = b"SQS1";
const HEADER: usize = 4 + 8 + 8 + 12;
const INFO: &[u8] = b"sqe session record";

/// The two secrets of a handle.
pub(crate) struct HandleSecrets {
    /// Names the record (by its digest) and is bound into its seal.
    pub(crate) sid: [u8; 16],
    /// Opens the record; only the handle carries it.
    pub(crate) record: [u8; 32],
}

impl HandleSecrets {
    pub(crate) fn generate() -> Self {
        Self {
            sid: rand::random(),
            record: rand::random(),
        }
    }

    /// The store's name for the record: the session id's digest, never the id.
    pub(crate) fn store_key(&self) -> String {
        hex::encode(Sha256::digest(self.sid))
    }
}

/// The cluster's keys, the first sealing.
pub(crate) struct ClusterKeys {
    keys: Vec<([u8; 8], [u8; 32])>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum SealError {
    #[error("no cluster key is configured")]
    NoKeys,
    #[error("a cluster key is {0} bytes; each must be 32")]
    KeyLength(usize),
    #[error("line {0} of the cluster key file is not base64")]
    NotBase64(usize),
    #[error("the session record is not one this engine wrote")]
    Malformed,
    #[error("the session record was sealed with a cluster key that is no longer configured")]
    RetiredKey,
    #[error("the session record does not open with this handle")]
    Refused,
}

/// What opening a record found. Its `Debug` leaves the plaintext (tokens) out.
#[derive(PartialEq, Eq)]
pub(crate) struct Opened {
    pub(crate) plaintext: Vec<u8>,
    pub(crate) generation: u64,
    /// Sealed with a key other than the first: seal it again on the next write.
    pub(crate) reseal: bool,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field("generation", &self.generation)
            .field("reseal", &self.reseal)
            .finish_non_exhaustive()
    }
}

fn key_id(key: &[u8; 32]) -> [u8; 8] {
    let digest = Sha256::digest(key);
    let mut id = [0u8; 8];
    id.copy_from_slice(&digest[..8]);
    id
}

impl ClusterKeys {
    pub(crate) fn new(keys: Vec<[u8; 32]>) -> Result<Self, SealError> {
        if keys.is_empty() {
            return Err(SealError::NoKeys);
        }
        Ok(Self {
            keys: keys.into_iter().map(|k| (key_id(&k), k)).collect(),
        })
    }

    /// Keys as raw bytes of any length, each checked.
    pub(crate) fn from_bytes(keys: &[Vec<u8>]) -> Result<Self, SealError> {
        let keys = keys
            .iter()
            .map(|k| <[u8; 32]>::try_from(k.as_slice()).map_err(|_| SealError::KeyLength(k.len())))
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(keys)
    }

    /// The keys of a key file: one base64 key per line, the first sealing; blank lines and
    /// lines starting with `#` are skipped. Errors name the line, never its text.
    pub(crate) fn parse(text: &str) -> Result<Self, SealError> {
        use base64::Engine as _;
        let mut keys = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let key = base64::engine::general_purpose::STANDARD
                .decode(line)
                .map_err(|_| SealError::NotBase64(n + 1))?;
            keys.push(key);
        }
        Self::from_bytes(&keys)
    }

    fn cipher(cluster: &[u8; 32], handle: &HandleSecrets) -> Aes256Gcm {
        let mut key = [0u8; 32];
        Hkdf::<Sha256>::new(Some(cluster), &handle.record)
            .expand(INFO, &mut key)
            .expect("32 bytes is a valid HKDF-SHA256 length");
        Aes256Gcm::new(&key.into())
    }

    pub(crate) fn seal(
        &self,
        handle: &HandleSecrets,
        generation: u64,
        plaintext: &[u8],
    ) -> Vec<u8> {
        let (id, cluster) = &self.keys[0];
        let nonce: [u8; 12] = rand::random();
        let mut record = Vec::with_capacity(HEADER + plaintext.len() + 16);
        record.extend_from_slice(MAGIC);
        record.extend_from_slice(id);
        record.extend_from_slice(&generation.to_be_bytes());
        record.extend_from_slice(&nonce);
        let aad = [&handle.sid[..], &record[..HEADER]].concat();
        let sealed = Self::cipher(cluster, handle)
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .expect("AES-GCM seals any plaintext under 64 GiB");
        record.extend_from_slice(&sealed);
        record
    }

    pub(crate) fn open(&self, handle: &HandleSecrets, record: &[u8]) -> Result<Opened, SealError> {
        if record.len() < HEADER + 16 || &record[..4] != MAGIC {
            return Err(SealError::Malformed);
        }
        let id: [u8; 8] = record[4..12].try_into().map_err(|_| SealError::Malformed)?;
        let generation = u64::from_be_bytes(
            record[12..20]
                .try_into()
                .map_err(|_| SealError::Malformed)?,
        );
        let nonce: [u8; 12] = record[20..HEADER]
            .try_into()
            .map_err(|_| SealError::Malformed)?;
        let (position, (_, cluster)) = self
            .keys
            .iter()
            .enumerate()
            .find(|(_, (kid, _))| *kid == id)
            .ok_or(SealError::RetiredKey)?;
        let aad = [&handle.sid[..], &record[..HEADER]].concat();
        let plaintext = Self::cipher(cluster, handle)
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: &record[HEADER..],
                    aad: &aad,
                },
            )
            .map_err(|_| SealError::Refused)?;
        Ok(Opened {
            plaintext,
            generation,
            reseal: position != 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &[u8] = b"{\"access\":\"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln\"}";

    fn keys(bytes: &[u8]) -> ClusterKeys {
        ClusterKeys::new(bytes.iter().map(|b| [*b; 32]).collect()).unwrap()
    }

    #[test]
    fn a_record_opens_with_its_handle_and_the_cluster_key_and_shows_no_token() {
        let handle = HandleSecrets::generate();
        let record = keys(&[1]).seal(&handle, 7, TOKEN);
        assert!(!record.windows(3).any(|w| w == b"eyJ"));
        let opened = keys(&[1]).open(&handle, &record).unwrap();
        assert_eq!(opened.plaintext, TOKEN);
        assert_eq!(opened.generation, 7);
        assert!(!opened.reseal);
    }

    #[test]
    fn another_handle_or_another_cluster_opens_nothing() {
        let handle = HandleSecrets::generate();
        let record = keys(&[1]).seal(&handle, 1, TOKEN);
        let other = HandleSecrets::generate();
        assert_eq!(keys(&[1]).open(&other, &record), Err(SealError::Refused));
        let same_sid = HandleSecrets {
            sid: handle.sid,
            record: other.record,
        };
        assert_eq!(keys(&[1]).open(&same_sid, &record), Err(SealError::Refused));
        let same_record = HandleSecrets {
            sid: other.sid,
            record: handle.record,
        };
        assert_eq!(
            keys(&[1]).open(&same_record, &record),
            Err(SealError::Refused)
        );
        assert_eq!(
            keys(&[2]).open(&handle, &record),
            Err(SealError::RetiredKey)
        );
    }

    #[test]
    fn a_header_changed_in_the_store_does_not_open() {
        let handle = HandleSecrets::generate();
        let mut record = keys(&[1]).seal(&handle, 3, TOKEN);
        record[19] ^= 1; // generation 3 → 2
        assert_eq!(keys(&[1]).open(&handle, &record), Err(SealError::Refused));
        assert_eq!(keys(&[1]).open(&handle, b"SQS1"), Err(SealError::Malformed));
        assert_eq!(
            keys(&[1]).open(&handle, &[0u8; 64]),
            Err(SealError::Malformed)
        );
    }

    #[test]
    fn rotation_opens_old_records_until_their_key_is_dropped() {
        let handle = HandleSecrets::generate();
        let old = keys(&[1]).seal(&handle, 1, TOKEN);
        let rolled = keys(&[2, 1]);
        let opened = rolled.open(&handle, &old).unwrap();
        assert!(opened.reseal, "sealed with the second key: seal again");
        let resealed = rolled.seal(&handle, 2, &opened.plaintext);
        assert!(!rolled.open(&handle, &resealed).unwrap().reseal);
        let dropped = keys(&[2]);
        assert_eq!(dropped.open(&handle, &old), Err(SealError::RetiredKey));
        assert_eq!(dropped.open(&handle, &resealed).unwrap().plaintext, TOKEN);
    }

    #[test]
    fn keys_must_be_32_bytes_and_at_least_one() {
        assert_eq!(ClusterKeys::from_bytes(&[]).err(), Some(SealError::NoKeys));
        assert_eq!(
            ClusterKeys::from_bytes(&[vec![0; 16]]).err(),
            Some(SealError::KeyLength(16))
        );
    }

    #[test]
    fn a_key_file_lists_base64_keys_the_first_sealing() {
        use base64::Engine as _;
        let b64 = |b: u8| base64::engine::general_purpose::STANDARD.encode([b; 32]);
        let file = format!("# rolled in first\n{}\n\n{}\n", b64(2), b64(1));
        let parsed = ClusterKeys::parse(&file).unwrap();
        let handle = HandleSecrets::generate();
        let sealed = parsed.seal(&handle, 1, TOKEN);
        assert!(!keys(&[2]).open(&handle, &sealed).unwrap().reseal);
        assert!(
            parsed
                .open(&handle, &keys(&[1]).seal(&handle, 1, TOKEN))
                .unwrap()
                .reseal
        );
        assert_eq!(
            ClusterKeys::parse("# none\n").err(),
            Some(SealError::NoKeys)
        );
        let bad = ClusterKeys::parse(&format!("{}\nnot base64!\n", b64(1))).err();
        assert_eq!(bad, Some(SealError::NotBase64(2)));
        assert_eq!(
            ClusterKeys::parse("AAAA").err(),
            Some(SealError::KeyLength(3))
        );
    }

    #[test]
    fn the_store_names_a_record_by_the_session_ids_digest() {
        let handle = HandleSecrets::generate();
        let name = handle.store_key();
        assert_eq!(name.len(), 64);
        assert!(!name.contains(&hex::encode(handle.sid)));
    }
}
