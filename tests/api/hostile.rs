//! A hostile tenant with a valid token, with small numbers (`scripts/abuse` has the large
//! ones): answers stay small however bad the input, large reads are streamed and capped per
//! tenant, a client that stops reading is cut off, a spray of wrong tokens meets a limit per
//! address, ambiguous request framing is refused, and strings that would forge lines are
//! refused or escaped.

use std::time::Duration;

use csrd::auth::Permission;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use csrd_test_support::*;

fn batches_path() -> String {
    format!("/client/v4/accounts/{ACCOUNT_A}/custom_csrs/batches")
}

fn creates_path() -> String {
    format!("/client/v4/accounts/{ACCOUNT_A}/custom_csrs")
}

/// A distinct 253-character DNS name: the largest SAN there is.
fn long_san(item: usize, n: usize) -> String {
    format!(
        "{item:05}{n:03}{}.{}.{}.{}.com",
        "a".repeat(55),
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(57)
    )
}

/// A P-256 item with 150 of the largest SANs (about 39 KB of JSON, 77 KB in its result).
fn giant_item(item: usize) -> Value {
    let sans: Vec<String> = (0..150).map(|n| long_san(item, n)).collect();
    let cn = format!("giant{item}.example.com");
    with(
        with(p256_body(), "common_name", json!(cn)),
        "sans",
        json!(sans),
    )
}

async fn finished(app: &TestApp, location: &str, token: &str) {
    eventually("the batch to finish", || async {
        let r = app
            .send(Method::GET, location, Auth::Bearer(token), None)
            .await;
        r.body["result"]["finished_at"].is_string().then_some(())
    })
    .await;
}

async fn raw_exchange(app: &TestApp, request: &[u8]) -> (u16, Value) {
    let mut stream = TcpStream::connect(app.addr()).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
    let raw = String::from_utf8_lossy(&out);
    let status = raw
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {raw:?}"));
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn an_invalid_batch_lists_the_first_errors_and_counts_the_rest() {
    let app = spawn_in_memory().await;
    let token = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let bad = with(
        with(p256_body(), "sans", json!(vec!["not a name!"; 150])),
        "country",
        json!("XX"),
    );
    let answer = app.submit_batch(ACCOUNT_A, &token, vec![bad; 300]).await;
    assert_eq!(answer.status, 400);
    assert!(
        answer.body.len() < 64 * 1024,
        "{} bytes for 45,300 errors",
        answer.body.len()
    );
    let errors = answer.json()["errors"].as_array().unwrap().clone();
    assert_eq!(errors.len(), 101, "100 listed and one counting the rest");
    assert_eq!(errors[0]["source"]["pointer"], "/items/0/country");
    let last = errors[100]["message"].as_str().unwrap();
    assert!(last.starts_with("45200 more errors"), "{last}");
    assert_eq!(app.row_count().await, 0);
}

#[tokio::test]
async fn refused_bodies_cost_the_tenant_its_request_budget() {
    let app = spawn_in_memory_with(|s| {
        s.tenants.tenant_rate = 1.0;
        s.tenants.tenant_burst = 3.0;
    })
    .await;
    let token = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let r = app
            .request(Method::POST, &creates_path())
            .bearer(&token)
            .body("{not json")
            .send()
            .await;
        statuses.push(r.status);
    }
    assert_eq!(&statuses[..3], [400, 400, 400], "{statuses:?}");
    assert!(statuses[3..].contains(&429), "{statuses:?}");
}

#[tokio::test]
async fn a_results_page_is_streamed_whole_in_item_order() {
    let app = spawn_app().await;
    let token = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    // More entries than one part of a streamed page (32), and one part not full.
    let submitted = app.submit_batch(ACCOUNT_A, &token, batch_items(70)).await;
    assert_eq!(submitted.status, 202);
    let location = submitted.header("location").unwrap().to_owned();
    finished(&app, &location, &token).await;
    let page = app
        .send(
            Method::GET,
            &format!("{location}/results?per_page=1000"),
            Auth::Bearer(&token),
            None,
        )
        .await;
    assert_eq!(page.status, 200);
    let result = page.body["result"].as_array().unwrap();
    assert_eq!(result.len(), 70);
    for (i, entry) in result.iter().enumerate() {
        assert_eq!(entry["index"], i, "{entry}");
        assert_eq!(entry["status"], "created");
    }
    assert_eq!(page.body["result_info"]["count"], 70);
    assert_eq!(page.body["result_info"]["total_count"], 70);
    assert_eq!(page.body["success"], true);
    let second = app
        .send(
            Method::GET,
            &format!("{location}/results?per_page=50&page=2"),
            Auth::Bearer(&token),
            None,
        )
        .await;
    assert_eq!(second.body["result"].as_array().unwrap().len(), 20);
    assert_eq!(second.body["result"][0]["index"], 50);
}

/// A client that asks for a large page and never reads it holds its tenant's read slot only
/// until the write timeout; then its connection is closed and the slot is free again.
#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off_and_frees_its_read_slot() {
    let app = spawn_app_with(|s| {
        s.tenants.tenant_max_reads = 1;
        s.http.http_write_timeout_ms = 1_000;
    })
    .await;
    let token = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    // 200 entries of 77 KB: 15 MB of JSON, far more than the socket buffers hold.
    let submitted = app
        .submit_batch(ACCOUNT_A, &token, (0..200).map(giant_item).collect())
        .await;
    assert_eq!(submitted.status, 202, "{}", submitted.json());
    let location = submitted.header("location").unwrap().to_owned();
    finished(&app, &location, &token).await;
    let page = format!("{location}/results?per_page=1000");

    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket.connect(app.addr()).await.unwrap();
    stalled
        .write_all(
            format!("GET {page} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let read = |auth| app.send(Method::GET, &page, auth, None);
    read(Auth::Bearer(&token)).await.assert_failure(429, 971);

    eventually("the stalled reader to be cut off", || async {
        (app.metric("csrd_http_connections_write_stalled_total")
            .await
            >= 1.0)
            .then_some(())
    })
    .await;
    let whole = read(Auth::Bearer(&token)).await;
    assert_eq!(whole.status, 200);
    assert_eq!(whole.body["result"].as_array().unwrap().len(), 200);

    let mut received = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stalled.read_to_end(&mut received)).await;
    assert!(
        received.len() < 14_000_000,
        "the stalled connection was closed before its page: {} bytes",
        received.len()
    );
}

#[tokio::test]
async fn a_spray_of_distinct_wrong_tokens_meets_a_limit_per_address() {
    let app = spawn_app_with(|s| s.tenants.auth_failures_per_addr_per_min = 5).await;
    let list = creates_path();
    for _ in 0..5 {
        let bad = csrd::auth::ApiToken::generate();
        app.send(Method::GET, &list, Auth::Bearer(bad.reveal()), None)
            .await
            .assert_failure(403, 9109);
    }
    let bad = csrd::auth::ApiToken::generate();
    let refused = app
        .request(Method::GET, &list)
        .bearer(bad.reveal())
        .send()
        .await;
    refused.assert_failure(429, 971);
    assert!(refused.header("retry-after").is_some());
}

#[tokio::test]
async fn line_breaking_names_and_ip_like_or_bad_punycode_sans_are_refused() {
    let app =
        spawn_in_memory_with(|s| s.ingress.name_policy = csrd::domain::NamePolicy::Cloudflare)
            .await;
    let token = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let create = |body: Value| {
        let token = token.clone();
        let app = &app;
        async move {
            app.create("accounts", ACCOUNT_A, Auth::Bearer(&token), &body)
                .await
        }
    };
    let base = with(
        with(example_body(), "sans", json!(["shop.acme-widgets.io"])),
        "common_name",
        json!("shop.acme-widgets.io"),
    );
    for (key, value) in [
        ("name", "line 1\r\nline 2"),
        ("name", "tab\there"),
        ("description", "forged\nline"),
        ("description", "a\u{1b}[2Jb"),
    ] {
        let r = create(with(base.clone(), key, json!(value))).await;
        r.assert_failure(400, 1400);
        assert_eq!(r.body["errors"][0]["source"]["pointer"], format!("/{key}"));
    }
    for (san, code) in [
        ("0x7f.0x1", 1412),
        ("a.example.0x1f", 1412),
        ("xn--zz.com", 1413),
    ] {
        let r = create(with(base.clone(), "sans", json!([san]))).await;
        r.assert_failure(400, code);
    }
}

#[tokio::test]
async fn ambiguous_framing_and_a_missing_repeated_or_listed_host_are_refused() {
    let app = spawn_app().await;
    let post = |te: &str| {
        format!(
            "POST {} HTTP/1.1\r\nHost: x\r\n{te}\r\n5\r\nhello\r\n0\r\n\r\n",
            creates_path()
        )
    };
    let (status, envelope) = raw_exchange(
        &app,
        post("Transfer-Encoding: gzip, chunked\r\n").as_bytes(),
    )
    .await;
    assert_eq!(status, 501, "{envelope}");
    assert_eq!(envelope["success"], false);
    let (status, _) = raw_exchange(
        &app,
        post("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n").as_bytes(),
    )
    .await;
    assert_eq!(status, 400);
    let (status, envelope) = raw_exchange(&app, b"GET /healthz HTTP/1.1\r\n\r\n").await;
    assert_eq!(status, 400, "{envelope}");
    assert_eq!(envelope["errors"][0]["code"], 1400);
    let (status, _) =
        raw_exchange(&app, b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").await;
    assert_eq!(status, 400);
    // One Host line holding a list, user information or a space is as ambiguous (RFC 9112
    // section 3.2: an invalid field value is 400).
    for host in ["a, b", "a,b", "user@a", "a b", "a:port"] {
        let head = format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n");
        let (status, envelope) = raw_exchange(&app, head.as_bytes()).await;
        assert_eq!(status, 400, "Host: {host}: {envelope}");
    }
    for host in ["a", "127.0.0.1:8080", "[::1]:80", "csrd.example.com"] {
        let head = format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let (status, _) = raw_exchange(&app, head.as_bytes()).await;
        assert_eq!(status, 200, "Host: {host}");
    }
    // HTTP/1.0 has no Host requirement.
    let (status, _) = raw_exchange(&app, b"GET /healthz HTTP/1.0\r\n\r\n").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn the_batch_routes_413_names_its_own_limit() {
    let app = spawn_app().await;
    let token = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let request = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        batches_path(),
        40 * 1024 * 1024
    );
    let (status, envelope) = raw_exchange(&app, request.as_bytes()).await;
    assert_eq!(status, 413);
    let message = envelope["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("33554432"), "{message}");
}

#[tokio::test]
async fn unknown_routes_and_methods_are_counted() {
    let app = spawn_app().await;
    let r = app
        .send(Method::GET, "/no/such/route", Auth::None, None)
        .await;
    r.assert_failure(404, 7000);
    let r = app
        .send(Method::PUT, &creates_path(), Auth::None, None)
        .await;
    assert_eq!(r.status, 405);
    let text = reqwest::get(app.admin_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let counted = |status: &str| {
        text.lines().any(|l| {
            l.starts_with("csrd_http_responses_total{")
                && l.contains(&format!("status=\"{status}\""))
        })
    };
    assert!(counted("404"), "{text}");
    assert!(counted("405"), "{text}");
}
