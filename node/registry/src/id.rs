//! Identity ids: 16 random Crockford base32 characters and one check character.
//!
//! The check character (Luhn mod 32 over the same alphabet) catches every single-character
//! typo and almost every swap of two neighbours, so a mistyped id is refused at the API
//! instead of being looked up.

use std::fmt;

use serde::de::{Deserializer, Error as _};
use serde::{Deserialize, Serialize};

/// Crockford's base32 alphabet: no I, L, O or U, so ids read aloud unambiguously.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const BODY_LEN: usize = 16;

/// A validated identity id (canonical upper-case form). Decoding (serde) accepts the canonical
/// form only, so an id read from a log entry, a record or a peer is as valid as a parsed one.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct IdentityId(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdParseError {
    #[error("identity id must be 17 characters long, got {0}")]
    Length(usize),
    #[error("identity id has a character outside Crockford base32 at position {0}")]
    Character(usize),
    #[error("identity id check character does not match (mistyped id?)")]
    Check,
}

impl IdentityId {
    /// Builds an id from 80 random bits (the leader draws them before proposing).
    pub fn from_random(bits: [u8; 10]) -> IdentityId {
        let mut value = u128::from_be_bytes({
            let mut b = [0u8; 16];
            b[6..].copy_from_slice(&bits);
            b
        });
        let mut values = [0u8; BODY_LEN + 1];
        for slot in values[..BODY_LEN].iter_mut().rev() {
            *slot = (value & 31) as u8;
            value >>= 5;
        }
        values[BODY_LEN] = check_digit(&values[..BODY_LEN]) as u8;
        IdentityId(spell(&values))
    }

    /// Parses user input: case-insensitive, and O/I/L read as 0/1/1 as Crockford prescribes.
    pub fn parse(input: &str) -> Result<IdentityId, IdParseError> {
        let length = input.chars().count();
        if length != BODY_LEN + 1 {
            return Err(IdParseError::Length(length));
        }
        let mut values = [0u8; BODY_LEN + 1];
        for (i, c) in input.chars().enumerate() {
            let c = match c.to_ascii_uppercase() {
                'O' => '0',
                'I' | 'L' => '1',
                other => other,
            };
            let value = u8::try_from(c)
                .ok()
                .and_then(|c| VALUE.get(usize::from(c)).copied())
                .filter(|&v| v != NOT_IN_ALPHABET)
                .ok_or(IdParseError::Character(i))?;
            values[i] = value;
        }
        if check_digit(&values[..BODY_LEN]) != usize::from(values[BODY_LEN]) {
            return Err(IdParseError::Check);
        }
        Ok(IdentityId(spell(&values)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for IdentityId {
    // Encoded as the plain string, like the derived newtype, so stored records read as before.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<IdentityId, D::Error> {
        let text = String::deserialize(deserializer)?;
        match IdentityId::parse(&text) {
            Ok(id) if id.0 == text => Ok(id),
            Ok(_) => Err(D::Error::custom("identity id is not in canonical form")),
            Err(e) => Err(D::Error::custom(e)),
        }
    }
}

impl fmt::Display for IdentityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

const NOT_IN_ALPHABET: u8 = u8::MAX;

/// Each ASCII character's value in `ALPHABET`, or `NOT_IN_ALPHABET`. (Ids are decoded with
/// every log entry and record that holds one, so this is a table, not a search.)
const VALUE: [u8; 128] = {
    let mut table = [NOT_IN_ALPHABET; 128];
    let mut i = 0;
    while i < ALPHABET.len() {
        table[ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    table
};

/// The canonical text of an id given as values in `ALPHABET`.
fn spell(values: &[u8]) -> String {
    values
        .iter()
        .map(|&v| char::from(ALPHABET[usize::from(v)]))
        .collect()
}

/// Luhn mod N (N = 32) check character over `body`, given as values in `ALPHABET`.
fn check_digit(body: &[u8]) -> usize {
    const N: usize = 32;
    let mut factor = 2;
    let mut sum = 0;
    for &value in body.iter().rev() {
        let addend = factor * usize::from(value);
        sum += addend / N + addend % N;
        factor = if factor == 2 { 1 } else { 2 };
    }
    (N - sum % N) % N
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_back() {
        for seed in 0u8..=255 {
            let id = IdentityId::from_random([seed; 10]);
            assert_eq!(id.as_str().len(), 17);
            assert_eq!(IdentityId::parse(id.as_str()), Ok(id.clone()));
            assert_eq!(IdentityId::parse(&id.as_str().to_lowercase()), Ok(id));
        }
    }

    #[test]
    fn every_single_character_typo_is_caught() {
        let id = IdentityId::from_random([7, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
        let bytes = id.as_str().as_bytes();
        for pos in 0..bytes.len() {
            for &replacement in ALPHABET {
                if replacement == bytes[pos] {
                    continue;
                }
                let mut typo = bytes.to_vec();
                typo[pos] = replacement;
                let typo = String::from_utf8(typo).unwrap();
                assert_eq!(IdentityId::parse(&typo), Err(IdParseError::Check), "{typo}");
            }
        }
    }

    #[test]
    fn only_valid_canonical_ids_decode() {
        use crate::codec::{decode, encode};
        let id = IdentityId::from_random([7, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
        // Encoded as a plain string, as before decoding was checked: stored records still read.
        assert_eq!(encode(&id), encode(id.as_str()));
        assert_eq!(
            decode::<IdentityId>("id", &encode(&id)).ok(),
            Some(id.clone())
        );
        // Found by the identity_id and command fuzz targets (node/fuzz): these used to decode.
        let lower = id.as_str().to_lowercase();
        for text in ["", "040G2081040G2081R", "0000000000000000U", lower.as_str()] {
            assert!(
                decode::<IdentityId>("id", &encode(text)).is_err(),
                "{text:?}"
            );
        }
    }

    #[test]
    fn malformed_ids_are_refused_with_a_reason() {
        assert_eq!(IdentityId::parse(""), Err(IdParseError::Length(0)));
        assert_eq!(IdentityId::parse("ABC"), Err(IdParseError::Length(3)));
        assert_eq!(
            IdentityId::parse("0000000000000000U"),
            Err(IdParseError::Character(16))
        );
        assert_eq!(
            IdentityId::parse("00000000é0000000Z"),
            Err(IdParseError::Character(8))
        );
    }
}
