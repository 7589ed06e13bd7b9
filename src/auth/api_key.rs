//! The API key format: `pal_` + 30 base62 random characters + 6 base62 characters of a
//! CRC32 over everything before them (GitHub's token layout). 30 characters from 62 are
//! 178 random bits; the checksum lets a typo -- or a secret scanner's false positive --
//! be caught without a database query. Only the SHA-256 of a key is stored, plus its
//! first 8 characters (`pal_` and 4 random ones) to tell keys apart in a list.

use rand::{Rng, rngs::OsRng};

pub const PREFIX: &str = "pal_";
const RANDOM_LEN: usize = 30;
const CHECKSUM_LEN: usize = 6;
/// The length of every key.
pub const LEN: usize = PREFIX.len() + RANDOM_LEN + CHECKSUM_LEN;
/// The length of the non-secret display start (`pal_Ab12`).
pub const START_LEN: usize = PREFIX.len() + 4;

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A key in the right format with a valid checksum. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeySecret(String);

impl std::fmt::Debug for ApiKeySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeySecret({}…)", self.start())
    }
}

/// Why a string is not a key (before any database work).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("an API key starts with `pal_`")]
    Prefix,
    #[error("an API key is {LEN} characters of `pal_` and letters and digits")]
    Length,
    #[error("the API key's checksum does not match: it was mistyped or truncated")]
    Checksum,
}

/// CRC-32 (IEEE 802.3, as zlib and GitHub's tokens use).
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

/// `n` in base62, left-padded to 6 characters (62^6 > 2^32).
fn base62_checksum(mut n: u32) -> [u8; CHECKSUM_LEN] {
    let mut out = [ALPHABET[0]; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(n % 62) as usize];
        n /= 62;
    }
    out
}

impl ApiKeySecret {
    /// A new random key.
    pub fn generate() -> Self {
        let mut key = String::with_capacity(LEN);
        key.push_str(PREFIX);
        for _ in 0..RANDOM_LEN {
            key.push(char::from(ALPHABET[OsRng.gen_range(0..ALPHABET.len())]));
        }
        let checksum = base62_checksum(crc32(key.as_bytes()));
        key.push_str(std::str::from_utf8(&checksum).expect("ASCII"));
        Self(key)
    }

    /// Checks the format and checksum.
    pub fn parse(s: &str) -> Result<Self, FormatError> {
        if !s.starts_with(PREFIX) {
            return Err(FormatError::Prefix);
        }
        if s.len() != LEN || !s[PREFIX.len()..].bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(FormatError::Length);
        }
        let (body, checksum) = s.split_at(LEN - CHECKSUM_LEN);
        if base62_checksum(crc32(body.as_bytes())) != checksum.as_bytes() {
            return Err(FormatError::Checksum);
        }
        Ok(Self(s.to_owned()))
    }

    /// True when `s` claims to be a key (it has the prefix), valid or not.
    pub fn looks_like(s: &str) -> bool {
        s.starts_with(PREFIX)
    }

    /// The secret, to send to the database (which stores only its SHA-256) or to show
    /// once to its creator.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The non-secret display start, e.g. `pal_Ab12`.
    pub fn start(&self) -> &str {
        &self.0[..START_LEN]
    }

    /// SHA-256 of the key: what the database stores.
    pub fn hash(&self) -> Vec<u8> {
        use sha2::{Digest, Sha256};
        Sha256::digest(self.0.as_bytes()).to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn generated_keys_parse_and_any_one_character_typo_is_caught() {
        let key = ApiKeySecret::generate();
        let s = key.expose().to_owned();
        assert_eq!(s.len(), LEN);
        assert_eq!(ApiKeySecret::parse(&s), Ok(key.clone()));
        assert_eq!(key.start(), &s[..8]);
        assert!(
            !format!("{key:?}").contains(&s[8..]),
            "Debug hides the secret"
        );
        // Every single-character substitution in the random part or checksum.
        for i in PREFIX.len()..LEN {
            for &c in ALPHABET.iter() {
                if s.as_bytes()[i] == c {
                    continue;
                }
                let mut typo = s.clone().into_bytes();
                typo[i] = c;
                let typo = String::from_utf8(typo).unwrap();
                assert_eq!(
                    ApiKeySecret::parse(&typo),
                    Err(FormatError::Checksum),
                    "{typo}"
                );
            }
        }
        assert_eq!(
            ApiKeySecret::parse(&s.replacen("pal_", "pat_", 1)),
            Err(FormatError::Prefix)
        );
        assert_eq!(ApiKeySecret::parse(&s[..LEN - 1]), Err(FormatError::Length));
        assert_eq!(
            ApiKeySecret::parse(&format!("{}-", &s[..LEN - 1])),
            Err(FormatError::Length)
        );
    }

    #[test]
    fn keys_differ() {
        assert_ne!(ApiKeySecret::generate(), ApiKeySecret::generate());
    }
}
