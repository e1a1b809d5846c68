//! The key algorithms: Cloudflare's two (`rsa2048`, `p256v1`) and csrd's extension for
//! policies past 2030 (`rsa3072`, `rsa4096`, `p384`: NIST SP 800-131A Rev. 2 allows 2048-bit
//! RSA only through 2030; CNSA 2.0 asks for P-384 or RSA of 3072 bits or more).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum KeyType {
    /// RSA 2048, e = 65537, signed with sha256WithRSAEncryption. Cloudflare's default.
    #[default]
    Rsa2048,
    /// NIST P-256, signed with ecdsa-with-SHA256.
    P256v1,
    /// csrd extension: RSA 3072, e = 65537, sha256WithRSAEncryption.
    Rsa3072,
    /// csrd extension: RSA 4096, e = 65537, sha256WithRSAEncryption.
    Rsa4096,
    /// csrd extension: NIST P-384, signed with ecdsa-with-SHA384.
    P384,
}

impl KeyType {
    pub const ALL: [KeyType; 5] = [
        KeyType::Rsa2048,
        KeyType::P256v1,
        KeyType::Rsa3072,
        KeyType::Rsa4096,
        KeyType::P384,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::Rsa2048 => "rsa2048",
            KeyType::P256v1 => "p256v1",
            KeyType::Rsa3072 => "rsa3072",
            KeyType::Rsa4096 => "rsa4096",
            KeyType::P384 => "p384",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The RSA modulus size, for the RSA types.
    pub fn rsa_bits(self) -> Option<usize> {
        match self {
            KeyType::Rsa2048 => Some(2048),
            KeyType::Rsa3072 => Some(3072),
            KeyType::Rsa4096 => Some(4096),
            KeyType::P256v1 | KeyType::P384 => None,
        }
    }

    /// Whether Cloudflare's API has it (the others are csrd's extension).
    pub fn is_cloudflare(self) -> bool {
        matches!(self, KeyType::Rsa2048 | KeyType::P256v1)
    }

    /// What one create of this key type costs, in the unit csrd's scheduling counts in: the machine
    /// time of one P-256 create. A P-256 create takes about 0.22 ms of the whole 2-core machine
    /// (keygen, signing, sealing, its share of the row, the message and the commit). The others are
    /// their keygen time over P-256's, measured with `csrd bench keygen --threads 2`
    /// (docs/performance.md, "Key generation"): RSA-2048 about 60 ms (the search for two primes, 20
    /// to 200 ms), RSA-3072 about four times that, RSA-4096 about ten times, P-384 about four times
    /// P-256. Fair share, batch chunks and the ingress window all count in these units; the
    /// worker's own scheduler charges measured time instead.
    pub fn cost(self) -> u32 {
        match self {
            KeyType::Rsa2048 => 256,
            KeyType::P256v1 => 1,
            KeyType::Rsa3072 => 1024,
            KeyType::Rsa4096 => 2560,
            KeyType::P384 => 4,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_round_trips_and_rejects_unknown() {
        for k in KeyType::ALL {
            assert_eq!(KeyType::parse(k.as_str()), Some(k));
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
        assert_eq!(KeyType::parse("RSA2048"), None);
        assert_eq!(KeyType::parse("ed25519"), None);
        assert_eq!(KeyType::parse("p384v1"), None);
    }
}
