//! `/metrics` after real traffic: every documented family is exported (histograms with
//! buckets), and every metric the Grafana dashboard queries is one csrd exports.

use std::collections::BTreeSet;

use csrd::auth::Permission;

use csrd_test_support::*;

async fn scrape(app: &TestApp) -> String {
    reqwest::get(app.admin_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Metric family names in an exposition (`_bucket`, `_sum`, `_count` samples under theirs).
fn families(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Every `csrd_…` metric name in the dashboard's queries, without histogram suffixes.
fn dashboard_metrics() -> BTreeSet<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/grafana/dashboards/csrd.json"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut names = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let mut rest = expr;
            while let Some(at) = rest.find("csrd_") {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[at + name.len()..];
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .unwrap_or(&name)
                    .to_owned();
                names.insert(family);
            }
        }
    }
    names
}

#[tokio::test]
async fn metrics_cover_requests_jobs_keys_queues_and_the_pool_and_the_dashboard_uses_only_them() {
    let app = spawn_app_with(|s| s.worker.key_pool_p256 = 4).await;
    let token = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    for body in [p256_body(), example_body()] {
        let created = app
            .create("accounts", ACCOUNT_A, Auth::Bearer(&token), &body)
            .await;
        assert_eq!(created.status, 201, "{}", created.body);
    }
    let batch = app
        .submit_batch(ACCOUNT_A, &token, vec![p256_body(), p256_body()])
        .await;
    assert_eq!(batch.status, 202);
    // Queue depths are sampled every 5 s from the broker.
    let text = eventually("queue depths and the batch in /metrics", || async {
        let text = scrape(&app).await;
        (text.contains("csrd_queue_messages{queue=") && text.contains("outcome=\"created\"} 4"))
            .then_some(text)
    })
    .await;

    let exported = families(&text);
    for family in [
        "csrd_http_responses_total",
        "csrd_http_request_duration_seconds",
        "csrd_http_requests_in_flight",
        "csrd_jobs_total",
        "csrd_chunks_published_total",
        "csrd_chunks_consumed_total",
        "csrd_chunk_items",
        "csrd_keygen_duration_seconds",
        "csrd_key_pool_depth",
        "csrd_queue_messages",
        "csrd_queue_consumers",
        "csrd_db_pool_connections",
        "csrd_db_pool_waiting",
        "csrd_db_pool_max",
        "csrd_build_info",
        "csrd_certificates_expiring",
    ] {
        assert!(exported.contains(family), "{family} missing from:\n{text}");
    }
    let route = "/client/v4/accounts/{account_id}/custom_csrs";
    assert!(
        text.contains(&format!(
            "csrd_http_request_duration_seconds_bucket{{route=\"{route}\",status=\"201\",le=\"+Inf\"}} 2"
        )),
        "{text}"
    );
    for key_type in ["p256v1", "rsa2048"] {
        assert!(
            text.contains(&format!(
                "csrd_keygen_duration_seconds_count{{key_type=\"{key_type}\"}}"
            )),
            "{key_type}: {text}"
        );
    }
    assert!(text.contains("# TYPE csrd_chunk_items histogram"), "{text}");

    let queried = dashboard_metrics();
    assert!(queried.len() >= 10, "{queried:?}");
    let missing: Vec<_> = queried.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics csrd does not export: {missing:?}"
    );
}
