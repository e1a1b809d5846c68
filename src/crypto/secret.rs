//! A byte buffer for key material: zeroed on drop, never printed.

use std::fmt;

use zeroize::Zeroizing;

pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// `len` random bytes from the operating system's CSPRNG.
    pub fn random(len: usize) -> Self {
        let mut bytes = Zeroizing::new(vec![0u8; len]);
        getrandom::fill(&mut bytes).expect("the operating system RNG is unavailable");
        Self(bytes)
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes([REDACTED; {}])", self.0.len())
    }
}

/// Fresh random bytes for nonces and token secrets (not key material).
pub fn random_array<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).expect("the operating system RNG is unavailable");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_bytes() {
        let s = SecretBytes::new(vec![0xde, 0xad, 0xbe, 0xef]);
        let shown = format!("{s:?}");
        assert!(!shown.contains("de") && !shown.contains("222"), "{shown}");
        assert!(shown.contains("REDACTED"));
    }
}
