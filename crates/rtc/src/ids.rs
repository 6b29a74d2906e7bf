//! Server-generated ids: `[0-9A-Za-z]`, valid for both Galène and OWT, and random
//! enough (128 bits) to stay unique across nodes without coordination.

use rand::Rng;

const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

pub(crate) fn generate() -> String {
    let mut rng = rand::rng();
    // 22 base-62 characters carry just over 128 bits.
    (0..22)
        .map(|_| {
            let i = rng.random_range(0..ALPHABET.len());
            char::from(ALPHABET.get(i).copied().unwrap_or(b'0'))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_alphanumeric_and_distinct() {
        let a = super::generate();
        let b = super::generate();
        assert_eq!(a.len(), 22);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }
}
