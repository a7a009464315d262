//! Request codes: made at random (12 Crockford base-32 characters, 60
//! bits, shown `XXXX-XXXX-XXXX`), stored only as a SHA-256 bound to the
//! account, and checked by comparing that hash in constant time with each
//! open code of the account (at most [`MAX_OPEN_CODES`]). It never knows
//! the store, the policies or HTTP.

use rand::Rng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::store::StoredCode;

/// Most open (unused, unexpired) request codes per account.
pub const MAX_OPEN_CODES: usize = 20;

/// Characters of a code (without the dashes).
const CODE_LEN: usize = 12;

/// The longest code input looked at (anything longer is simply wrong).
const MAX_INPUT: usize = 64;

const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A new code, for display (`XXXX-XXXX-XXXX`).
pub(crate) fn new_code() -> String {
    let mut rng = rand::rng();
    let chars: Vec<char> = (0..CODE_LEN)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect();
    chars
        .chunks(4)
        .map(|c| c.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join("-")
}

/// A code as typed, normalised (upper case, dashes and spaces dropped,
/// `O` read as `0`, `I`/`L` as `1`); `None` when it cannot be a code.
pub(crate) fn normalize(raw: &str) -> Option<String> {
    if raw.len() > MAX_INPUT {
        return None;
    }
    let mut out = String::with_capacity(CODE_LEN);
    for c in raw.chars() {
        let c = match c.to_ascii_uppercase() {
            '-' | ' ' => continue,
            'O' => '0',
            'I' | 'L' => '1',
            c => c,
        };
        if !c.is_ascii() || !ALPHABET.contains(&(c as u8)) {
            return None;
        }
        out.push(c);
    }
    (out.len() == CODE_LEN).then_some(out)
}

/// The stored hash of `code` (normalised) for `account`: a code hashes
/// differently under every account.
pub(crate) fn hash(account: &str, code: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"partnergate request code\0");
    h.update(account.as_bytes());
    h.update(b"\0");
    h.update(code.as_bytes());
    h.finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
}

/// The open code among `open` whose hash is `hash`, compared in constant
/// time with every one of them (no early exit).
pub(crate) fn matching<'a>(open: &'a [StoredCode], hash: &str) -> Option<&'a StoredCode> {
    let mut found = None;
    for c in open {
        let same: bool = c.hash.as_bytes().ct_eq(hash.as_bytes()).into();
        if same && found.is_none() {
            found = Some(c);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_short_distinct_and_read_back_as_typed() {
        let a = new_code();
        assert_eq!(a.len(), 14, "{a}");
        assert_ne!(a, new_code());
        let n = normalize(&a).unwrap();
        assert_eq!(
            normalize(&a.to_lowercase().replace('-', " ")),
            Some(n.clone())
        );
        assert_eq!(normalize("0O1I-L000-0000"), Some("001110000000".into()));
        for bad in [
            "",
            "ABCD",
            "ABCD-EFGH-JKMU",
            "ÄBCD-EFGH-JKMN",
            &"A".repeat(100),
        ] {
            assert_eq!(normalize(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_code_matches_only_under_its_own_account() {
        let code = normalize(&new_code()).unwrap();
        let stored = StoredCode {
            hash: hash("acme", &code),
            account: "acme".into(),
            created_by: "User::\"owner\"".into(),
            created_at: 0,
            expires_at: 1,
        };
        let open = [stored];
        assert!(matching(&open, &hash("acme", &code)).is_some());
        assert!(matching(&open, &hash("globex", &code)).is_none());
    }
}
