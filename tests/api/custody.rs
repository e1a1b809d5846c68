use csrd::auth::Permission;
use csrd::crypto::{EnvelopeError, open};
use csrd::db::csrs;
use csrd::domain::{AccountId, CsrId, Owner};
use serde_json::json;

use csrd_test_support::*;

async fn create(app: &TestApp, token: &str, key_type: &str) -> CsrId {
    let resp = app
        .create(
            "accounts",
            ACCOUNT_A,
            Auth::Bearer(token),
            &with(example_body(), "key_type", json!(key_type)),
        )
        .await;
    assert_eq!(resp.status, 201, "{}", resp.body);
    CsrId::parse(resp.body["result"]["id"].as_str().unwrap()).unwrap()
}

fn owner_a() -> Owner {
    Owner::Account(AccountId::parse(ACCOUNT_A).unwrap())
}

#[tokio::test]
async fn no_plaintext_key_bytes_appear_in_a_dump_of_the_database() {
    use base64::Engine;
    let app = spawn_in_memory().await;
    let token = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let ids = [
        create(&app, &token, "rsa2048").await,
        create(&app, &token, "p256v1").await,
    ];
    let dump = pg_dump(&app.iso.database_url).to_lowercase();
    assert!(dump.contains("custom_csrs"), "the dump covers the table");
    let client = app.pool.get().await.unwrap();
    for id in ids {
        let sealed = csrs::get_sealed_key(&**client, &owner_a(), id)
            .await
            .unwrap()
            .unwrap();
        let key = open(&app.keyring, id, &owner_a(), &sealed).unwrap();
        let der = key.expose();
        // Any 24-byte window of the key, in the encodings a dump or a careless log would use.
        for window in der.chunks(24).filter(|c| c.len() == 24) {
            assert!(
                !dump.contains(&hex::encode(window)),
                "key bytes (hex) found in the dump"
            );
        }
        let b64 = base64::engine::general_purpose::STANDARD
            .encode(der)
            .to_lowercase();
        assert!(
            !dump.contains(&b64[8..72]),
            "key bytes (base64/PEM) found in the dump"
        );
        // The KEK never reaches the database either.
        let kek_b64 = app.iso.keks.split_once(':').unwrap().1.to_lowercase();
        assert!(!dump.contains(&kek_b64));
    }
}

#[tokio::test]
async fn a_sealed_key_moved_to_another_row_or_tenant_no_longer_decrypts() {
    let app = spawn_in_memory().await;
    let token = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let (a, b) = (
        create(&app, &token, "p256v1").await,
        create(&app, &token, "p256v1").await,
    );
    let client = app.pool.get().await.unwrap();
    client
        .execute(
            "UPDATE custom_csrs AS dst
                SET kek_id = src.kek_id, wrapped_dek = src.wrapped_dek, dek_nonce = src.dek_nonce,
                    key_nonce = src.key_nonce, key_ciphertext = src.key_ciphertext
               FROM custom_csrs AS src
              WHERE dst.id = $1 AND src.id = $2",
            &[&a.0, &b.0],
        )
        .await
        .unwrap();
    let moved = csrs::get_sealed_key(&**client, &owner_a(), a)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        open(&app.keyring, a, &owner_a(), &moved).unwrap_err(),
        EnvelopeError::Unwrap
    );
    let original = csrs::get_sealed_key(&**client, &owner_a(), b)
        .await
        .unwrap()
        .unwrap();
    assert!(
        open(&app.keyring, b, &owner_a(), &original).is_ok(),
        "the source row still opens"
    );

    // Re-assigning a row to another tenant breaks it too.
    client
        .execute(
            "UPDATE custom_csrs SET owner_id = $1 WHERE id = $2",
            &[&ACCOUNT_B, &b.0],
        )
        .await
        .unwrap();
    let other = Owner::Account(AccountId::parse(ACCOUNT_B).unwrap());
    let stolen = csrs::get_sealed_key(&**client, &other, b)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        open(&app.keyring, b, &other, &stolen).unwrap_err(),
        EnvelopeError::Unwrap
    );
}

#[tokio::test]
async fn a_wrong_kek_under_a_known_id_is_refused_at_start_up() {
    let app = spawn_in_memory().await;
    let mut settings = app.settings.clone();
    let wrong =
        csrd::crypto::Keyring::generate_entry(&csrd::crypto::KekId::parse("test-kek").unwrap());
    settings.keys.keks = Some(wrong.to_string().into());
    let err = csrd::startup::start_in_memory(&settings)
        .await
        .err()
        .expect("start-up must fail");
    assert!(err.to_string().contains("does not match"), "{err:#}");
}
