//! `csrd bench verify`: what one chain link's signature costs to verify on this machine, for
//! each kind of CA key, beside the estimate csrd charges it against a request's verification
//! budget (`ingress::chain_check::budget_micros`). The estimates were measured on csrd's
//! reference machine; this shows how far another machine is from them.

use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, PKCS_ECDSA_P256_SHA256,
    PKCS_ECDSA_P384_SHA384, PKCS_ED25519, PKCS_RSA_SHA256, PublicKeyData as _, date_time_ymd,
};
use rsa::pkcs8::EncodePrivateKey as _;

use crate::crypto::chain::{Link, parse_chain};

fn rsa_key(bits: usize) -> anyhow::Result<KeyPair> {
    let key = rsa::PrivateKey::new(&mut getrandom::SysRng, bits)?;
    let der = key.to_pkcs8_der()?;
    Ok(KeyPair::from_pkcs8_der_and_sign_algo(
        &der.as_bytes().into(),
        &PKCS_RSA_SHA256,
    )?)
}

/// A leaf signed by a CA holding `ca_key`, parsed: its one link.
fn link(ca_key: KeyPair) -> anyhow::Result<Link> {
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name.push(DnType::CommonName, "bench CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_pem = ca.self_signed(&ca_key)?.pem();
    let issuer = Issuer::new(ca, ca_key);
    let leaf_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut leaf = CertificateParams::new(vec!["bench.example.com".to_owned()])?;
    leaf.distinguished_name
        .push(DnType::CommonName, "bench.example.com");
    leaf.not_before = date_time_ymd(2024, 1, 1);
    leaf.not_after = date_time_ymd(2090, 1, 1);
    let pem = format!("{}{ca_pem}", leaf.signed_by(&leaf_key, &issuer)?.pem());
    let parsed = parse_chain(
        &pem,
        &leaf_key.subject_public_key_info(),
        chrono::Utc::now(),
    )?;
    parsed
        .links
        .into_iter()
        .next()
        .map(|(_, l)| l)
        .ok_or_else(|| anyhow::anyhow!("the chain has no link"))
}

/// Verifies one link of each CA key type for `seconds` and prints a Markdown table.
pub fn verify(seconds: f64) -> anyhow::Result<()> {
    let kinds: Vec<(&str, KeyPair)> = vec![
        (
            "ECDSA P-256",
            KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?,
        ),
        (
            "ECDSA P-384",
            KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384)?,
        ),
        ("Ed25519", KeyPair::generate_for(&PKCS_ED25519)?),
        ("RSA-2048", rsa_key(2048)?),
        ("RSA-3072", rsa_key(3072)?),
        ("RSA-4096", rsa_key(4096)?),
    ];
    println!("| CA key | verifications | µs each (measured) | µs each (csrd's estimate) |");
    println!("|---|---|---|---|");
    for (name, key) in kinds {
        let link = link(key)?;
        let budget = Duration::from_secs_f64(seconds);
        let started = Instant::now();
        let mut n = 0u64;
        while started.elapsed() < budget {
            anyhow::ensure!(
                std::hint::black_box(link.verify()),
                "{name}: did not verify"
            );
            n += 1;
        }
        let each = started.elapsed().as_secs_f64() * 1e6 / n.max(1) as f64;
        println!("| {name} | {n} | {each:.0} | {} |", link.cost_micros);
    }
    Ok(())
}
