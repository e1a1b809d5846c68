//! The batch API (a csrd extension): submit many creates at once, follow the batch, page through
//! its results. In memory (the real ingress and worker over the in-memory queue), plus one run
//! through RabbitMQ.

use csrd::auth::Permission;
use reqwest::Method;
use serde_json::{Value, json};

use csrd_test_support::*;

fn batches_path(kind: &str, owner: &str) -> String {
    format!("/client/v4/{kind}/{owner}/custom_csrs/batches")
}

fn items(n: usize) -> Value {
    json!({ "items": batch_items(n) })
}

async fn submit(
    app: &TestApp,
    owner: &str,
    token: &str,
    body: &Value,
    key: Option<&str>,
) -> RawResponse {
    let mut req = app
        .request(Method::POST, &batches_path("accounts", owner))
        .bearer(token)
        .json(body);
    if let Some(key) = key {
        req = req.header("idempotency-key", key);
    }
    req.send().await
}

async fn get(app: &TestApp, path: &str, token: &str) -> Response {
    app.send(Method::GET, path, Auth::Bearer(token), None).await
}

/// Polls the batch until it has settled every item.
async fn finished(app: &TestApp, location: &str, token: &str) -> Value {
    eventually("the batch to finish", || async {
        let r = get(app, location, token).await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.body["result"]["finished_at"]
            .is_string()
            .then(|| r.body["result"].clone())
    })
    .await
}

async fn batch_happy_path(app: TestApp) {
    let token = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let submitted = submit(&app, ACCOUNT_A, &token, &items(25), None).await;
    assert_eq!(submitted.status, 202, "{}", submitted.json());
    let body = submitted.json();
    assert_eq!(body["success"], true);
    let id = body["result"]["id"].as_str().unwrap().to_owned();
    assert_eq!(body["result"]["total"], 25);
    assert!(["pending", "running", "done"].contains(&body["result"]["status"].as_str().unwrap()));
    let location = submitted.header("location").unwrap().to_owned();
    assert_eq!(
        location,
        format!("{}/{id}", batches_path("accounts", ACCOUNT_A))
    );

    let done = finished(&app, &location, &token).await;
    assert_eq!(done["status"], "done");
    assert_eq!(
        (done["done"].as_i64(), done["failed"].as_i64()),
        (Some(25), Some(0))
    );

    // Results, in item order, over three pages.
    let mut seen = Vec::new();
    for page in 1..=3 {
        let r = get(
            &app,
            &format!("{location}/results?per_page=10&page={page}"),
            &token,
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["result_info"]["total_count"], 25);
        assert_eq!(r.body["result_info"]["total_pages"], 3);
        for entry in r.body["result"].as_array().unwrap() {
            let index = entry["index"].as_u64().unwrap();
            assert_eq!(entry["status"], "created");
            assert_eq!(entry["errors"], json!([]));
            assert_eq!(
                entry["result"]["common_name"],
                format!("item{index}.example.com")
            );
            assert_eq!(entry["result"]["id"], entry["id"]);
            seen.push((index, entry["id"].as_str().unwrap().to_owned()));
        }
    }
    assert_eq!(
        seen.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        (0..25).collect::<Vec<_>>()
    );

    // Ordinary custom CSRs: listed, readable, deletable.
    let list = get(
        &app,
        &format!("/client/v4/accounts/{ACCOUNT_A}/custom_csrs"),
        &token,
    )
    .await;
    assert_eq!(list.body["result_info"]["total_count"], 25);
    let one = format!("/client/v4/accounts/{ACCOUNT_A}/custom_csrs/{}", seen[3].1);
    assert_eq!(
        get(&app, &one, &token).await.body["result"]["common_name"],
        "item3.example.com"
    );
    let deleted = app
        .send(Method::DELETE, &one, Auth::Bearer(&token), None)
        .await;
    assert_eq!(deleted.status, 200);
    let r = get(&app, &format!("{location}/results?per_page=5"), &token).await;
    assert_eq!(r.body["result"][3]["status"], "deleted");
    assert_eq!(r.body["result"][3]["result"], Value::Null);

    // The tenant's batches.
    let listed = get(&app, &batches_path("accounts", ACCOUNT_A), &token).await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.body["result"][0]["id"], id.as_str());
    assert_eq!(listed.body["result_info"]["total_count"], 1);
}

#[tokio::test]
async fn a_batch_becomes_ordinary_csrs_and_its_results_page_in_item_order() {
    batch_happy_path(spawn_in_memory().await).await;
}

#[tokio::test]
async fn a_batch_through_rabbitmq() {
    batch_happy_path(spawn_app().await).await;
}

#[tokio::test]
async fn one_invalid_item_rejects_the_whole_batch_with_indexed_pointers() {
    let app = spawn_in_memory().await;
    let token = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let mut body = items(20);
    body["items"][17]["sans"] = json!(["not a host name"]);
    body["items"][4]["country"] = json!("XX");
    let r = submit(&app, ACCOUNT_A, &token, &body, None).await;
    assert_eq!(r.status, 400);
    let errors = r.json()["errors"].clone();
    let pointers: Vec<&str> = errors
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["source"]["pointer"].as_str())
        .collect();
    assert!(pointers.contains(&"/items/17/sans/0"), "{errors}");
    assert!(pointers.contains(&"/items/4/country"), "{errors}");
    assert_eq!(app.row_count().await, 0, "nothing was created");
    let listed = get(&app, &batches_path("accounts", ACCOUNT_A), &token).await;
    assert_eq!(
        listed.body["result_info"]["total_count"], 0,
        "no batch was stored"
    );

    for bad in [json!({"items": []}), json!({}), json!({"items": "x"})] {
        let r = submit(&app, ACCOUNT_A, &token, &bad, None).await;
        Response {
            status: r.status,
            body: r.json(),
        }
        .assert_failure(400, 1400);
    }
}

#[tokio::test]
async fn the_same_idempotency_key_and_body_give_the_same_batch() {
    let app = spawn_in_memory().await;
    let token = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let body = items(5);
    let first = submit(&app, ACCOUNT_A, &token, &body, Some("batch-1"))
        .await
        .json();
    let again = submit(&app, ACCOUNT_A, &token, &body, Some("batch-1")).await;
    assert_eq!(again.status, 202);
    assert_eq!(again.json()["result"]["id"], first["result"]["id"]);
    let other = submit(&app, ACCOUNT_A, &token, &items(6), Some("batch-1")).await;
    Response {
        status: other.status,
        body: other.json(),
    }
    .assert_failure(422, 1422);
    let location = format!(
        "{}/{}",
        batches_path("accounts", ACCOUNT_A),
        first["result"]["id"].as_str().unwrap()
    );
    finished(&app, &location, &token).await;
    assert_eq!(
        app.row_count().await,
        5,
        "one CSR per item, however often submitted"
    );
}

#[tokio::test]
async fn batches_keep_to_their_tenant() {
    let app = spawn_in_memory().await;
    let read_a = app.token(&[ACCOUNT_A], &[], Permission::Read).await;
    let write_b = app.token(&[ACCOUNT_B], &[], Permission::Write).await;

    let r = submit(&app, ACCOUNT_A, &read_a, &items(1), None).await;
    Response {
        status: r.status,
        body: r.json(),
    }
    .assert_failure(403, 10000);
    let r = submit(&app, ACCOUNT_A, &write_b, &items(1), None).await;
    Response {
        status: r.status,
        body: r.json(),
    }
    .assert_failure(403, 10000);

    let b = submit(&app, ACCOUNT_B, &write_b, &items(2), None)
        .await
        .json();
    let b_id = b["result"]["id"].as_str().unwrap();
    // A's read token, asking A's path for B's batch: like an unknown id.
    let as_a = format!("{}/{b_id}", batches_path("accounts", ACCOUNT_A));
    get(&app, &as_a, &read_a).await.assert_failure(404, 1419);
    get(&app, &format!("{as_a}/results"), &read_a)
        .await
        .assert_failure(404, 1419);
    let unknown = format!(
        "{}/{}",
        batches_path("accounts", ACCOUNT_A),
        uuid::Uuid::new_v4()
    );
    get(&app, &unknown, &read_a).await.assert_failure(404, 1419);
    let malformed = format!("{}/not-a-uuid", batches_path("accounts", ACCOUNT_A));
    get(&app, &malformed, &read_a)
        .await
        .assert_failure(400, 1418);
    // Without credentials the id is never looked at.
    app.send(Method::GET, &malformed, Auth::None, None)
        .await
        .assert_failure(400, 9106);
    let listed = get(&app, &batches_path("accounts", ACCOUNT_A), &read_a).await;
    assert_eq!(listed.body["result_info"]["total_count"], 0);

    let paging = get(
        &app,
        &format!(
            "{}/{b_id}/results?per_page=1001",
            batches_path("accounts", ACCOUNT_B)
        ),
        &write_b,
    )
    .await;
    paging.assert_failure(400, 1400);
}

#[tokio::test]
async fn switched_off_the_batch_routes_answer_404() {
    let app = spawn_in_memory_with(|s| s.ingress.batch_api = false).await;
    let token = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let r = submit(&app, ACCOUNT_A, &token, &items(1), None).await;
    Response {
        status: r.status,
        body: r.json(),
    }
    .assert_failure(404, 7000);
}

#[tokio::test]
async fn a_batch_body_over_its_limit_is_413_in_the_envelope() {
    let app = spawn_in_memory().await;
    let token = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    // Past the 32 MiB a batch may take (a plain create may take 1 MiB).
    let huge = format!("{{\"items\": [\"{}\"]}}", "x".repeat(33 * 1024 * 1024));
    let r = app
        .request(Method::POST, &batches_path("accounts", ACCOUNT_A))
        .bearer(&token)
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await;
    Response {
        status: r.status,
        body: r.json(),
    }
    .assert_failure(413, 1400);
    // Larger than a single create may be, and still accepted as a batch.
    let body = items(6000);
    assert!(body.to_string().len() > 1024 * 1024);
    let r = submit(&app, ACCOUNT_A, &token, &body, None).await;
    assert!(r.body.len() < 10_000);
    assert_eq!(r.status, 202, "{}", r.json());
}
