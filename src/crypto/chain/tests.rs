use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DnType, IsCa, Issuer, KeyPair,
    SerialNumber, date_time_ymd,
};

use super::*;
use crate::crypto::generate_key;
use crate::domain::KeyType;

/// A CA named `name`, with `key`.
fn ca(name: &str, key: KeyPair) -> (Issuer<'static, KeyPair>, String) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(DnType::OrganizationName, name);
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.not_before = date_time_ymd(2024, 1, 1);
    params.not_after = date_time_ymd(2099, 1, 1);
    let pem = params.self_signed(&key).unwrap().pem();
    (Issuer::new(params, key), pem)
}

fn rsa_key() -> KeyPair {
    let key = generate_key(KeyType::Rsa2048).unwrap();
    KeyPair::try_from(key.pkcs8_der.expose()).unwrap()
}

/// A leaf for `key`, with `edit` applied to its parameters, signed by `issuer`.
fn leaf_with(
    key: &KeyPair,
    issuer: &Issuer<'_, KeyPair>,
    edit: impl FnOnce(&mut CertificateParams),
) -> String {
    let mut params = CertificateParams::new(vec!["shop.example.org".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "shop.example.org");
    params.not_before = date_time_ymd(2024, 1, 1);
    params.not_after = date_time_ymd(2090, 1, 1);
    params.serial_number = Some(SerialNumber::from(vec![0x12, 0x34]));
    edit(&mut params);
    params.signed_by(key, issuer).unwrap().pem()
}

fn leaf(key: &KeyPair, issuer: &Issuer<'_, KeyPair>) -> String {
    leaf_with(key, issuer, |_| {})
}

fn spki(key: &KeyPair) -> Vec<u8> {
    use rcgen::PublicKeyData as _;
    key.subject_public_key_info()
}

fn der_of(pem: &str) -> Vec<u8> {
    x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .unwrap()
        .1
        .contents
}

fn pem_of(der: &[u8]) -> String {
    to_pem(der)
}

/// `der` with every occurrence of `from` replaced by `to` (same length: no DER length moves).
fn patched(der: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let mut out = der.to_vec();
    let mut found = 0;
    let mut i = 0;
    while i + from.len() <= out.len() {
        if &out[i..i + from.len()] == from {
            out[i..i + from.len()].copy_from_slice(to);
            found += 1;
            i += from.len();
        } else {
            i += 1;
        }
    }
    assert!(found > 0, "pattern not found");
    out
}

const ECDSA_SHA256_OID: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
const ECDSA_SHA512_OID: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04];
const RSA_SHA256_OID: [u8; 11] = [
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b,
];
const RSA_SHA1_OID: [u8; 11] = [
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05,
];

/// Every check and every signature, at once, with no budget.
fn inspect_chain(pem: &str, csr_spki: &[u8], now: DateTime<Utc>) -> Result<LeafFacts, ChainError> {
    parse_chain(pem, csr_spki, now)?.finish(Link::verify)
}

fn now() -> DateTime<Utc> {
    Utc::now()
}

#[test]
fn garbage_and_keys_are_refused_without_parsing_further() {
    assert_eq!(
        inspect_chain("  ", &[], now()).unwrap_err(),
        ChainError::Empty
    );
    assert_eq!(
        inspect_chain("hello", &[], now()).unwrap_err(),
        ChainError::Unparsable
    );
    let key = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----\n";
    assert_eq!(
        inspect_chain(key, &[], now()).unwrap_err(),
        ChainError::PrivateKey
    );
    let ec = key.replace("PRIVATE KEY", "EC PRIVATE KEY");
    assert_eq!(
        inspect_chain(&ec, &[], now()).unwrap_err(),
        ChainError::PrivateKey
    );
    let pgp =
        "-----BEGIN PGP PRIVATE KEY BLOCK-----\nxcLYBF\n-----END PGP PRIVATE KEY BLOCK-----\n";
    assert_eq!(
        inspect_chain(pgp, &[], now()).unwrap_err(),
        ChainError::PrivateKey
    );
    let junk_block = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    assert_eq!(
        inspect_chain(junk_block, &[], now()).unwrap_err(),
        ChainError::Unparsable
    );
    let long = junk_block.repeat(MAX_CHAIN + 1);
    assert_eq!(
        inspect_chain(&long, &[], now()).unwrap_err(),
        ChainError::TooLong
    );
}

#[test]
fn a_chain_from_an_ecdsa_or_rsa_ca_passes_and_its_facts_are_read() {
    let key = KeyPair::generate().unwrap();
    for ca_key in [KeyPair::generate().unwrap(), rsa_key()] {
        let (issuer, ca_pem) = ca("Example CA", ca_key);
        let chain = format!("{}{}", leaf(&key, &issuer), ca_pem);
        let parsed = parse_chain(&chain, &spki(&key), now()).unwrap();
        assert_eq!(parsed.links.len(), 1);
        assert!(parsed.cost_micros() > 0);
        let facts = parsed.finish(Link::verify).unwrap();
        assert_eq!(facts.hosts, ["shop.example.org"]);
        assert_eq!(facts.issuer, "Example CA");
        assert_eq!(facts.serial_number, "4660");
        assert_eq!(facts.leaf_sha256, links::digest(&der_of(&chain)));
    }
}

#[test]
fn the_key_is_checked_before_any_signature() {
    let (issuer, ca_pem) = ca("Example CA", KeyPair::generate().unwrap());
    let key = KeyPair::generate().unwrap();
    let other = KeyPair::generate().unwrap();
    let chain = format!("{}{}", leaf(&key, &issuer), ca_pem);
    assert_eq!(
        parse_chain(&chain, &spki(&other), now()).unwrap_err(),
        ChainError::KeyMismatch
    );
}

#[test]
fn a_link_whose_algorithm_csrd_does_not_verify_is_refused_not_passed_by_name() {
    let key = KeyPair::generate().unwrap();
    let (issuer, ca_pem) = ca("Example CA", KeyPair::generate().unwrap());
    // ECDSA with SHA-512 (ring has no verifier for it), with what is now a garbage signature.
    let relabelled = patched(
        &der_of(&leaf(&key, &issuer)),
        &ECDSA_SHA256_OID,
        &ECDSA_SHA512_OID,
    );
    let chain = format!("{}{}", pem_of(&relabelled), ca_pem);
    match parse_chain(&chain, &spki(&key), now()) {
        Err(ChainError::Unverifiable(0, why)) => assert!(why.contains("SHA-512"), "{why}"),
        other => panic!("{other:?}"),
    }
    // Alone, too: a leaf csrd cannot verify is not stored even without its issuer.
    match parse_chain(&pem_of(&relabelled), &spki(&key), now()) {
        Err(ChainError::Unverifiable(0, _)) => {}
        other => panic!("{other:?}"),
    }
    // An ECDSA leaf followed by an impostor CA of the same name holding an RSA key.
    let (_, impostor) = ca("Example CA", rsa_key());
    let chain = format!("{}{}", leaf(&key, &issuer), impostor);
    match parse_chain(&chain, &spki(&key), now()) {
        Err(ChainError::Unverifiable(0, why)) => assert!(why.contains("ECDSA"), "{why}"),
        other => panic!("{other:?}"),
    }
    // SHA-1 under an RSA CA: forgeable, refused.
    let (rsa_issuer, rsa_ca) = ca("Example CA", rsa_key());
    let sha1 = patched(
        &der_of(&leaf(&key, &rsa_issuer)),
        &RSA_SHA256_OID,
        &RSA_SHA1_OID,
    );
    match parse_chain(&format!("{}{}", pem_of(&sha1), rsa_ca), &spki(&key), now()) {
        Err(ChainError::Unverifiable(0, why)) => assert!(why.contains("SHA-1"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_link_signed_by_another_key_of_the_same_name_fails_its_signature() {
    let key = KeyPair::generate().unwrap();
    let (issuer, _) = ca("Example CA", KeyPair::generate().unwrap());
    let (_, impostor) = ca("Example CA", KeyPair::generate().unwrap());
    let chain = format!("{}{}", leaf(&key, &issuer), impostor);
    let parsed = parse_chain(&chain, &spki(&key), now()).unwrap();
    assert_eq!(
        parsed.finish(Link::verify).unwrap_err(),
        ChainError::BadSignature(1)
    );
}

#[test]
fn serials_must_be_positive_minimal_der_integers() {
    let key = KeyPair::generate().unwrap();
    let (issuer, ca_pem) = ca("Example CA", KeyPair::generate().unwrap());
    // rcgen writes 0xFF as the positive 00 FF: 255.
    let pem = leaf_with(&key, &issuer, |p| {
        p.serial_number = Some(SerialNumber::from(vec![0xFF]))
    });
    let facts = parse_chain(&format!("{pem}{ca_pem}"), &spki(&key), now())
        .unwrap()
        .facts;
    assert_eq!(facts.serial_number, "255");
    // The same bytes made negative (FF FF is -1), non-minimal (00 7F) or zero.
    let positive = der_of(&pem);
    for (from, to) in [
        ([0x02, 0x02, 0x00, 0xFF], [0x02, 0x02, 0xFF, 0xFF]),
        ([0x02, 0x02, 0x00, 0xFF], [0x02, 0x02, 0x00, 0x7F]),
        ([0x02, 0x02, 0x00, 0xFF], [0x02, 0x02, 0x00, 0x00]),
    ] {
        let bad = patched(&positive, &from, &to);
        assert!(
            matches!(
                parse_chain(&format!("{}{ca_pem}", pem_of(&bad)), &spki(&key), now()),
                Err(ChainError::BadField(what)) if what.starts_with("serial")
            ),
            "{to:02x?}"
        );
    }
}

#[test]
fn hosts_and_issuer_are_refused_as_csr_names_are() {
    let key = KeyPair::generate().unwrap();
    let (issuer, ca_pem) = ca("Example CA", KeyPair::generate().unwrap());
    let check =
        |pem: String, ca_pem: &str| parse_chain(&format!("{pem}{ca_pem}"), &spki(&key), now());
    // No SAN: the common name is the host, and must be a DNS name.
    for cn in [
        "shop\u{200B}.example.org",
        "",
        "two words.example.org",
        "\u{202E}gro.elpmaxe",
    ] {
        let pem = leaf_with(&key, &issuer, |p| {
            p.subject_alt_names.clear();
            p.distinguished_name = rcgen::DistinguishedName::new();
            p.distinguished_name.push(DnType::CommonName, cn);
        });
        assert_eq!(
            check(pem, &ca_pem).unwrap_err(),
            ChainError::BadField("subject alternative names"),
            "{cn:?}"
        );
    }
    // A subjectAltName that does not parse is refused, not read around by way of the CN.
    let pem = leaf_with(&key, &issuer, |p| {
        p.subject_alt_names.clear();
        p.custom_extensions = vec![CustomExtension::from_oid_content(
            &[2, 5, 29, 17],
            vec![0x04, 0x01, 0x00],
        )];
    });
    assert_eq!(
        check(pem, &ca_pem).unwrap_err(),
        ChainError::BadField("subject alternative names")
    );
    // An issuer name hiding a right-to-left override.
    let (evil, evil_pem) = ca("Example\u{202E}AC", KeyPair::generate().unwrap());
    assert_eq!(
        check(leaf(&key, &evil), &evil_pem).unwrap_err(),
        ChainError::BadField("issuer")
    );
}

#[test]
fn a_lone_leaf_signed_by_its_own_key_under_another_name_is_self_signed() {
    let key = KeyPair::generate().unwrap();
    let same = KeyPair::from_pem(&key.serialize_pem()).unwrap();
    let (own, _) = ca("A CA in name only", same);
    let parsed = parse_chain(&leaf(&key, &own), &spki(&key), now()).unwrap();
    assert!(parsed.self_check.is_some());
    assert_eq!(
        parsed.finish(Link::verify).unwrap_err(),
        ChainError::SelfSigned
    );
}

#[test]
fn links_shared_by_chains_have_one_key_and_rsa_costs_grow_with_the_modulus() {
    let (issuer, ca_pem) = ca("Example CA", rsa_key());
    let (a, b) = (KeyPair::generate().unwrap(), KeyPair::generate().unwrap());
    let pa = parse_chain(
        &format!("{}{}", leaf(&a, &issuer), ca_pem),
        &spki(&a),
        now(),
    )
    .unwrap();
    let pb = parse_chain(
        &format!("{}{}", leaf(&b, &issuer), ca_pem),
        &spki(&b),
        now(),
    )
    .unwrap();
    assert_ne!(pa.links[0].1.key, pb.links[0].1.key, "different leaves");
    assert_eq!(pa.links[0].1.key.1, pb.links[0].1.key.1, "the same issuer");
    let rsa2048 = pa.links[0].1.cost_micros;
    let p256_issued = parse_chain(
        &format!(
            "{}{}",
            leaf(&a, &ca("P", KeyPair::generate().unwrap()).0),
            ca("P", KeyPair::generate().unwrap()).1
        ),
        &spki(&a),
        now(),
    )
    .unwrap();
    assert!(p256_issued.cost_micros() > 0 && rsa2048 > 0);
}

/// `der` with the first occurrence of `from` replaced by `to` (the algorithm inside the
/// signed part comes before the one outside it).
fn patched_first(der: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let at = der
        .windows(from.len())
        .position(|w| w == from)
        .expect("pattern not found");
    let mut out = der.to_vec();
    out[at..at + from.len()].copy_from_slice(to);
    out
}

#[test]
fn a_lone_leaf_whose_inner_algorithm_differs_from_its_outer_one_is_refused() {
    let key = KeyPair::generate().unwrap();
    let (issuer, ca_pem) = ca("Example CA", KeyPair::generate().unwrap());
    // Inside: ECDSA with SHA-512 (or anything); outside: the ECDSA-SHA256 it was signed with.
    let inner_only = patched_first(
        &der_of(&leaf(&key, &issuer)),
        &ECDSA_SHA256_OID,
        &ECDSA_SHA512_OID,
    );
    for chain in [
        pem_of(&inner_only),
        format!("{}{ca_pem}", pem_of(&inner_only)),
    ] {
        match parse_chain(&chain, &spki(&key), now()) {
            Err(ChainError::Unverifiable(0, why)) => assert!(why.contains("differs"), "{why}"),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn ed25519_with_parameters_is_not_ed25519() {
    use x509_parser::prelude::FromDer as _;
    use x509_parser::x509::AlgorithmIdentifier;
    let bare = [0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70];
    let with_null = [0x30, 0x07, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x05, 0x00];
    let (_, bare) = AlgorithmIdentifier::from_der(&bare).unwrap();
    let (_, with_null) = AlgorithmIdentifier::from_der(&with_null).unwrap();
    assert!(links::known_algorithm(&bare).is_ok());
    let why = links::known_algorithm(&with_null).unwrap_err().0;
    assert!(why.contains("RFC 8410"), "{why}");
}

#[test]
fn a_host_a_leaf_repeats_is_kept_once() {
    let key = KeyPair::generate().unwrap();
    let (issuer, ca_pem) = ca("Example CA", KeyPair::generate().unwrap());
    let pem = leaf_with(&key, &issuer, |p| {
        p.subject_alt_names = ["shop.example.org", "SHOP.example.org", "www.example.org"]
            .into_iter()
            .chain(std::iter::repeat_n("shop.example.org", 500))
            .map(|n| rcgen::SanType::DnsName(n.try_into().unwrap()))
            .collect();
    });
    let facts = inspect_chain(&format!("{pem}{ca_pem}"), &spki(&key), now()).unwrap();
    assert_eq!(facts.hosts, ["shop.example.org", "www.example.org"]);
}

#[test]
fn a_leaf_naming_anything_but_dns_names_is_refused_and_never_falls_back_to_its_cn() {
    let key = KeyPair::generate().unwrap();
    let (issuer, ca_pem) = ca("Example CA", KeyPair::generate().unwrap());
    let check =
        |pem: String| parse_chain(&format!("{pem}{ca_pem}"), &spki(&key), now()).map(|_| ());
    let ip = std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    for sans in [
        vec![
            rcgen::SanType::DnsName("shop.example.org".try_into().unwrap()),
            rcgen::SanType::IpAddress(ip),
        ],
        // Only an IP address, with a DNS-looking CN: a client takes it for the address only.
        vec![rcgen::SanType::IpAddress(ip)],
        vec![
            rcgen::SanType::DnsName("shop.example.org".try_into().unwrap()),
            rcgen::SanType::URI("spiffe://evil/x".try_into().unwrap()),
        ],
    ] {
        let pem = leaf_with(&key, &issuer, |p| p.subject_alt_names = sans);
        assert_eq!(
            check(pem),
            Err(ChainError::BadField("subject alternative names"))
        );
    }
}

#[test]
fn a_chain_ends_at_a_trust_anchor_only_when_the_anchor_signed_it() {
    let key = KeyPair::generate().unwrap();
    let (issuer, ca_pem) = ca("Example CA", KeyPair::generate().unwrap());
    let (_, impostor) = ca("Example CA", KeyPair::generate().unwrap());
    let leaf = der_of(&leaf(&key, &issuer));
    assert!(issued_by(&leaf, &der_of(&ca_pem)));
    assert!(
        issued_by(&der_of(&ca_pem), &der_of(&ca_pem)),
        "the anchor itself"
    );
    assert!(
        !issued_by(&leaf, &der_of(&impostor)),
        "same name, another key"
    );
    assert!(!issued_by(&leaf, b"junk"));
}
