use csrd::auth::Permission;
use reqwest::Method;
use serde_json::{Value, json};

use csrd_test_support::*;

#[tokio::test]
async fn every_validation_failure_answers_400_with_its_cloudflare_code_and_pointer() {
    let app = spawn_in_memory().await;
    let token = app.token(&[ACCOUNT_A], &[ZONE_A], Permission::Write).await;
    let b = example_body;
    let cases: Vec<(&str, Value, u64, Option<&str>)> = vec![
        (
            "missing country",
            without(b(), "country"),
            1405,
            Some("/country"),
        ),
        (
            "empty country",
            with(b(), "country", json!("")),
            1405,
            Some("/country"),
        ),
        (
            "country not ISO 3166",
            with(b(), "country", json!("XX")),
            1405,
            Some("/country"),
        ),
        (
            "country too long",
            with(b(), "country", json!("USA")),
            1405,
            Some("/country"),
        ),
        ("missing state", without(b(), "state"), 1406, Some("/state")),
        (
            "missing locality",
            without(b(), "locality"),
            1407,
            Some("/locality"),
        ),
        (
            "missing organization",
            without(b(), "organization"),
            1408,
            Some("/organization"),
        ),
        (
            "missing common_name",
            without(b(), "common_name"),
            1409,
            Some("/common_name"),
        ),
        (
            "blank common_name",
            with(b(), "common_name", json!("  ")),
            1409,
            Some("/common_name"),
        ),
        (
            "common_name over 64",
            with(b(), "common_name", json!("a".repeat(65))),
            1410,
            Some("/common_name"),
        ),
        ("no sans", without(b(), "sans"), 1411, Some("/sans")),
        (
            "empty sans",
            with(b(), "sans", json!([])),
            1411,
            Some("/sans"),
        ),
        (
            "IPv4 SAN",
            with(b(), "sans", json!(["192.0.2.10"])),
            1412,
            Some("/sans/0"),
        ),
        (
            "IPv6 SAN",
            with(b(), "sans", json!(["ok.example.com", "2001:db8::1"])),
            1412,
            Some("/sans/1"),
        ),
        (
            "special character",
            with(b(), "sans", json!(["exa$mple.com"])),
            1412,
            Some("/sans/0"),
        ),
        (
            "leading hyphen",
            with(b(), "sans", json!(["-example.com"])),
            1412,
            Some("/sans/0"),
        ),
        (
            "trailing hyphen",
            with(b(), "sans", json!(["example-.com"])),
            1412,
            Some("/sans/0"),
        ),
        (
            "256 characters",
            with(b(), "sans", json!([format!("{}coma", "a.".repeat(126))])),
            1412,
            Some("/sans/0"),
        ),
        (
            "label over 63",
            with(b(), "sans", json!([format!("{}.com", "a".repeat(64))])),
            1412,
            Some("/sans/0"),
        ),
        (
            "wildcard not leftmost",
            with(b(), "sans", json!(["www.*.example.com"])),
            1412,
            Some("/sans/0"),
        ),
        (
            "partial wildcard",
            with(b(), "sans", json!(["w*.example.com"])),
            1412,
            Some("/sans/0"),
        ),
        (
            "SAN not a string",
            with(b(), "sans", json!([42])),
            1412,
            Some("/sans/0"),
        ),
        (
            "over 150 SANs",
            with(b(), "sans", json!(vec!["a.example.com"; 151])),
            1412,
            Some("/sans"),
        ),
        (
            "non-ASCII SAN",
            with(b(), "sans", json!(["bücher.example"])),
            1413,
            Some("/sans/0"),
        ),
        (
            "unknown key_type",
            with(b(), "key_type", json!("rsa8192")),
            1417,
            Some("/key_type"),
        ),
        (
            "key_type wrong type",
            with(b(), "key_type", json!(2048)),
            1417,
            Some("/key_type"),
        ),
        (
            "sans wrong type",
            with(b(), "sans", json!("example.com")),
            1411,
            Some("/sans"),
        ),
        (
            "state wrong type",
            with(b(), "state", json!(["CA"])),
            1406,
            Some("/state"),
        ),
        (
            "name wrong type",
            with(b(), "name", json!({"a": 1})),
            1400,
            Some("/name"),
        ),
        (
            "NUL in organization",
            with(b(), "organization", json!("Acme\u{0}Inc")),
            1408,
            Some("/organization"),
        ),
    ];
    for (what, body, code, pointer) in cases {
        let resp = app
            .create("accounts", ACCOUNT_A, Auth::Bearer(&token), &body)
            .await;
        assert_eq!(resp.status, 400, "{what}: {}", resp.body);
        assert_eq!(resp.codes(), vec![code], "{what}: {}", resp.body);
        assert_eq!(resp.body["success"], json!(false), "{what}");
        assert_eq!(
            resp.body["errors"][0]["source"]["pointer"].as_str(),
            pointer,
            "{what}"
        );
    }
}

#[tokio::test]
async fn malformed_bodies_answer_1400() {
    let app = spawn_in_memory().await;
    let token = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    for body in [
        "{",
        "",
        "[]",
        "\"text\"",
        "null",
        "{\"sans\": [}",
        "\u{feff}{}",
    ] {
        let resp = app
            .send(
                Method::POST,
                &format!("/client/v4/accounts/{ACCOUNT_A}/custom_csrs"),
                Auth::Bearer(&token),
                Some(body.into()),
            )
            .await;
        resp.assert_failure(400, 1400);
    }
}

#[tokio::test]
async fn several_errors_are_reported_together() {
    let app = spawn_in_memory().await;
    let token = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let resp = app
        .create(
            "accounts",
            ACCOUNT_A,
            Auth::Bearer(&token),
            &json!({"key_type": "dsa"}),
        )
        .await;
    assert_eq!(resp.status, 400);
    assert_eq!(resp.codes(), vec![1405, 1406, 1407, 1408, 1409, 1417, 1411]);
}

#[tokio::test]
async fn reserved_names_are_accepted_by_default_and_refused_under_the_cloudflare_policy() {
    let app =
        spawn_in_memory_with(|s| s.ingress.name_policy = csrd::domain::NamePolicy::Cloudflare)
            .await;
    let token = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let b = example_body;
    for (sans, code) in [
        (json!(["shop.test"]), 1414),
        (json!(["localhost"]), 1414),
        (json!(["co.uk"]), 1415),
        (json!(["www.example.com"]), 1416),
        (json!(["example.net"]), 1416),
    ] {
        let resp = app
            .create(
                "accounts",
                ACCOUNT_A,
                Auth::Bearer(&token),
                &with(b(), "sans", sans.clone()),
            )
            .await;
        resp.assert_failure(400, code);
    }
    let ok = app
        .create(
            "accounts",
            ACCOUNT_A,
            Auth::Bearer(&token),
            &with(
                with(b(), "sans", json!(["*.shop.acme-widgets.io"])),
                "key_type",
                json!("p256v1"),
            ),
        )
        .await;
    assert_eq!(ok.status, 201, "{}", ok.body);
}

#[tokio::test]
async fn malformed_owner_ids_answer_7003() {
    let app = spawn_in_memory().await;
    let token = app.token(&[ACCOUNT_A], &[ZONE_A], Permission::Write).await;
    for kind in ["accounts", "zones"] {
        for bad in [
            "abc",
            "023E105F4ECEF8AD9CA31A8372D0C353",
            "023e105f4ecef8ad9ca31a8372d0c353ff",
            "%FF%FE",
        ] {
            let resp = app
                .create(kind, bad, Auth::Bearer(&token), &example_body())
                .await;
            resp.assert_failure(400, 7003);
        }
    }
}

#[tokio::test]
async fn framework_level_errors_use_the_failure_envelope() {
    let app = spawn_in_memory().await;
    let token = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let path = format!("/client/v4/accounts/{ACCOUNT_A}/custom_csrs");

    app.send(Method::GET, "/client/v4/nothing/here", Auth::None, None)
        .await
        .assert_failure(404, 7000);
    app.send(Method::PUT, &path, Auth::Bearer(&token), Some("{}".into()))
        .await
        .assert_failure(405, 7001);
    app.send(
        Method::PATCH,
        &path,
        Auth::Bearer(&token),
        Some("{}".into()),
    )
    .await
    .assert_failure(405, 7001);

    let huge = format!("{{\"name\": \"{}\"}}", "a".repeat(1024 * 1024 + 10));
    let resp = app
        .send(Method::POST, &path, Auth::Bearer(&token), Some(huge))
        .await;
    resp.assert_failure(413, 1400);

    let resp = app
        .request(Method::POST, &path)
        .bearer(&token)
        .header("Content-Type", "text/plain")
        .body(example_body().to_string())
        .send()
        .await;
    assert_eq!(resp.status, 415);
    assert_eq!(resp.json()["success"], json!(false));

    // Chunked body with no Content-Length, over the limit: refused while streaming.
    let chunks = futures_util::stream::iter(
        (0..20).map(|_| Ok::<_, std::io::Error>(vec![b' '; 100 * 1024])),
    );
    let resp = app
        .request(Method::POST, &path)
        .bearer(&token)
        .header("Content-Type", "application/json")
        .stream(chunks)
        .send()
        .await;
    assert_eq!(resp.status, 413);
    assert_eq!(resp.json()["errors"][0]["code"], json!(1400));
}

#[tokio::test]
async fn curl_dash_d_without_a_content_type_header_still_works() {
    // `curl -d '{…}'` labels the body application/x-www-form-urlencoded.
    let app = spawn_in_memory().await;
    let token = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let path = format!("/client/v4/accounts/{ACCOUNT_A}/custom_csrs");
    let resp = app
        .request(Method::POST, &path)
        .bearer(&token)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(p256_body().to_string())
        .send()
        .await;
    assert_eq!(resp.status, 201);
    let form = app
        .request(Method::POST, &path)
        .bearer(&token)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("common_name=example.com&country=US")
        .send()
        .await;
    assert_eq!(form.status, 400, "a real form body is not JSON: 1400");
}

#[tokio::test]
async fn ambiguous_requests_are_refused_not_resolved() {
    let app = spawn_in_memory().await;
    let token = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let other = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let path = format!("/client/v4/accounts/{ACCOUNT_A}/custom_csrs");
    let as_response = |r: RawResponse| Response {
        status: r.status,
        body: r.json(),
    };

    // Two Authorization headers: which caller is this?
    let r = app
        .request(Method::GET, &path)
        .header("authorization", &format!("Bearer {token}"))
        .header("authorization", &format!("Bearer {other}"))
        .send()
        .await;
    as_response(r).assert_failure(400, 6003);

    // Two Idempotency-Keys.
    let r = app
        .request(Method::POST, &path)
        .bearer(&token)
        .header("idempotency-key", "a")
        .header("idempotency-key", "b")
        .json(&p256_body())
        .send()
        .await;
    as_response(r).assert_failure(400, 1400);

    // A key given twice in the body.
    let r = app
        .request(Method::POST, &path)
        .bearer(&token)
        .header("content-type", "application/json")
        .body(r#"{"common_name":"a.example.com","country":"US","state":"CA","locality":"SF","organization":"A","organization":"B","sans":["a.example.com"]}"#)
        .send()
        .await;
    as_response(r).assert_failure(400, 1400);

    // Fractional or overflowing paging.
    for q in ["page=2.5", "per_page=10.5", "page=18446744073709551616"] {
        app.send(
            Method::GET,
            &format!("{path}?{q}"),
            Auth::Bearer(&token),
            None,
        )
        .await
        .assert_failure(400, 1400);
    }
    assert_eq!(app.row_count().await, 0);
}
