//! The audit log: what a run did shows up in `csrd audit` — who (token id or operator, never a
//! secret), what, which tenant, when, from which address, request and trace id — refused
//! callers are rate-limited, and the table refuses changes.

use serde_json::{Value, json};

use csrd::startup::Role;
use csrd_test_support::process::{run_ok, write_token_for};
use csrd_test_support::*;

const CSRD: &str = env!("CARGO_BIN_EXE_csrd");

fn audit(iso: &Isolation, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["audit", "--json"];
    all.extend_from_slice(args);
    run_ok(CSRD, iso, &all)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn actions(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn csrd_audit_shows_the_events_of_a_run() {
    let app = spawn_app().await;
    let iso = &app.iso;
    let token = write_token_for(CSRD, iso, ACCOUNT_A);
    let created = app
        .request(
            reqwest::Method::POST,
            &format!("/client/v4/accounts/{ACCOUNT_A}/custom_csrs"),
        )
        .bearer(&token)
        .header("x-request-id", "audit-test-1")
        .json(&p256_body())
        .send()
        .await;
    assert_eq!(created.status, 201);
    assert_eq!(created.header("x-request-id"), Some("audit-test-1"));
    let csr_id = created.json()["result"]["id"].as_str().unwrap().to_owned();

    let batch = app
        .submit_batch(ACCOUNT_A, &token, vec![p256_body(), p256_body()])
        .await;
    assert_eq!(batch.status, 202, "{:?}", batch.json());
    let deleted = app
        .request(
            reqwest::Method::DELETE,
            &format!("/client/v4/accounts/{ACCOUNT_A}/custom_csrs/{csr_id}"),
        )
        .bearer(&token)
        .send()
        .await;
    assert_eq!(deleted.status, 200);
    // Another tenant's CSRs, and a made-up token 30 times: denied, the failures rate-limited.
    let denied = app
        .request(
            reqwest::Method::GET,
            &format!("/client/v4/accounts/{ACCOUNT_B}/custom_csrs"),
        )
        .bearer(&token)
        .send()
        .await;
    assert_eq!(denied.status, 403);
    let unknown = csrd::auth::ApiToken::generate();
    for _ in 0..30 {
        let refused = app
            .request(
                reqwest::Method::GET,
                &format!("/client/v4/accounts/{ACCOUNT_A}/custom_csrs"),
            )
            .bearer(unknown.reveal())
            .send()
            .await;
        assert_eq!(refused.status, 403);
    }
    let token_id = audit(iso, &["--action", "token.create"])[0]["target"]
        .as_str()
        .unwrap()
        .to_owned();
    run_ok(CSRD, iso, &["token", "revoke", &token_id]);

    let events = eventually("the ingress's audit events to be written", || async {
        let events = audit(iso, &[]);
        let failures = actions(&events)
            .iter()
            .filter(|a| **a == "auth.failure")
            .count();
        (events.iter().any(|e| e["action"] == "token.revoke") && failures >= 9).then_some(events)
    })
    .await;
    let of = |action: &str| events.iter().find(|e| e["action"] == action).unwrap();

    let create = of("csr.create");
    assert_eq!(create["outcome"], "ok");
    assert_eq!(create["actor_kind"], "token");
    assert_eq!(create["actor"].as_str(), Some(token_id.as_str()));
    assert_eq!(create["owner_kind"], "account");
    assert_eq!(create["owner_id"], ACCOUNT_A);
    assert_eq!(create["target"].as_str(), Some(csr_id.as_str()));
    assert_eq!(create["remote_addr"], "127.0.0.1");
    assert_eq!(create["request_id"], "audit-test-1");
    assert_eq!(create["trace_id"].as_str().map(str::len), Some(32));
    assert_eq!(of("batch.submit")["detail"]["items"], 2);
    assert_eq!(of("csr.delete")["target"].as_str(), Some(csr_id.as_str()));
    let denial = of("access.denied");
    assert_eq!(
        (&denial["owner_id"], &denial["actor"]),
        (&json!(ACCOUNT_B), &json!(token_id))
    );
    let token_create = of("token.create");
    assert_eq!(token_create["actor_kind"], "operator");
    assert_eq!(token_create["detail"]["accounts"], json!([ACCOUNT_A]));
    assert_eq!(
        of("token.revoke")["target"].as_str(),
        Some(token_id.as_str())
    );
    // 31 refusals from one address (the denial and 30 failures): a burst of 10, then about
    // one a second.
    let failures = actions(&events)
        .iter()
        .filter(|a| **a == "auth.failure")
        .count();
    assert!(
        (9..30).contains(&failures),
        "{failures} auth failures recorded"
    );
    assert_eq!(of("auth.failure")["detail"]["reason"], "invalid");

    // Filters: one tenant, one action family, a time window.
    let b_only = audit(iso, &["--account", ACCOUNT_B]);
    assert_eq!(actions(&b_only), ["access.denied"]);
    assert_eq!(
        actions(&audit(iso, &["--action", "csr"])),
        ["csr.create", "csr.delete"]
    );
    assert!(audit(iso, &["--since", "2999-01-01T00:00:00Z"]).is_empty());
    assert_eq!(audit(iso, &["--since", "1h"]).len(), events.len());
    let text = run_ok(CSRD, iso, &["audit", "--action", "csr.create"]);
    assert!(text.contains("request=audit-test-1"), "{text}");
    // Never a secret.
    let everything = run_ok(CSRD, iso, &["audit", "--json"]);
    assert!(
        !everything.contains(&token),
        "the token appears in the audit log"
    );

    // Append-only, even for the table's owner.
    let client = app.pool.get().await.unwrap();
    for statement in [
        "UPDATE audit_log SET outcome = 'forged'",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
    ] {
        let refused = client.batch_execute(statement).await;
        assert!(refused.is_err(), "{statement} was allowed");
    }
}

/// outcome, actor kind, request id, remote address, and how many CSRs have the event's id.
type CreateEvent = (String, String, Option<String>, Option<String>, i64);

/// A create answered 202 (no worker yet) is audited `pending` by the ingress; the worker that
/// stores its CSR later writes the `ok` event in the row's own transaction, in the name of
/// the request that asked: a CSR never exists without its event, and never has two.
#[tokio::test]
async fn a_pending_create_gets_its_ok_event_when_the_worker_stores_it() {
    let app = spawn_role(Role::Ingress, |s| s.ingress.create_wait_secs = 1).await;
    let token = app
        .token(&[ACCOUNT_A], &[], csrd::auth::Permission::Write)
        .await;
    let pending = app
        .request(
            reqwest::Method::POST,
            &format!("/client/v4/accounts/{ACCOUNT_A}/custom_csrs"),
        )
        .bearer(&token)
        .header("x-request-id", "audit-pending-1")
        .json(&p256_body())
        .send()
        .await;
    assert_eq!(pending.status, 202, "{:?}", pending.json());
    let id: uuid::Uuid = pending.json()["result"]["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    let worker = app.start_worker().await;
    let events = eventually("the CSR's ok event", || async {
        let client = app.pool.get().await.unwrap();
        let rows = client
            .query(
                "SELECT outcome, actor_kind, request_id, remote_addr,
                        (SELECT count(*) FROM custom_csrs WHERE id = $1::uuid) AS csrs
                   FROM audit_log WHERE action = 'csr.create' AND target = $1::uuid::text
                  ORDER BY id",
                &[&id],
            )
            .await
            .unwrap();
        let events: Vec<CreateEvent> = rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
            .collect();
        (events.len() >= 2).then_some(events)
    })
    .await;
    worker.shutdown().await;
    let outcomes: Vec<&str> = events.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(outcomes, ["pending", "ok"], "{events:?}");
    for (_, actor_kind, request_id, remote_addr, csrs) in &events {
        assert_eq!(actor_kind, "token");
        assert_eq!(request_id.as_deref(), Some("audit-pending-1"));
        assert_eq!(remote_addr.as_deref(), Some("127.0.0.1"));
        assert_eq!(*csrs, 1);
    }
}
