//! List, get and delete.

use std::collections::HashSet;

use csrd::auth::Permission;
use reqwest::Method;
use serde_json::{Value, json};

use csrd_test_support::*;

async fn create_named(app: &TestApp, token: &str, name: &str) -> Value {
    let body = with(p256_body(), "name", json!(name));
    let resp = app
        .create("accounts", ACCOUNT_A, Auth::Bearer(token), &body)
        .await;
    assert_eq!(resp.status, 201, "{}", resp.body);
    resp.body["result"].clone()
}

fn account_a() -> csrd::domain::Owner {
    csrd::domain::Owner::Account(csrd::domain::AccountId::parse(ACCOUNT_A).unwrap())
}

/// The stored row and sealed key of `created` (a CSR of account A, as the API answered it).
async fn stored_row(
    client: &tokio_postgres::Client,
    created: &Value,
) -> (csrd::domain::CustomCsr, csrd::crypto::SealedKey) {
    let id = csrd::domain::CsrId::parse(created["id"].as_str().unwrap()).unwrap();
    let csr = csrd::db::csrs::get(client, &account_a(), id)
        .await
        .unwrap()
        .unwrap();
    let sealed = csrd::db::csrs::get_sealed_key(client, &account_a(), id)
        .await
        .unwrap()
        .unwrap();
    (csr, sealed)
}

async fn list(app: &TestApp, token: &str, kind: &str, owner: &str, query: &str) -> Response {
    app.send(
        Method::GET,
        &format!("/client/v4/{kind}/{owner}/custom_csrs{query}"),
        Auth::Bearer(token),
        None,
    )
    .await
}

fn ids(resp: &Response) -> Vec<String> {
    resp.body["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn lists_page_without_skipping_or_repeating_in_every_order() {
    let app = spawn_in_memory().await;
    let token = app.token(&[ACCOUNT_A], &[], Permission::Read).await;
    let writer = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let mut created = Vec::new();
    for i in 0..12 {
        // Three names only: many ties, which the id tie-break must order.
        created.push(create_named(&app, &writer, ["b", "a", "c"][i % 3]).await);
    }
    let all: HashSet<String> = created
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();

    for order in ["created_at", "name", "account_tag"] {
        for direction in ["asc", "desc"] {
            let mut seen = Vec::new();
            for page in 1..=4 {
                let resp = list(
                    &app,
                    &token,
                    "accounts",
                    ACCOUNT_A,
                    &format!("?per_page=5&page={page}&order={order}&direction={direction}"),
                )
                .await;
                assert_eq!(resp.status, 200, "{}", resp.body);
                let info = &resp.body["result_info"];
                let expected = [5, 5, 2, 0][page - 1];
                assert_eq!(
                    info["count"],
                    json!(expected),
                    "{order} {direction} page {page}"
                );
                assert_eq!(info["page"], json!(page));
                assert_eq!(info["per_page"], json!(5));
                assert_eq!(info["total_count"], json!(12));
                assert_eq!(info["total_pages"], json!(3));
                seen.extend(ids(&resp));
            }
            assert_eq!(seen.len(), 12, "{order} {direction}: no repeats");
            assert_eq!(
                seen.iter().cloned().collect::<HashSet<_>>(),
                all,
                "{order} {direction}: no skips"
            );

            let whole = list(
                &app,
                &token,
                "accounts",
                ACCOUNT_A,
                &format!("?order={order}&direction={direction}"),
            )
            .await;
            assert_eq!(
                ids(&whole),
                seen,
                "{order} {direction}: pages concatenate to the whole list"
            );
            let rows = whole.body["result"].as_array().unwrap();
            let key = |r: &Value| match order {
                "created_at" => r["created_at"].as_str().unwrap().to_owned(),
                "name" => r["name"].as_str().unwrap().to_owned(),
                _ => String::new(),
            };
            for pair in rows.windows(2) {
                let (a, b) = (key(&pair[0]), key(&pair[1]));
                if direction == "asc" {
                    assert!(a <= b, "{order} asc")
                } else {
                    assert!(a >= b, "{order} desc")
                }
            }
        }
    }
}

#[tokio::test]
async fn list_defaults_and_an_empty_tenant() {
    let app = spawn_in_memory().await;
    let token = app.token(&[ACCOUNT_A], &[ZONE_A], Permission::Read).await;
    let acc = list(&app, &token, "accounts", ACCOUNT_A, "").await;
    assert_eq!(acc.status, 200);
    assert_eq!(acc.body["success"], json!(true));
    assert_eq!(acc.body["result"], json!([]));
    assert_eq!(
        acc.body["result_info"],
        json!({"page": 1, "per_page": 50, "count": 0, "total_count": 0, "total_pages": 0})
    );
    let zone = list(&app, &token, "zones", ZONE_A, "").await;
    assert_eq!(zone.body["result_info"]["per_page"], json!(20));
}

#[tokio::test]
async fn malformed_list_parameters_answer_400_naming_the_parameter() {
    let app = spawn_in_memory().await;
    let token = app.token(&[ACCOUNT_A], &[], Permission::Read).await;
    for (query, param) in [
        ("?page=0", "page"),
        ("?page=-3", "page"),
        ("?page=abc", "page"),
        ("?per_page=4", "per_page"),
        ("?per_page=51", "per_page"),
        ("?per_page=1e400", "per_page"),
        ("?order=common_name", "order"),
        ("?direction=sideways", "direction"),
    ] {
        let resp = list(&app, &token, "accounts", ACCOUNT_A, query).await;
        resp.assert_failure(400, 1400);
        assert_eq!(
            resp.body["errors"][0]["source"]["parameter"],
            json!(param),
            "{query}"
        );
    }
    // Unknown parameters are ignored, numbers written as floats are accepted.
    assert_eq!(
        list(
            &app,
            &token,
            "accounts",
            ACCOUNT_A,
            "?foo=bar&page=1.0&per_page=5.0"
        )
        .await
        .status,
        200
    );
}

#[tokio::test]
async fn get_returns_what_create_returned_and_answers_1418_and_1419() {
    let app = spawn_in_memory().await;
    let token = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let created = create_named(&app, &token, "mine").await;
    let id = created["id"].as_str().unwrap();
    let path = |id: &str| format!("/client/v4/accounts/{ACCOUNT_A}/custom_csrs/{id}");
    let got = app
        .send(Method::GET, &path(id), Auth::Bearer(&token), None)
        .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body["success"], json!(true));
    assert_eq!(
        got.body["result"], created,
        "get shows exactly what create answered"
    );

    for bad in [
        "not-a-uuid",
        "7b1634171d2b4c84a38a2fb7a0cd7752",
        "%00",
        "x".repeat(300).as_str(),
    ] {
        app.send(Method::GET, &path(bad), Auth::Bearer(&token), None)
            .await
            .assert_failure(400, 1418);
    }
    let unknown = uuid::Uuid::new_v4().to_string();
    app.send(Method::GET, &path(&unknown), Auth::Bearer(&token), None)
        .await
        .assert_failure(404, 1419);
}

#[tokio::test]
async fn delete_removes_the_csr_and_its_sealed_key_with_or_without_a_body() {
    let app = spawn_in_memory().await;
    let token = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let first = create_named(&app, &token, "one").await;
    let second = create_named(&app, &token, "two").await;
    let client = app.pool.get().await.unwrap();
    let wrapped: Vec<u8> = client
        .query_one(
            "SELECT wrapped_dek FROM custom_csrs WHERE id = $1",
            &[&uuid::Uuid::parse_str(first["id"].as_str().unwrap()).unwrap()],
        )
        .await
        .unwrap()
        .get(0);
    let path = |r: &Value| {
        format!(
            "/client/v4/accounts/{ACCOUNT_A}/custom_csrs/{}",
            r["id"].as_str().unwrap()
        )
    };

    let no_body = app
        .send(Method::DELETE, &path(&first), Auth::Bearer(&token), None)
        .await;
    assert_eq!(no_body.status, 200, "{}", no_body.body);
    assert_eq!(no_body.body["result"], json!({"id": first["id"]}));
    let with_body = app
        .send(
            Method::DELETE,
            &path(&second),
            Auth::Bearer(&token),
            Some("{}".into()),
        )
        .await;
    assert_eq!(with_body.status, 200);
    assert_eq!(with_body.body["result"], json!({"id": second["id"]}));

    for gone in [&first, &second] {
        app.send(Method::GET, &path(gone), Auth::Bearer(&token), None)
            .await
            .assert_failure(404, 1419);
        app.send(Method::DELETE, &path(gone), Auth::Bearer(&token), None)
            .await
            .assert_failure(404, 1419);
    }
    assert_eq!(app.row_count().await, 0);
    let dump = pg_dump(&app.iso.database_url);
    assert!(
        !dump.contains(&hex::encode(&wrapped)),
        "the wrapped data key is gone, not flagged"
    );
}

#[tokio::test]
async fn total_count_stays_exact_across_deletes_and_replayed_inserts() {
    let app = spawn_in_memory().await;
    let token = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let a = create_named(&app, &token, "a").await;
    create_named(&app, &token, "b").await;
    create_named(&app, &token, "c").await;
    let total = |r: Response| r.body["result_info"]["total_count"].clone();
    assert_eq!(
        total(list(&app, &token, "accounts", ACCOUNT_A, "").await),
        json!(3)
    );

    // A replayed insert of an existing id (a redelivered job) changes nothing.
    let client = app.pool.get().await.unwrap();
    let (existing, sealed) = stored_row(&client, &a).await;
    assert!(
        !csrd::db::csrs::insert(&**client, &existing, &sealed)
            .await
            .unwrap()
    );
    assert_eq!(
        total(list(&app, &token, "accounts", ACCOUNT_A, "").await),
        json!(3)
    );

    let path = format!(
        "/client/v4/accounts/{ACCOUNT_A}/custom_csrs/{}",
        a["id"].as_str().unwrap()
    );
    assert_eq!(
        app.send(Method::DELETE, &path, Auth::Bearer(&token), None)
            .await
            .status,
        200
    );
    let after = list(&app, &token, "accounts", ACCOUNT_A, "").await;
    assert_eq!(total(after), json!(2));
}

#[tokio::test]
async fn a_chunk_without_events_is_copied_in_whole_or_refused_as_a_duplicate() {
    use csrd::db::csrs::{ExistingRows, insert_chunk};
    let app = spawn_in_memory().await;
    let token = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let a = create_named(&app, &token, "a").await;
    let owner = account_a();
    let client = app.pool.get().await.unwrap();
    let (model, sealed) = stored_row(&client, &a).await;
    // Two new rows like a batch chunk's: no audit events, no existing row expected.
    let rows: Vec<_> = (0..2)
        .map(|i| {
            let mut csr = model.clone();
            csr.id = csrd::domain::CsrId::new();
            csr.request.name = Some(format!("copied-{i}"));
            csr
        })
        .collect();
    let chunk: Vec<_> = rows.iter().map(|c| (c, &sealed)).collect();
    let inserted = insert_chunk(&*client, &chunk, ExistingRows::Fail, &[])
        .await
        .unwrap();
    assert_eq!(inserted, vec![rows[0].id, rows[1].id]);
    let total = |r: Response| r.body["result_info"]["total_count"].clone();
    assert_eq!(
        total(list(&app, &token, "accounts", ACCOUNT_A, "").await),
        json!(3),
        "the counts trigger saw the copied rows"
    );
    let copied = csrd::db::csrs::get(&**client, &owner, rows[1].id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(copied, rows[1], "every column as written");
    let wraps: i64 = client
        .query_one("SELECT sum(wraps)::int8 FROM kek_usage", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(wraps, 3, "the KEK's nonce budget counts the copied rows");

    // The same chunk again (a redelivery) is refused as a duplicate, so the worker writes it
    // again keeping the existing rows, which inserts nothing.
    let again = insert_chunk(&*client, &chunk, ExistingRows::Fail, &[]).await;
    assert!(again.is_err_and(|e| e.is_duplicate_csr()));
    let skipped = insert_chunk(&*client, &chunk, ExistingRows::Skip, &[])
        .await
        .unwrap();
    assert!(skipped.is_empty());
    assert_eq!(app.row_count().await, 3);
}
