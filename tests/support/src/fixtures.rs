//! Tenants, request bodies and credentials the tests use.

use csrd::auth::Scope;
use csrd::domain::{AccountId, ZoneId};
use serde_json::{Value, json};

pub const ACCOUNT_A: &str = "023e105f4ecef8ad9ca31a8372d0c353";
pub const ACCOUNT_B: &str = "b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0";
pub const ZONE_A: &str = "9a7806061c88ada191ed06f989cc3dac";

pub fn scope(accounts: &[&str], zones: &[&str]) -> Scope {
    Scope {
        accounts: accounts
            .iter()
            .map(|a| AccountId::parse(a).unwrap())
            .collect(),
        zones: zones.iter().map(|z| ZoneId::parse(z).unwrap()).collect(),
    }
}

/// Cloudflare's documented example request, verbatim.
pub fn example_body() -> Value {
    json!({
        "common_name": "example.com",
        "country": "US",
        "locality": "San Francisco",
        "organization": "Cloudflare, Inc.",
        "sans": ["example.com", "www.example.com"],
        "state": "California",
        "description": "CSR for example.com wildcard",
        "key_type": "rsa2048",
        "name": "My Custom CSR",
        "organizational_unit": "Engineering"
    })
}

/// The example with a P-256 key: fast to make, for tests that are not about the key type.
pub fn p256_body() -> Value {
    with(example_body(), "key_type", json!("p256v1"))
}

/// The P-256 example named `cn`, with `cn` as its one SAN.
pub fn named_body(cn: &str) -> Value {
    with(
        with(p256_body(), "common_name", json!(cn)),
        "sans",
        json!([cn]),
    )
}

/// `n` batch items: [`named_body`]s named `item{i}.example.com`.
pub fn batch_items(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| named_body(&format!("item{i}.example.com")))
        .collect()
}

pub fn with(mut body: Value, key: &str, value: Value) -> Value {
    body[key] = value;
    body
}

pub fn without(mut body: Value, key: &str) -> Value {
    body.as_object_mut().unwrap().remove(key);
    body
}

/// A plain-text dump of a database, as `pg_dump` writes it.
pub fn pg_dump(database_url: &str) -> String {
    let out = std::process::Command::new("pg_dump")
        .arg(database_url)
        .output()
        .expect("pg_dump is installed");
    assert!(
        out.status.success(),
        "pg_dump: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
