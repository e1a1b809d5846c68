//! The create pipeline's edges: unroutable and refused jobs, the 202 pending answer.

use csrd::auth::Permission;
use csrd::startup::Role;
use lapin::types::FieldTable;
use serde_json::json;

use csrd_test_support::*;

#[tokio::test]
async fn a_job_that_cannot_be_routed_answers_503_with_retry_after() {
    let app = spawn_app().await;
    let token = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let topology = app.topology();
    let (_conn, ch) = app.amqp_channel().await;
    ch.queue_unbind(
        topology.jobs_queue().as_str().into(),
        topology.jobs_exchange().as_str().into(),
        csrd::amqp::topology::CREATE_ROUTING_KEY.into(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let resp = app
        .http
        .post(app.url(&format!("/client/v4/accounts/{ACCOUNT_A}/custom_csrs")))
        .bearer_auth(&token)
        .json(&p256_body())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    assert_eq!(resp.headers()["retry-after"], "1");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["success"], json!(false));
    assert_eq!(body["errors"][0]["code"], json!(1500));
    assert_eq!(app.row_count().await, 0);
}

#[tokio::test]
async fn a_full_queue_refuses_creates_with_503_and_pending_creates_finish_once_a_worker_runs() {
    // Ingress alone: jobs wait in the queue, which holds about one job.
    let app = spawn_role(Role::Ingress, |s| {
        s.broker.queue_max_length = 1;
        s.ingress.create_wait_secs = 1;
    })
    .await;
    let token = app.token(&[ACCOUNT_A], &[], Permission::Write).await;

    let body = p256_body();
    let mut pending_ids = Vec::new();
    let mut refused = 0;
    for _ in 0..4 {
        let resp = app
            .create("accounts", ACCOUNT_A, Auth::Bearer(&token), &body)
            .await;
        match resp.status {
            202 => {
                assert_eq!(resp.body["success"], json!(true));
                assert_eq!(resp.body["result"]["status"], json!("pending"));
                assert_eq!(resp.body["result"]["account_tag"], json!(ACCOUNT_A));
                pending_ids.push(resp.body["result"]["id"].as_str().unwrap().to_owned());
            }
            _ => {
                resp.assert_failure(503, 1500);
                refused += 1;
            }
        }
    }
    assert!(
        !pending_ids.is_empty(),
        "the first create is accepted as pending"
    );
    assert!(refused > 0, "a full queue refuses creates");

    let worker = app.start_worker().await;
    let rows = eventually("the pending creates to finish", || async {
        let rows = app.row_count().await;
        (rows as usize >= pending_ids.len()).then_some(rows)
    })
    .await;
    assert_eq!(
        rows as usize,
        pending_ids.len(),
        "exactly the accepted creates became rows"
    );
    let client = app.pool.get().await.unwrap();
    let mut stored: Vec<String> = client
        .query("SELECT id FROM custom_csrs", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, uuid::Uuid>(0).to_string())
        .collect();
    stored.sort();
    pending_ids.sort();
    assert_eq!(stored, pending_ids, "under the ids the 202s announced");
    worker.shutdown().await;
}
