//! csrd's key types past Cloudflare's two (`rsa3072`, `rsa4096`, `p384`): made through a
//! single create, a batch and `csrd batch`, for accounts and zones, each CSR checked with
//! openssl (key size or curve, signature algorithm); every stored key of the five types
//! passes `csrd keys verify`; a CA's certificate for each is matched against its key over
//! chains whose links are P-384 and RSA-3072/4096.

use csrd::auth::Permission;
use csrd::domain::KeyType;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::process::Command;

use super::batch_cli::tempdir;
use super::csr_check::{openssl_key_facts, parse_csr};
use csrd_test_support::ca::{p384_key, patched_pem};
use csrd_test_support::*;

const CSRD: &str = env!("CARGO_BIN_EXE_csrd");

/// Each new type and what `openssl req -text` must say of its CSR: the key line, the curve
/// line and the signature algorithm.
const NEW_TYPES: [(&str, &str, &str, &str); 3] = [
    (
        "rsa3072",
        "Public-Key: (3072 bit)",
        "",
        "sha256WithRSAEncryption",
    ),
    (
        "rsa4096",
        "Public-Key: (4096 bit)",
        "",
        "sha256WithRSAEncryption",
    ),
    (
        "p384",
        "Public-Key: (384 bit)",
        "NIST CURVE: P-384",
        "ecdsa-with-SHA384",
    ),
];

fn body(key_type: &str, name: &str) -> Value {
    let b = with(named_body(name), "key_type", json!(key_type));
    with(b, "sans", json!([name]))
}

/// The CSR in `result` is of `key_type`, by csrd's parse and by openssl's.
fn assert_csr_of(result: &Value, key_type: &str) {
    assert_eq!(result["key_type"], key_type, "{result}");
    let pem = result["csr"].as_str().unwrap();
    assert_eq!(parse_csr(pem).key_type, key_type);
    let (_, key, curve, signature) = NEW_TYPES
        .iter()
        .chain(&[
            (
                "rsa2048",
                "Public-Key: (2048 bit)",
                "",
                "sha256WithRSAEncryption",
            ),
            (
                "p256v1",
                "Public-Key: (256 bit)",
                "NIST CURVE: P-256",
                "ecdsa-with-SHA256",
            ),
        ])
        .find(|t| t.0 == key_type)
        .unwrap();
    assert_eq!(
        openssl_key_facts(pem),
        (key.to_string(), curve.to_string(), signature.to_string()),
        "{key_type}"
    );
}

/// `csrd keys verify` over every stored key: whether it passed, its last line, its stderr.
async fn keys_verify(app: &TestApp) -> (bool, String, String) {
    let v = super::keys_verify::verify(app, &app.iso.keks, &[]).await;
    (v.success, v.last_line, v.stderr)
}

#[tokio::test]
async fn new_key_types_through_single_creates_batches_and_csrd_batch_pass_openssl_and_keys_verify()
{
    let app = spawn_app().await;
    let account = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let zone = app.token(&[], &[ZONE_A], Permission::Write).await;

    // Single creates, on an account and on a zone; GET shows the type.
    for (kind, owner, token) in [("accounts", ACCOUNT_A, &account), ("zones", ZONE_A, &zone)] {
        for (key_type, ..) in NEW_TYPES {
            let name = format!("{key_type}.{kind}.example.com");
            let created = app
                .create(kind, owner, Auth::Bearer(token), &body(key_type, &name))
                .await;
            assert_eq!(created.status, 201, "{}", created.body);
            assert_csr_of(&created.body["result"], key_type);
            let id = created.body["result"]["id"].as_str().unwrap();
            let read = app
                .send(
                    Method::GET,
                    &format!("/client/v4/{kind}/{owner}/custom_csrs/{id}"),
                    Auth::Bearer(token),
                    None,
                )
                .await;
            assert_eq!(read.body["result"]["key_type"], key_type);
        }
    }

    // A zone's batch of all five types.
    let items: Vec<Value> = KeyType::ALL
        .iter()
        .map(|k| body(k.as_str(), &format!("batch-{}.example.com", k.as_str())))
        .collect();
    let submitted = app
        .request(
            Method::POST,
            &format!("/client/v4/zones/{ZONE_A}/custom_csrs/batches"),
        )
        .bearer(&zone)
        .json(&json!({ "items": items }))
        .send()
        .await;
    assert_eq!(submitted.status, 202, "{}", submitted.json());
    let location = submitted.header("location").unwrap().to_owned();
    eventually("the batch to finish", || async {
        let r = app
            .send(Method::GET, &location, Auth::Bearer(&zone), None)
            .await;
        r.body["result"]["finished_at"].is_string().then_some(())
    })
    .await;
    let results = app
        .send(
            Method::GET,
            &format!("{location}/results"),
            Auth::Bearer(&zone),
            None,
        )
        .await;
    let entries = results.body["result"].as_array().unwrap();
    assert_eq!(entries.len(), 5, "{}", results.body);
    for (entry, key_type) in entries.iter().zip(KeyType::ALL) {
        assert_eq!(entry["status"], "created", "{entry}");
        assert_csr_of(&entry["result"], key_type.as_str());
    }

    // `csrd batch` lines of each new type, for the account.
    let dir = tempdir();
    let input = dir.path().join("new-types.jsonl");
    let output = dir.path().join("new-types.out.jsonl");
    let lines: String = NEW_TYPES
        .iter()
        .map(|(k, ..)| format!("{}\n", body(k, &format!("cli-{k}.example.com"))))
        .collect();
    std::fs::write(&input, lines).unwrap();
    let run = Command::new(CSRD)
        .args(["batch", "--url", &format!("http://{}", app.addr())])
        .args(["--account", ACCOUNT_A, "--input"])
        .arg(&input)
        .arg("--output")
        .arg(&output)
        .env("CSRD_TOKEN", &account)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let out: Vec<Value> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(out.len(), 3);
    for (line, (key_type, ..)) in out.iter().zip(NEW_TYPES) {
        assert_csr_of(line, key_type);
    }

    // Every stored key, of all five types, is its CSR's.
    let rows = app.row_count().await;
    assert_eq!(rows, 6 + 5 + 3);
    let (ok, last, stderr) = keys_verify(&app).await;
    assert!(ok, "{stderr}");
    assert_eq!(last, format!("{rows} verified, 0 failed"));
}

/// An RSA key pair of `bits` from csrd's key generation, for a test CA.
fn rsa_ca_key(key_type: KeyType) -> rcgen::KeyPair {
    let key = csrd::crypto::generate_key(key_type).unwrap();
    rcgen::KeyPair::try_from(key.pkcs8_der.expose()).unwrap()
}

#[tokio::test]
async fn certificates_for_new_key_types_match_their_keys_over_p384_and_large_rsa_links() {
    let app = spawn_in_memory().await;
    let token = app.token(&[], &[ZONE_A], Permission::Write).await;
    // root P-384 → intermediate RSA-3072 → leaves; and root RSA-4096 → leaves.
    let p384_root = TestCa::named("csrd test P-384 root", p384_key());
    let rsa3072_inter = p384_root.issue_ca("csrd test RSA-3072 CA", rsa_ca_key(KeyType::Rsa3072));
    let rsa4096_root = TestCa::named("csrd test RSA-4096 root", rsa_ca_key(KeyType::Rsa4096));

    let mut csrs = Vec::new();
    for (key_type, ..) in NEW_TYPES {
        let name = format!("cert-{key_type}.example.com");
        let created = app
            .create(
                "zones",
                ZONE_A,
                Auth::Bearer(&token),
                &body(key_type, &name),
            )
            .await;
        assert_eq!(created.status, 201, "{}", created.body);
        csrs.push(created.body["result"].clone());
    }
    let route = format!("/client/v4/zones/{ZONE_A}/custom_certificates");
    let upload = |csr: &Value, chain: String| {
        let body =
            json!({"certificate": chain, "custom_csr_id": csr["id"], "bundle_method": "force"});
        app.send(
            Method::POST,
            &route,
            Auth::Bearer(&token),
            Some(body.to_string()),
        )
    };

    // Another CSR's certificate (an RSA-4096 leaf) against the RSA-3072 CSR: not its key.
    let wrong = rsa4096_root.sign(csrs[1]["csr"].as_str().unwrap());
    let refused = upload(&csrs[0], wrong).await;
    assert_eq!(refused.status, 400, "{}", refused.body);

    for (i, csr) in csrs.iter().enumerate() {
        let pem = csr["csr"].as_str().unwrap();
        let (chain, signature) = if i == 1 {
            (rsa4096_root.sign(pem), "SHA256WithRSA")
        } else {
            (
                // leaf, the RSA-3072 CA, its P-384 root: both links are checked.
                format!("{}{}", rsa3072_inter.sign(pem), p384_root.pem),
                "SHA256WithRSA",
            )
        };
        let stored = upload(csr, chain).await;
        assert_eq!(stored.status, 200, "{}", stored.body);
        assert_eq!(stored.body["result"]["signature"], signature);
    }
    // The intermediate's own link (P-384 over RSA-3072) is checked: one whose signed part
    // was altered (its expiry moved a year) is refused.
    let extra = app
        .create(
            "zones",
            ZONE_A,
            Auth::Bearer(&token),
            &body("p384", "cert-tampered.example.com"),
        )
        .await;
    let extra = extra.body["result"].clone();
    let forged_inter = patched_pem(&rsa3072_inter.pem, b"20990101000000Z", b"20980101000000Z");
    let leaf = rsa3072_inter.sign_between(extra["csr"].as_str().unwrap(), 2024, 2090);
    let forged = upload(&extra, format!("{leaf}{forged_inter}{}", p384_root.pem)).await;
    assert_eq!(forged.status, 400, "{}", forged.body);

    // keys verify checks the certificates' keys too.
    let (ok, last, stderr) = keys_verify(&app).await;
    assert!(ok, "{stderr}");
    assert_eq!(last, "4 verified, 0 failed");
}
