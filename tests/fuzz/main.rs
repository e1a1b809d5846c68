//! Property-based fuzzing of everything a client controls before a request reaches a use case
//! (create and batch bodies, query strings, credential and Idempotency-Key headers) and of the
//! decoders for what comes back from storage and the broker (sealed keys, job chunks).
//!
//! The toolchain here is stable only, so these are proptest properties driving the same entry
//! points a `cargo fuzz` target would. Each runs `PROPTEST_CASES` cases (CI: the default below;
//! `scripts/fuzz` runs a long form). Every crash found becomes a regression case in
//! `tests/fuzz/regressions.rs`.

// Tests make and present throw-away credentials: revealing them is what they are for.
#![allow(clippy::disallowed_methods)]

mod regressions;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use csrd::crypto::{Keyring, SealedKey};
use csrd::domain::{CreateCsr, CsrId, ListQuery, NamePolicy, Owner, OwnerKind};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

/// Cases per property unless PROPTEST_CASES says otherwise.
const CI_CASES: u32 = 2000;

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(CI_CASES);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Strings a careless or hostile client sends: plain, padded, very long, with controls,
/// bidi overrides, zero-width and format characters, non-ASCII look-alikes, separators.
fn nasty_string() -> impl Strategy<Value = String> {
    let pieces = prop::sample::select(vec![
        "example.com",
        "*.example.com",
        "Example.COM.",
        "a",
        "-",
        ".",
        "..",
        " ",
        "\t",
        "\n",
        "\u{202e}",
        "\u{200b}",
        "\u{feff}",
        "\u{2028}",
        "\u{fdd0}",
        "\u{e000}",
        "кл",
        "xn--",
        "é",
        "\u{0}",
        "\\",
        "\"",
        "US",
        "rsa2048",
        "p256v1",
        "%",
        "&",
        "=",
        "?",
        "\u{1f600}",
    ]);
    prop_oneof![
        ".{0,40}",
        prop::collection::vec(pieces, 0..8).prop_map(|p| p.concat()),
        (1usize..400).prop_map(|n| "a".repeat(n)),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        nasty_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((nasty_string(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A create body: mostly valid fields in the spellings clients use (padded, mixed case,
/// trailing dots, duplicates), each sometimes replaced by anything.
fn create_body() -> impl Strategy<Value = Value> {
    fn field(good: &'static [&'static str]) -> impl Strategy<Value = Value> {
        prop_oneof![
            12 => prop::sample::select(good).prop_map(|s| json!(s)),
            1 => json_value(),
        ]
    }
    let san = prop_oneof![
        12 => prop::sample::select(vec![
            "example.com", "Example.COM", "www.example.com.", "*.example.com", "a.example.org",
            "xn--bcher-kva.example", "EXAMPLE.com", "a-b.c-d.example.net",
        ]).prop_map(str::to_owned),
        1 => nasty_string(),
    ];
    (
        field(&["example.com", " example.com ", "Example Inc."]),
        field(&["US", "us", " GB"]),
        field(&["California", "  Bavaria\t"]),
        field(&["San Francisco", "Zürich"]),
        field(&["Acme", "  Acme, Inc.  ", "\u{202e}Acme"]),
        prop_oneof![
            12 => prop::collection::vec(san.prop_map(Value::String), 1..8).prop_map(Value::Array),
            1 => json_value(),
        ],
        field(&["p256v1", "rsa2048"]),
        prop::collection::vec((nasty_string(), json_value()), 0..3),
    )
        .prop_map(|(cn, c, st, l, o, sans, kt, extra)| {
            let mut body = json!({
                "common_name": cn, "country": c, "state": st, "locality": l,
                "organization": o, "sans": sans, "key_type": kt,
            });
            for (k, v) in extra {
                body[k] = v;
            }
            body
        })
}

/// What every accepted create must satisfy, whatever was sent.
fn check_accepted(csr: &CreateCsr) {
    assert!(!csr.sans.is_empty() && csr.sans.len() <= 150);
    let mut seen = std::collections::HashSet::new();
    for san in &csr.sans {
        let s = san.as_str();
        assert!(s.len() <= 253 && !s.ends_with('.'), "{s:?}");
        assert!(seen.insert(s.to_ascii_lowercase()), "duplicate SAN {s:?}");
    }
    let subject = &csr.subject;
    for value in [
        &subject.common_name,
        &subject.country,
        &subject.state,
        &subject.locality,
        &subject.organization,
    ] {
        assert_eq!(value.trim(), value.as_str(), "untrimmed {value:?}");
        assert!(!value.is_empty());
        assert!(
            !value.chars().any(|c| c.is_control()
                || ('\u{202a}'..='\u{202e}').contains(&c)
                || ('\u{2066}'..='\u{2069}').contains(&c)
                || c == '\u{200b}'
                || c == '\u{feff}'),
            "forbidden character in {value:?}"
        );
    }
}

fn headers(pairs: &[(&'static str, Vec<u8>)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        if let Ok(v) = HeaderValue::from_bytes(value) {
            map.append(HeaderName::from_static(name), v);
        }
    }
    map
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn create_bodies_never_panic_and_what_passes_is_clean(body in create_body(), zone in any::<bool>()) {
        let kind = if zone { OwnerKind::Zone } else { OwnerKind::Account };
        for policy in [NamePolicy::Permissive, NamePolicy::Cloudflare] {
            if let Ok(csr) = CreateCsr::parse(body.to_string().as_bytes(), kind, policy) {
                check_accepted(&csr);
            }
        }
    }

    #[test]
    fn arbitrary_bytes_as_a_body_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = CreateCsr::parse(&bytes, OwnerKind::Account, NamePolicy::Permissive);
        let _ = csrd::domain::batch::parse_items(&bytes, OwnerKind::Account, NamePolicy::Permissive, || {});
        let _ = csrd::domain::strict_json::parse(&bytes);
        let _ = csrd::amqp::codec::decode_chunk(&bytes);
        let _ = csrd::amqp::codec::decode_completions(&bytes);
    }

    #[test]
    fn batch_bodies_never_panic_and_errors_name_their_item(items in prop::collection::vec(create_body(), 0..6)) {
        let body = json!({ "items": items }).to_string();
        match csrd::domain::batch::parse_items(body.as_bytes(), OwnerKind::Account, NamePolicy::Permissive, || {}) {
            Ok(parsed) => parsed.iter().for_each(check_accepted),
            Err(errors) => {
                for e in &errors.0 {
                    prop_assert!(e.pointer.is_empty() || e.pointer.starts_with("/items"), "{:?}", e.pointer);
                    prop_assert!(e.message.chars().count() < 400, "an echo was not truncated");
                }
            }
        }
    }

    #[test]
    fn query_strings_never_panic(raw in ".{0,200}", page in ".{0,30}", per_page in ".{0,30}") {
        for query in [raw.clone(), format!("page={page}&per_page={per_page}&order={raw}")] {
            let pairs = csrd::http::extract::query_pairs(Some(&query));
            let _ = ListQuery::parse(OwnerKind::Account, pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        }
    }

    #[test]
    fn credential_and_idempotency_headers_never_panic(
        authorization in prop::collection::vec(any::<u8>(), 0..80),
        email in prop::collection::vec(any::<u8>(), 0..60),
        key in prop::collection::vec(any::<u8>(), 0..60),
        idem in prop::collection::vec(any::<u8>(), 0..300),
        twice in any::<bool>(),
    ) {
        let mut pairs = vec![
            ("authorization", authorization.clone()),
            ("x-auth-email", email),
            ("x-auth-key", key),
            ("idempotency-key", idem.clone()),
        ];
        if twice {
            pairs.push(("authorization", authorization));
            pairs.push(("idempotency-key", idem));
        }
        let map = headers(&pairs);
        let _ = csrd::http::auth::credentials(&map);
        let _ = csrd::http::extract::idempotency_key(&map);
    }

    #[test]
    fn sealed_key_decoder_never_panics_and_never_opens_garbage(
        version in prop_oneof![Just(1i16), any::<i16>()],
        kek_id in prop_oneof![Just("fuzz-kek".to_owned()), ".{0,20}"],
        wrapped_dek in prop::collection::vec(any::<u8>(), 0..80),
        dek_nonce in prop::collection::vec(any::<u8>(), 0..20),
        key_nonce in prop::collection::vec(any::<u8>(), 0..20),
        ciphertext in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        let keyring = keyring();
        let sealed = SealedKey { version, kek_id, wrapped_dek, dek_nonce, key_nonce, ciphertext };
        let owner = Owner::parse(OwnerKind::Account, "023e105f4ecef8ad9ca31a8372d0c353").unwrap();
        prop_assert!(csrd::crypto::open(keyring, CsrId::new(), &owner, &sealed).is_err());
    }
}

fn keyring() -> &'static Keyring {
    static KEYRING: std::sync::OnceLock<Keyring> = std::sync::OnceLock::new();
    KEYRING.get_or_init(|| {
        let id = csrd::crypto::KekId::parse("fuzz-kek").unwrap();
        Keyring::parse(&Keyring::generate_entry(&id)).unwrap()
    })
}
