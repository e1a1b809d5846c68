//! The two key algorithms Cloudflare's API offers.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum KeyType {
    /// RSA 2048, e = 65537, signed with sha256WithRSAEncryption. Cloudflare's default.
    #[default]
    Rsa2048,
    /// NIST P-256, signed with ecdsa-with-SHA256.
    P256v1,
}

impl KeyType {
    pub const ALL: [KeyType; 2] = [KeyType::Rsa2048, KeyType::P256v1];

    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::Rsa2048 => "rsa2048",
            KeyType::P256v1 => "p256v1",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// What one create of this key type costs, in the unit csrd's scheduling counts in: the
    /// machine time of one P-256 create. Measured on a 2-core machine (README, "Limits and
    /// abuse"): a P-256 create takes about 0.22 ms of the whole machine (keygen, signing,
    /// sealing, its share of the row, the message and the commit) and an RSA-2048 create about
    /// 60 ms, nearly all of it the search for two primes, which varies from 20 to 200 ms. The
    /// ratio, ~270, is rounded to 256. Fair share, batch chunks and the ingress window all
    /// count in these units; the worker's own scheduler charges measured time instead.
    pub fn cost(self) -> u32 {
        match self {
            KeyType::Rsa2048 => 256,
            KeyType::P256v1 => 1,
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
        }
        assert_eq!(KeyType::parse("RSA2048"), None);
        assert_eq!(KeyType::parse("ed25519"), None);
    }
}
