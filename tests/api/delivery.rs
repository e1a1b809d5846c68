//! Delivery guarantees that can be shown without restarting shared services: idempotency
//! keys, dead-lettered jobs, redelivered jobs, reconnects after a dropped connection, and
//! graceful shutdown. (Broker and database restarts are in `tests/faults`.)

use csrd::auth::Permission;
use csrd::startup::Role;
use lapin::message::BasicGetMessage;
use lapin::options::{BasicGetOptions, BasicRejectOptions};
use reqwest::Method;
use serde_json::json;

use csrd_test_support::*;

/// `POST url` with `body`, as the bearer `token`, with an `Idempotency-Key`.
async fn post_with_key(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    key: &str,
    body: &serde_json::Value,
) -> reqwest::Response {
    http.post(url)
        .bearer_auth(token)
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn create_with_key(
    app: &TestApp,
    token: &str,
    key: &str,
    body: &serde_json::Value,
) -> (u16, serde_json::Value, bool) {
    let url = app.url(&format!("/client/v4/accounts/{ACCOUNT_A}/custom_csrs"));
    let resp = post_with_key(&app.http, &url, token, key, body).await;
    let replayed = resp.headers().get("idempotent-replayed").is_some();
    (resp.status().as_u16(), resp.json().await.unwrap(), replayed)
}

/// Rejects a job taken off the queue: back onto it (`requeue`), or to the dead letters.
async fn reject(message: &BasicGetMessage, requeue: bool) {
    message
        .delivery
        .reject(BasicRejectOptions { requeue })
        .await
        .unwrap();
}

#[tokio::test]
async fn the_same_idempotency_key_and_body_return_the_same_csr_and_a_different_body_is_refused() {
    let app = spawn_app().await;
    let token = app.token(&[ACCOUNT_A], &[ZONE_A], Permission::Write).await;
    let (s1, first, r1) = create_with_key(&app, &token, "order-1", &p256_body()).await;
    assert_eq!((s1, r1), (201, false), "{first}");
    // Same request spelled differently (key order, quoted header form): same CSR.
    let reordered: serde_json::Value = serde_json::from_str(&p256_body().to_string()).unwrap();
    let (s2, second, r2) = create_with_key(&app, &token, "\"order-1\"", &reordered).await;
    assert_eq!((s2, r2), (201, true));
    assert_eq!(
        second["result"], first["result"],
        "the same CSR, byte for byte"
    );

    let (s3, refused, _) = create_with_key(
        &app,
        &token,
        "order-1",
        &with(p256_body(), "common_name", json!("other.example.com")),
    )
    .await;
    assert_eq!(s3, 422, "{refused}");
    assert_eq!(refused["errors"][0]["code"], json!(1422));
    assert_eq!(refused["success"], json!(false));

    // Keys are scoped per tenant: the same key on the zone is a new CSR.
    let url = app.url(&format!("/client/v4/zones/{ZONE_A}/custom_csrs"));
    let zone = post_with_key(&app.http, &url, &token, "order-1", &p256_body()).await;
    assert_eq!(zone.status().as_u16(), 201);
    let zone: serde_json::Value = zone.json().await.unwrap();
    assert_ne!(zone["result"]["id"], first["result"]["id"]);
    assert_eq!(app.row_count().await, 2);

    for bad in ["", &"k".repeat(256)] {
        let (status, body, _) = create_with_key(&app, &token, bad, &p256_body()).await;
        assert_eq!(status, 400, "{body}");
    }
}

#[tokio::test]
async fn replaying_a_key_whose_csr_was_deleted_answers_404_at_once_and_makes_nothing() {
    let app = spawn_app().await;
    let token = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let (status, created, _) = create_with_key(&app, &token, "gone", &p256_body()).await;
    assert_eq!(status, 201, "{created}");
    let path = format!(
        "/client/v4/accounts/{ACCOUNT_A}/custom_csrs/{}",
        created["result"]["id"].as_str().unwrap()
    );
    let deleted = app
        .send(Method::DELETE, &path, Auth::Bearer(&token), None)
        .await;
    assert_eq!(deleted.status, 200, "{}", deleted.body);

    // Before: every retry waited the whole budget and answered 202 with an id GET cannot find.
    let (status, replay, _) = create_with_key(&app, &token, "gone", &p256_body()).await;
    assert_eq!(status, 404, "{replay}");
    assert_eq!(replay["errors"][0]["code"], json!(1419));
    assert!(
        replay["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("deleted")
    );
    app.send(Method::GET, &path, Auth::Bearer(&token), None)
        .await
        .assert_failure(404, 1419);
    assert_eq!(app.row_count().await, 0, "no key was made again");
}

#[tokio::test]
async fn concurrent_requests_with_one_key_make_exactly_one_csr() {
    let app = spawn_app().await;
    let token = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let body = with(example_body(), "key_type", json!("rsa2048"));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (http, url, token, body) = (
            app.http.clone(),
            app.url(&format!("/client/v4/accounts/{ACCOUNT_A}/custom_csrs")),
            token.clone(),
            body.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let resp = post_with_key(&http, &url, &token, "batch-7", &body).await;
            let status = resp.status().as_u16();
            let v: serde_json::Value = resp.json().await.unwrap();
            (
                status,
                v["result"]["id"].as_str().unwrap_or_default().to_owned(),
            )
        }));
    }
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        let (status, id) = t.await.unwrap();
        assert_eq!(status, 201);
        ids.insert(id);
    }
    assert_eq!(ids.len(), 1, "every request got the same CSR");
    assert_eq!(
        app.row_count().await,
        1,
        "exactly one CSR and one key were stored"
    );
}

#[tokio::test]
async fn a_retry_after_202_on_another_ingress_gets_the_same_csr() {
    let app = spawn_role(Role::Ingress, |s| s.ingress.create_wait_secs = 1).await;
    let token = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let (status, pending, _) = create_with_key(&app, &token, "k-202", &p256_body()).await;
    assert_eq!(status, 202, "{pending}");
    let id = pending["result"]["id"].clone();

    let worker = app.start_worker().await;
    // A second ingress instance (as after a restart) with the same database and broker.
    let other = app.start_role(Role::Ingress).await;
    let url = format!(
        "http://{}/client/v4/accounts/{ACCOUNT_A}/custom_csrs",
        other.http_addr.unwrap()
    );
    // A client of its own, gone before `other` stops: an idle keep-alive connection would
    // hold up its shutdown until the drain deadline.
    let http = reqwest::Client::new();
    let resp = post_with_key(&http, &url, &token, "k-202", &p256_body()).await;
    assert_eq!(resp.status().as_u16(), 201);
    let done: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(done["result"]["id"], id, "the CSR the 202 announced");
    assert_eq!(app.row_count().await, 1);
    drop(http);
    other.shutdown().await;
    worker.shutdown().await;
}

#[tokio::test]
async fn a_dead_lettered_job_answers_the_waiting_client_with_1500_and_so_do_retries() {
    let app = spawn_role(Role::Ingress, |s| s.ingress.create_wait_secs = 20).await;
    let token = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let waiting = {
        let (http, url, token) = (
            app.http.clone(),
            app.url(&format!("/client/v4/accounts/{ACCOUNT_A}/custom_csrs")),
            token.clone(),
        );
        tokio::spawn(async move {
            let resp = post_with_key(&http, &url, &token, "doomed", &p256_body()).await;
            (
                resp.status().as_u16(),
                resp.json::<serde_json::Value>().await.unwrap(),
            )
        })
    };
    // Take the job off the queue and reject it, as a worker that cannot process it would.
    let (_conn, ch) = app.amqp_channel().await;
    let queue = app.topology().jobs_queue();
    let message = eventually("the job to be queued", || async {
        ch.basic_get(queue.as_str().into(), BasicGetOptions::default())
            .await
            .unwrap()
    })
    .await;
    reject(&message, false).await;

    // A worker's dead-letter consumer turns it into a failure the client sees.
    let worker = app.start_worker().await;
    let (status, body) = waiting.await.unwrap();
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["errors"][0]["code"], json!(1500));
    assert_eq!(body["success"], json!(false));
    let (status, _, _) = create_with_key(&app, &token, "doomed", &p256_body()).await;
    assert_eq!(
        status, 500,
        "a retry with the same key learns the same outcome"
    );
    assert_eq!(app.row_count().await, 0);
    worker.shutdown().await;
}

/// The sealed private key stored for the CSR `id`.
async fn key_ciphertext(client: &tokio_postgres::Client, id: uuid::Uuid) -> Vec<u8> {
    client
        .query_one(
            "SELECT key_ciphertext FROM custom_csrs WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn a_redelivered_job_whose_row_exists_makes_no_new_key() {
    let app = spawn_app().await;
    let token = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let (status, created, _) = create_with_key(&app, &token, "once", &p256_body()).await;
    assert_eq!(status, 201);
    let id = uuid::Uuid::parse_str(created["result"]["id"].as_str().unwrap()).unwrap();
    let client = app.pool.get().await.unwrap();
    let before = key_ciphertext(&client, id).await;

    // Publish the very same job again, as a redelivery would deliver it.
    let job: serde_json::Value = client
        .query_one("SELECT job FROM idempotency_keys WHERE key = 'once'", &[])
        .await
        .unwrap()
        .get(0);
    let (_conn, ch) = app.amqp_channel().await;
    ch.basic_publish(
        app.topology().jobs_exchange().as_str().into(),
        csrd::amqp::topology::CREATE_ROUTING_KEY.into(),
        Default::default(),
        job.to_string().as_bytes(),
        Default::default(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    eventually(
        "the worker to handle the redelivery as a replay",
        || async {
            let metrics = app
                .http
                .get(app.admin_url("/metrics"))
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            metrics
                .contains("csrd_jobs_total{outcome=\"replayed\"} 1")
                .then_some(())
        },
    )
    .await;
    let after = key_ciphertext(&client, id).await;
    assert_eq!(before, after, "the stored key is untouched");
    assert_eq!(app.row_count().await, 1);
    // The job came back as a new message, not flagged redelivered: the worker's plain insert
    // met the row, and the chunk was written again keeping it. Nothing of the failed attempt
    // stayed: still one create event.
    let events: i64 = client
        .query_one(
            "SELECT count(*) FROM audit_log WHERE action = 'csr.create' AND target = $1",
            &[&id.to_string()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(events, 1);
}

/// The connections RabbitMQ sees for this test's csrd (names carry the test's prefix).
fn connection_pids(prefix: &str) -> Vec<String> {
    let out = services::rabbitmqctl(&[
        "list_connections",
        "-q",
        "--no-table-headers",
        "pid",
        "client_properties",
    ]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(prefix))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn csrd_reconnects_by_itself_after_the_broker_drops_its_connections() {
    let app = spawn_app().await;
    let token = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let pids = connection_pids(&app.iso.prefix);
    assert_eq!(pids.len(), 2, "a publishing and a consuming connection");
    for pid in &pids {
        let closed = services::rabbitmqctl(&["close_connection", pid, "test: forced close"]);
        assert!(closed.status.success());
    }
    // Creates work again within seconds, without any restart.
    let (app, token) = (&app, token.as_str());
    eventually("creates to work again", move || async move {
        let resp = app
            .create("accounts", ACCOUNT_A, Auth::Bearer(token), &p256_body())
            .await;
        assert!(
            matches!(resp.status, 201 | 503 | 202),
            "only 503 while reconnecting: {}",
            resp.body
        );
        (resp.status == 201).then_some(())
    })
    .await;
    let ready = app.send(Method::GET, "/readyz", Auth::None, None).await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    let new_pids = connection_pids(&app.iso.prefix);
    assert_eq!(new_pids.len(), 2);
    assert!(
        new_pids.iter().all(|p| !pids.contains(p)),
        "new connections"
    );
}

#[tokio::test]
async fn the_callers_trace_context_travels_with_the_job() {
    let app = spawn_role(Role::Ingress, |s| s.ingress.create_wait_secs = 1).await;
    let token = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let resp = app
        .http
        .post(app.url(&format!("/client/v4/accounts/{ACCOUNT_A}/custom_csrs")))
        .bearer_auth(&token)
        .header("traceparent", format!("00-{trace_id}-b7ad6b7169203331-01"))
        .json(&p256_body())
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status().as_u16(),
        202,
        "no worker runs: the job waits in the queue"
    );
    let (_conn, ch) = app.amqp_channel().await;
    let message = ch
        .basic_get(
            app.topology().jobs_queue().as_str().into(),
            BasicGetOptions::default(),
        )
        .await
        .unwrap()
        .expect("the job is queued");
    let headers = message
        .delivery
        .properties
        .headers()
        .clone()
        .expect("job headers");
    let traceparent = match headers.inner().get("traceparent") {
        Some(lapin::types::AMQPValue::LongString(s)) => s.to_string(),
        other => panic!("no traceparent header: {other:?}"),
    };
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    assert_eq!(parts[1], trace_id, "the job continues the caller's trace");
    assert_ne!(parts[2], "b7ad6b7169203331", "under the ingress's own span");
    // Give the job back and let a worker finish it: an accepted create is never dropped.
    reject(&message, true).await;
    let worker = app.start_worker().await;
    eventually("the worker to make the CSR", || async {
        (app.row_count().await == 1).then_some(())
    })
    .await;
    worker.shutdown().await;
}

#[tokio::test]
async fn shutdown_is_not_held_up_by_a_client_that_never_finishes_its_request() {
    let app = spawn_role(Role::Ingress, |s| s.ingress.create_wait_secs = 1).await;
    let ingress = app.start_role(Role::Ingress).await;
    // A request that never finishes arriving (its headers stop half-way): the server cannot
    // answer it, and the client does not go away.
    let mut stalled = tokio::net::TcpStream::connect(ingress.http_addr.unwrap())
        .await
        .unwrap();
    use tokio::io::AsyncWriteExt;
    stalled
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: csrd\r\n")
        .await
        .unwrap();
    // The drain deadline is the wait budget (1 s) plus a margin of 5 s.
    tokio::time::timeout(std::time::Duration::from_secs(30), ingress.shutdown())
        .await
        .expect("the ingress stops although a connection is still open");
}
