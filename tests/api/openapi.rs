//! csrd's own OpenAPI document stays in step with the router.

use reqwest::Method;
use serde_json::Value;

use csrd_test_support::*;

#[tokio::test]
async fn openapi_document_covers_every_route_and_every_documented_route_exists() {
    let app = spawn_in_memory().await;
    let resp = app
        .send(Method::GET, "/openapi.json", Auth::None, None)
        .await;
    assert_eq!(resp.status, 200);
    let doc = resp.body;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));

    let mut operations = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            operations.push((method.to_uppercase(), path.clone(), op.clone()));
        }
    }
    let mut documented: Vec<String> = operations
        .iter()
        .map(|(m, p, _)| format!("{m} {p}"))
        .collect();
    documented.sort();
    let mut expected: Vec<String> = [
        "GET /client/v4/accounts/{account_id}/custom_csrs",
        "POST /client/v4/accounts/{account_id}/custom_csrs",
        "GET /client/v4/accounts/{account_id}/custom_csrs/{custom_csr_id}",
        "DELETE /client/v4/accounts/{account_id}/custom_csrs/{custom_csr_id}",
        "GET /client/v4/zones/{zone_id}/custom_csrs",
        "POST /client/v4/zones/{zone_id}/custom_csrs",
        "GET /client/v4/zones/{zone_id}/custom_csrs/{custom_csr_id}",
        "DELETE /client/v4/zones/{zone_id}/custom_csrs/{custom_csr_id}",
        "POST /client/v4/accounts/{account_id}/custom_csrs/batches",
        "GET /client/v4/accounts/{account_id}/custom_csrs/batches",
        "GET /client/v4/accounts/{account_id}/custom_csrs/batches/{batch_id}",
        "GET /client/v4/accounts/{account_id}/custom_csrs/batches/{batch_id}/results",
        "POST /client/v4/zones/{zone_id}/custom_csrs/batches",
        "GET /client/v4/zones/{zone_id}/custom_csrs/batches",
        "GET /client/v4/zones/{zone_id}/custom_csrs/batches/{batch_id}",
        "GET /client/v4/zones/{zone_id}/custom_csrs/batches/{batch_id}/results",
        "GET /client/v4/accounts/{account_id}/custom_certificates",
        "POST /client/v4/accounts/{account_id}/custom_certificates",
        "POST /client/v4/accounts/{account_id}/custom_certificates/bulk",
        "GET /client/v4/accounts/{account_id}/custom_certificates/{custom_certificate_id}",
        "PATCH /client/v4/accounts/{account_id}/custom_certificates/{custom_certificate_id}",
        "DELETE /client/v4/accounts/{account_id}/custom_certificates/{custom_certificate_id}",
        "GET /client/v4/zones/{zone_id}/custom_certificates",
        "POST /client/v4/zones/{zone_id}/custom_certificates",
        "POST /client/v4/zones/{zone_id}/custom_certificates/bulk",
        "GET /client/v4/zones/{zone_id}/custom_certificates/{custom_certificate_id}",
        "PATCH /client/v4/zones/{zone_id}/custom_certificates/{custom_certificate_id}",
        "DELETE /client/v4/zones/{zone_id}/custom_certificates/{custom_certificate_id}",
        "GET /client/v4/accounts/{account_id}/key_recipients",
        "POST /client/v4/accounts/{account_id}/key_recipients",
        "GET /client/v4/accounts/{account_id}/key_recipients/{key_recipient_id}",
        "DELETE /client/v4/accounts/{account_id}/key_recipients/{key_recipient_id}",
        "GET /client/v4/accounts/{account_id}/key_recipients/{key_recipient_id}/deliveries",
        "GET /client/v4/zones/{zone_id}/key_recipients",
        "POST /client/v4/zones/{zone_id}/key_recipients",
        "GET /client/v4/zones/{zone_id}/key_recipients/{key_recipient_id}",
        "DELETE /client/v4/zones/{zone_id}/key_recipients/{key_recipient_id}",
        "GET /client/v4/zones/{zone_id}/key_recipients/{key_recipient_id}/deliveries",
        "GET /healthz",
        "GET /readyz",
        "GET /openapi.json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    expected.sort();
    assert_eq!(documented, expected);

    // Every documented operation is really routed: never 7000 (no route) or 405.
    for (method, path, op) in &operations {
        let concrete = path
            .replace("{account_id}", ACCOUNT_A)
            .replace("{zone_id}", ZONE_A)
            .replace("{custom_csr_id}", &uuid::Uuid::new_v4().to_string())
            .replace("{key_recipient_id}", &uuid::Uuid::new_v4().to_string());
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let status = app.request(method.clone(), &concrete).send().await.status;
        assert!(
            status != 404 || concrete.contains("custom_csrs/"),
            "{method} {concrete} is not routed"
        );
        assert_ne!(status, 405, "{method} {concrete}");
        if path.starts_with("/client/v4") {
            assert_eq!(status, 400, "{method} {concrete}: unauthenticated → 9106");
            let security = op["security"]
                .as_array()
                .expect("API operations declare security");
            if path.contains("/key_recipients") {
                // Only a key-delivery token: legacy users have write access, never delivery.
                assert_eq!(security.len(), 1, "bearer only");
            } else {
                assert_eq!(security.len(), 2, "bearer, or email + key");
            }
            assert!(
                op["responses"]["4XX"].is_object(),
                "{method} {path} documents its failures"
            );
        }
    }

    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["api_token"]["scheme"], Value::from("bearer"));
    assert_eq!(schemes["api_email"]["name"], Value::from("X-Auth-Email"));
    assert_eq!(schemes["api_key"]["name"], Value::from("X-Auth-Key"));
    for schema in [
        "Failure",
        "CsrSingle",
        "CsrCollection",
        "CsrIdOnly",
        "CsrPending",
        "CsrResult",
        "ErrorItem",
    ] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "schema {schema}"
        );
    }
}

#[test]
fn the_served_document_is_the_one_the_library_builds() {
    let doc = csrd::http::openapi_document();
    let json = serde_json::to_value(&doc).unwrap();
    assert!(
        json["paths"]["/client/v4/accounts/{account_id}/custom_csrs"]["post"]["operationId"]
            .as_str()
            .unwrap()
            .contains("create-custom-csr")
    );
}
