//! Fair share without waste: a lone tenant is not throttled at the defaults; tenants under
//! contention share the keygen capacity by weight (batches interleave, a late small batch is
//! not starved, a single create beats a running batch, one tenant's singles do not stall
//! another's batch); the request rate holds across two ingresses; operators' overrides apply.
//! Small numbers; `scripts/fairshare` measures the large ones. The orderings are asserted from
//! progress (how far one batch got when another finished), never from timings.

use std::time::Duration;

use csrd::auth::Permission;
use csrd::startup::Role;
use reqwest::Method;
use serde_json::Value;

use csrd_test_support::process::run_ok;
use csrd_test_support::*;

const ACCOUNT_C: &str = "c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0";
const CSRD: &str = env!("CARGO_BIN_EXE_csrd");

fn rsa_items(n: usize) -> Vec<Value> {
    (0..n).map(|_| example_body()).collect()
}

fn p256_items(n: usize) -> Vec<Value> {
    (0..n).map(|_| p256_body()).collect()
}

/// One RSA key per chunk, made fresh (no pool), one at a time: progress shows key by key.
fn one_key_at_a_time(s: &mut csrd::settings::Settings) {
    s.worker.workers = Some(1);
    s.worker.key_pool_rsa2048 = 0;
    s.ingress.batch_chunk_items = 256;
    s.ingress.create_wait_secs = 120;
}

/// Submits a batch of `items` for `account`; its path.
async fn submit(app: &TestApp, account: &str, token: &str, items: Vec<Value>) -> String {
    let submitted = app.submit_batch(account, token, items).await;
    assert_eq!(submitted.status, 202, "{}", submitted.json());
    let id = submitted.json()["result"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    format!("/client/v4/accounts/{account}/custom_csrs/batches/{id}")
}

/// `(done + failed, finished)` of a batch.
async fn progress(app: &TestApp, path: &str, token: &str) -> (u64, bool) {
    let got = app.request(Method::GET, path).bearer(token).send().await;
    let r = &got.json()["result"];
    let settled = r["done"].as_u64().unwrap() + r["failed"].as_u64().unwrap();
    (settled, r["finished_at"].is_string())
}

/// Polls the batches until one finishes; then every batch's settled count.
async fn when_first_finishes(app: &TestApp, batches: &[(&str, &str)]) -> Vec<u64> {
    eventually_within("a batch to finish", Duration::from_secs(120), || async {
        let mut settled = Vec::new();
        let mut any = false;
        for (path, token) in batches {
            let (n, finished) = progress(app, path, token).await;
            settled.push(n);
            any |= finished;
        }
        any.then_some(settled)
    })
    .await
}

/// Waits until the app holds `n` CSRs.
async fn rows_reach(app: &TestApp, n: i64) {
    eventually(&format!("{n} CSRs to be made"), || async {
        (app.row_count().await == n).then_some(())
    })
    .await;
}

async fn wait_finished(app: &TestApp, path: &str, token: &str) {
    eventually_within("the batch to finish", Duration::from_secs(180), || async {
        progress(app, path, token).await.1.then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_lone_tenant_is_not_throttled_at_the_defaults() {
    // The defaults, as shipped: a 6,000-item batch and a burst of creates and reads.
    let app = spawn_app().await;
    let token = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let batch = submit(&app, ACCOUNT_A, &token, p256_items(6000)).await;
    let body = p256_body();
    let creates = (0..64).map(|_| app.create("accounts", ACCOUNT_A, Auth::Bearer(&token), &body));
    for created in futures_util::future::join_all(creates).await {
        assert_eq!(created.status, 201, "{}", created.body);
    }
    let lists = (0..200).map(|_| {
        app.request(
            Method::GET,
            &format!("/client/v4/accounts/{ACCOUNT_A}/custom_csrs"),
        )
        .bearer(&token)
        .send()
    });
    for listed in futures_util::future::join_all(lists).await {
        assert_eq!(listed.status, 200, "{}", listed.json());
    }
    let again = submit(&app, ACCOUNT_A, &token, p256_items(10)).await;
    wait_finished(&app, &batch, &token).await;
    wait_finished(&app, &again, &token).await;
}

#[tokio::test]
async fn two_tenants_batches_submitted_together_interleave() {
    let app = spawn_app_with(one_key_at_a_time).await;
    let a = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let b = app.token(&[ACCOUNT_B], &[], Permission::Write).await;
    let batch_a = submit(&app, ACCOUNT_A, &a, rsa_items(12)).await;
    let batch_b = submit(&app, ACCOUNT_B, &b, rsa_items(12)).await;
    let settled = when_first_finishes(&app, &[(&batch_a, &a), (&batch_b, &b)]).await;
    // First in, first out, B would not have started when A finished.
    assert!(
        settled.iter().all(|n| *n >= 6),
        "one batch finished while the other had settled less than half: {settled:?}"
    );
    wait_finished(&app, &batch_a, &a).await;
    wait_finished(&app, &batch_b, &b).await;
}

#[tokio::test]
async fn a_small_batch_submitted_later_is_not_starved() {
    let app = spawn_app_with(one_key_at_a_time).await;
    let a = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let b = app.token(&[ACCOUNT_B], &[], Permission::Write).await;
    let c = app.token(&[ACCOUNT_C], &[], Permission::Write).await;
    let batch_a = submit(&app, ACCOUNT_A, &a, rsa_items(12)).await;
    let batch_b = submit(&app, ACCOUNT_B, &b, rsa_items(12)).await;
    eventually("the big batches to start", || async {
        (progress(&app, &batch_a, &a).await.0 > 0).then_some(())
    })
    .await;
    let batch_c = submit(&app, ACCOUNT_C, &c, rsa_items(1)).await;
    wait_finished(&app, &batch_c, &c).await;
    let (done_a, _) = progress(&app, &batch_a, &a).await;
    let (done_b, _) = progress(&app, &batch_b, &b).await;
    assert!(
        done_a + done_b <= 12,
        "C's one item waited until {done_a} + {done_b} of the 24 before it were made"
    );
    wait_finished(&app, &batch_a, &a).await;
    wait_finished(&app, &batch_b, &b).await;
}

/// Between one tenant's batch and another's single creates, the keygen slot is shared: B's
/// flood of single creates does not stop A's batch (single creates only go before batch
/// items within one tenant).
#[tokio::test]
async fn one_tenants_single_creates_do_not_stall_anothers_batch() {
    let app = spawn_app_with(|s| {
        one_key_at_a_time(s);
        s.tenants.ingress_window = 256 * 8;
    })
    .await;
    let a = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let b = app.token(&[ACCOUNT_B], &[], Permission::Write).await;
    let batch_a = submit(&app, ACCOUNT_A, &a, rsa_items(12)).await;
    eventually("A's batch to start", || async {
        (progress(&app, &batch_a, &a).await.0 > 0).then_some(())
    })
    .await;
    let (before, _) = progress(&app, &batch_a, &a).await;
    let body = example_body();
    let flood = (0..16).map(|_| app.create("accounts", ACCOUNT_B, Auth::Bearer(&b), &body));
    for created in futures_util::future::join_all(flood).await {
        assert_eq!(created.status, 201, "{}", created.body);
    }
    let (after, _) = progress(&app, &batch_a, &a).await;
    // Single creates first across tenants, A's batch would have made nothing meanwhile.
    assert!(
        after >= before + 4,
        "A's batch made {} keys while B's 16 single creates were made",
        after - before
    );
    wait_finished(&app, &batch_a, &a).await;
}

/// The dearest key type does not buy a tenant the machine: while A's batch of RSA-4096 keys
/// (each about ten RSA-2048 keys of CPU) runs at the defaults, B's P-256 single creates are
/// made between A's keys, not after them.
#[tokio::test]
async fn anothers_rsa4096_batch_does_not_hold_back_p256_single_creates() {
    let app = spawn_app().await;
    let a = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let b = app.token(&[ACCOUNT_B], &[], Permission::Write).await;
    let items = (0..24)
        .map(|_| with(example_body(), "key_type", serde_json::json!("rsa4096")))
        .collect();
    let batch_a = submit(&app, ACCOUNT_A, &a, items).await;
    eventually("A's batch to start", || async {
        (progress(&app, &batch_a, &a).await.0 > 0).then_some(())
    })
    .await;
    let (before, _) = progress(&app, &batch_a, &a).await;
    let body = p256_body();
    let creates = (0..16).map(|_| app.create("accounts", ACCOUNT_B, Auth::Bearer(&b), &body));
    for created in futures_util::future::join_all(creates).await {
        assert_eq!(created.status, 201, "{}", created.body);
        assert_eq!(created.body["result"]["key_type"], "p256v1");
    }
    let (after, finished) = progress(&app, &batch_a, &a).await;
    // Behind A's batch, B's creates would have waited for its remaining keys.
    assert!(
        !finished && after - before <= 8,
        "A's batch made {} of its remaining {} RSA-4096 keys while B's 16 P-256 creates were made",
        after - before,
        24 - before
    );
    wait_finished(&app, &batch_a, &a).await;
}

/// Requests answered 200 and refused 429 in `run_for`, sent one after another to `urls` in
/// turn.
async fn hammer(
    http: &reqwest::Client,
    urls: &[String],
    token: &str,
    run_for: Duration,
) -> (u32, u32) {
    let started = tokio::time::Instant::now();
    let (mut ok, mut refused) = (0, 0);
    let mut i = 0;
    while started.elapsed() < run_for {
        let status = http
            .get(&urls[i % urls.len()])
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        i += 1;
        match status {
            200 => ok += 1,
            429 => refused += 1,
            other => panic!("unexpected {other}"),
        }
    }
    (ok, refused)
}

#[tokio::test]
async fn the_request_rate_holds_across_two_ingresses() {
    let (rate, burst) = (20.0, 20.0);
    let app = spawn_role(Role::Ingress, |s| {
        s.tenants.tenant_rate = rate;
        s.tenants.tenant_burst = burst;
    })
    .await;
    let second = app.start_role(Role::Ingress).await;
    let a = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let b = app.token(&[ACCOUNT_B], &[], Permission::Write).await;
    let list = |addr: std::net::SocketAddr, account: &str| {
        format!("http://{addr}/client/v4/accounts/{account}/custom_csrs")
    };
    let one = [list(app.addr(), ACCOUNT_A)];
    let two = [
        list(app.addr(), ACCOUNT_B),
        list(second.http_addr.unwrap(), ACCOUNT_B),
    ];
    // At the same time: A over one ingress, B spread over both.
    let run_for = Duration::from_secs(3);
    let ((ok_one, _), (ok_two, refused_two)) = tokio::join!(
        hammer(&app.http, &one, &a, run_for),
        hammer(&app.http, &two, &b, run_for)
    );
    let allowed = burst + rate * run_for.as_secs_f64();
    // With a bucket per ingress, B would get about twice A's.
    let ratio = f64::from(ok_two) / f64::from(ok_one);
    assert!(
        (0.8..=1.2).contains(&ratio),
        "over two ingresses {ok_two}, over one {ok_one}; the rate allows {allowed:.0}"
    );
    assert!(
        f64::from(ok_two) <= allowed * 1.2,
        "{ok_two} of {allowed:.0}"
    );
    assert!(refused_two > 0);
    second.shutdown().await;
}

#[tokio::test]
async fn operators_overrides_of_rate_quota_and_weight_apply() {
    let app = spawn_app_with(one_key_at_a_time).await;
    let a = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let b = app.token(&[ACCOUNT_B], &[], Permission::Write).await;
    let tenant = |args: &[&str]| {
        let mut all = vec!["tenant", "limits"];
        all.extend_from_slice(args);
        run_ok(CSRD, &app.iso, &all)
    };

    // An hourly quota: 3 items, then 429 until the hour is over.
    tenant(&["set", "--account", ACCOUNT_B, "--items-per-hour", "3"]);
    let over = eventually("the quota to apply", || async {
        let r = app.submit_batch(ACCOUNT_B, &b, p256_items(4)).await;
        (r.status == 429).then_some(r)
    })
    .await;
    assert_eq!(over.json()["errors"][0]["code"], 971);
    assert!(over.header("retry-after").is_some());
    for _ in 0..3 {
        let made = app
            .create("accounts", ACCOUNT_B, Auth::Bearer(&b), &p256_body())
            .await;
        assert_eq!(made.status, 201, "{}", made.body);
    }
    app.create("accounts", ACCOUNT_B, Auth::Bearer(&b), &p256_body())
        .await
        .assert_failure(429, 971);

    // A rate: 1 a second, a burst of 2.
    tenant(&["set", "--account", ACCOUNT_B, "--rate", "1", "--burst", "2"]);
    eventually("the rate to apply", || async {
        let mut statuses = Vec::new();
        for _ in 0..4 {
            let r = app
                .request(
                    Method::GET,
                    &format!("/client/v4/accounts/{ACCOUNT_B}/custom_csrs"),
                )
                .bearer(&b)
                .send()
                .await;
            statuses.push(r.status);
        }
        statuses.contains(&429).then_some(())
    })
    .await;
    let shown = tenant(&["show", "--account", ACCOUNT_B, "--json"]);
    let shown: Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(
        (
            &shown["rate"],
            &shown["burst"],
            &shown["items_per_hour"],
            &shown["weight"]
        ),
        (
            &serde_json::json!(1.0),
            &serde_json::json!(2.0),
            &serde_json::json!(3),
            &Value::Null
        )
    );
    tenant(&["clear", "--account", ACCOUNT_B]);
    eventually("the defaults to apply again", || async {
        let r = app.submit_batch(ACCOUNT_B, &b, p256_items(4)).await;
        (r.status == 202).then_some(())
    })
    .await;
    let audited = run_ok(CSRD, &app.iso, &["audit", "--action", "tenant", "--json"]);
    let actions: Vec<String> = audited
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["action"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        actions,
        [
            "tenant.limits.set",
            "tenant.limits.set",
            "tenant.limits.clear"
        ]
    );

    // A weight: A at 3 gets about three keys for each of B's.
    tenant(&["set", "--account", ACCOUNT_A, "--weight", "3"]);
    // Every process reads the overrides again within this time.
    tokio::time::sleep(csrd::fairshare::policy::REFRESH * 2).await;
    let batch_a = submit(&app, ACCOUNT_A, &a, rsa_items(12)).await;
    let batch_b = submit(&app, ACCOUNT_B, &b, rsa_items(12)).await;
    let settled = when_first_finishes(&app, &[(&batch_a, &a), (&batch_b, &b)]).await;
    assert!(
        settled[0] == 12 && settled[1] <= 8,
        "A (weight 3) and B (weight 1) settled {settled:?} when the first finished"
    );
    wait_finished(&app, &batch_a, &a).await;
    wait_finished(&app, &batch_b, &b).await;
}

#[tokio::test]
async fn what_a_tenant_may_have_outstanding_is_bounded() {
    // No worker: accepted items stay outstanding.
    let app = spawn_role(Role::Ingress, |s| s.tenants.tenant_max_outstanding = 10).await;
    let a = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let b = app.token(&[ACCOUNT_B], &[], Permission::Write).await;
    assert_eq!(
        app.submit_batch(ACCOUNT_A, &a, p256_items(8)).await.status,
        202
    );
    let refused = app.submit_batch(ACCOUNT_A, &a, p256_items(3)).await;
    assert_eq!(refused.status, 429, "{}", refused.json());
    assert_eq!(refused.json()["errors"][0]["code"], 971);
    assert!(refused.header("retry-after").is_some());
    assert_eq!(
        app.submit_batch(ACCOUNT_A, &a, p256_items(2)).await.status,
        202
    );
    assert_eq!(
        app.submit_batch(ACCOUNT_B, &b, p256_items(10)).await.status,
        202,
        "another tenant has its own allowance"
    );
    // Once the items are made, the tenant may submit again.
    let worker = app.start_worker().await;
    rows_reach(&app, 20).await;
    assert_eq!(
        app.submit_batch(ACCOUNT_A, &a, p256_items(8)).await.status,
        202
    );
    rows_reach(&app, 28).await;
    worker.shutdown().await;
}

/// Chunks stored by one process are dispatched by another: an ingress that stored a batch and
/// stopped leaves nothing behind, a worker started later makes every item.
#[tokio::test]
async fn a_batch_stored_by_one_process_is_dispatched_by_another() {
    let app = spawn_role(Role::Ingress, |s| s.ingress.batch_chunk_items = 4).await;
    let a = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let batch = submit(&app, ACCOUNT_A, &a, p256_items(40)).await;
    let worker = app.start_worker().await;
    wait_finished(&app, &batch, &a).await;
    assert_eq!(app.row_count().await, 40);
    worker.shutdown().await;
}

/// A tenant flooding single creates beside its own batch (its single creates go first) cannot
/// fill the workers' bulk prefetch with its slow chunks: another tenant's batch keeps going.
#[tokio::test]
async fn a_tenants_flood_beside_its_batch_does_not_freeze_anothers_batch() {
    let app = spawn_app_with(one_key_at_a_time).await;
    let a = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let b = app.token(&[ACCOUNT_B], &[], Permission::Write).await;
    let batch_a = submit(&app, ACCOUNT_A, &a, rsa_items(12)).await;
    let batch_b = submit(&app, ACCOUNT_B, &b, rsa_items(12)).await;
    let body = example_body();
    let flood = (0..30).map(|_| app.create("accounts", ACCOUNT_A, Auth::Bearer(&a), &body));
    for created in futures_util::future::join_all(flood).await {
        assert_eq!(created.status, 201, "{}", created.body);
    }
    // B's batch had half the keygen slot meanwhile; with its chunks stuck behind A's in the
    // workers' bulk prefetch it would have made next to nothing.
    let (settled_b, _) = progress(&app, &batch_b, &b).await;
    assert!(
        settled_b >= 10,
        "B's batch settled {settled_b} of 12 while A's 30 single creates were made"
    );
    wait_finished(&app, &batch_a, &a).await;
    wait_finished(&app, &batch_b, &b).await;
}

/// Many small batches of one tenant travel together, not a message each.
#[tokio::test]
async fn a_tenants_small_batches_travel_in_one_message() {
    use lapin::options::{BasicGetOptions, BasicNackOptions};
    // No worker: the dispatcher keeps one message ready in the bulk queue, and no more.
    let app = spawn_role(Role::Ingress, |_| {}).await;
    let a = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let b = app.token(&[ACCOUNT_B], &[], Permission::Write).await;
    submit(&app, ACCOUNT_B, &b, p256_items(1)).await;
    for _ in 0..30 {
        submit(&app, ACCOUNT_A, &a, p256_items(1)).await;
    }
    // Take the ready message as a worker would (held, unacknowledged): the dispatcher puts
    // the next one there.
    let (_conn, ch) = app.amqp_channel().await;
    let queue = app.topology().bulk_queue();
    let mut held = Vec::new();
    for _ in 0..2 {
        let message = eventually("a message in the bulk queue", || async {
            ch.basic_get(queue.as_str().into(), BasicGetOptions::default())
                .await
                .unwrap()
        })
        .await;
        held.push(message);
    }
    let taken: Vec<_> = held
        .iter()
        .map(|m| csrd::amqp::codec::decode_chunk(&m.delivery.data).unwrap())
        .collect();
    for message in held {
        let requeue = BasicNackOptions {
            requeue: true,
            ..Default::default()
        };
        message.delivery.nack(requeue).await.unwrap();
    }
    let owners: Vec<(&str, usize)> = taken
        .iter()
        .map(|c| (c.jobs[0].owner.id(), c.jobs.len()))
        .collect();
    assert!(
        owners.contains(&(ACCOUNT_A, 30)),
        "A's 30 one-item batches did not travel as one message: {owners:?}"
    );
    let worker = app.start_worker().await;
    rows_reach(&app, 31).await;
    worker.shutdown().await;
}

/// A stored chunk whose items cannot be read has them recorded as failed; the lane goes on.
#[tokio::test]
async fn an_unreadable_stored_chunk_fails_its_items_and_the_lane_goes_on() {
    let app = spawn_role(Role::Ingress, |s| s.ingress.batch_chunk_items = 2).await;
    let a = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    // The first goes to the broker at once (nobody takes it yet); the second waits in Postgres.
    let first = submit(&app, ACCOUNT_A, &a, p256_items(2)).await;
    let second = submit(&app, ACCOUNT_A, &a, p256_items(6)).await;
    let id = second.rsplit('/').next().unwrap().to_owned();
    let client = app.pool.get().await.unwrap();
    let spoiled = client
        .execute(
            "UPDATE batch_chunks SET items = 'not json'::bytea
             WHERE batch_id = $1::text::uuid AND seq = 1 AND dispatched_at IS NULL",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(spoiled, 1);
    let worker = app.start_worker().await;
    wait_finished(&app, &first, &a).await;
    wait_finished(&app, &second, &a).await;
    let got = app.request(Method::GET, &second).bearer(&a).send().await;
    let r = &got.json()["result"];
    assert_eq!(
        (r["done"].as_u64(), r["failed"].as_u64()),
        (Some(4), Some(2)),
        "{r}"
    );
    worker.shutdown().await;
}

/// A batch an earlier release stored whole (its items in the batch row, never published) is
/// adopted and made.
#[tokio::test]
async fn a_batch_stored_by_an_earlier_release_is_adopted() {
    let app = spawn_role(Role::Ingress, |_| {}).await;
    let a = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let items: Vec<Value> = (0..3)
        .map(|i| {
            let name = format!("legacy{i}.example.com");
            serde_json::json!({"subject": {"country": "US", "state": "California",
                "locality": "San Francisco", "organization": "Legacy", "common_name": name},
                "sans": [name], "key_type": "p256v1", "name": null, "description": null})
        })
        .collect();
    let id = uuid::Uuid::new_v4();
    let client = app.pool.get().await.unwrap();
    client
        .execute(
            "INSERT INTO batches (id, owner_kind, owner_id, total, items, created_at)
             VALUES ($1, 'account', $2, 3, convert_to($3, 'UTF8'), now() - interval '1 minute')",
            &[&id, &ACCOUNT_A, &Value::Array(items).to_string()],
        )
        .await
        .unwrap();
    // A process started after the upgrade adopts it.
    let worker = app.start_worker().await;
    let path = format!("/client/v4/accounts/{ACCOUNT_A}/custom_csrs/batches/{id}");
    wait_finished(&app, &path, &a).await;
    assert_eq!(app.row_count().await, 3);
    worker.shutdown().await;
}

/// Creates that queue nothing (a replay under an Idempotency-Key) do not use up an hourly
/// quota.
#[tokio::test]
async fn replays_do_not_use_up_an_hourly_quota() {
    let app = spawn_in_memory().await;
    let a = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    run_ok(
        CSRD,
        &app.iso,
        &[
            "tenant",
            "limits",
            "set",
            "--account",
            ACCOUNT_A,
            "--items-per-hour",
            "2",
        ],
    );
    let path = format!("/client/v4/accounts/{ACCOUNT_A}/custom_csrs");
    let create = |key: &'static str| {
        app.request(Method::POST, &path)
            .bearer(&a)
            .header("Idempotency-Key", key)
            .json(&p256_body())
            .send()
    };
    // Every process reads the overrides again within this time.
    tokio::time::sleep(csrd::fairshare::policy::REFRESH * 2).await;
    // Counted once; its replays never.
    for _ in 0..4 {
        assert_eq!(create("probe").await.status, 201);
    }
    let mut statuses = Vec::new();
    for key in ["one", "two", "three"] {
        statuses.push(create(key).await.status);
    }
    assert_eq!(statuses, [201, 429, 429]);
}

/// Batch submissions a tenant holds open on one ingress are capped (each holds its body and,
/// while stored, a database connection).
#[tokio::test]
async fn batch_submissions_open_at_once_are_capped() {
    use tokio::io::AsyncWriteExt;
    let app = spawn_app_with(|s| s.http.http_body_timeout_ms = 20_000).await;
    let a = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let head = format!(
        "POST /client/v4/accounts/{ACCOUNT_A}/custom_csrs/batches HTTP/1.1\r\nHost: x\r\n\
         Authorization: Bearer {a}\r\nContent-Type: application/json\r\n\
         Content-Length: 1000\r\n\r\n{{\"items\": ["
    );
    let stall = || async {
        let mut stream = tokio::net::TcpStream::connect(app.addr()).await.unwrap();
        stream.write_all(head.as_bytes()).await.unwrap();
        stream
    };
    let mut open = Vec::new();
    for _ in 0..csrd::ingress::limits::MAX_BATCHES_IN_FLIGHT {
        open.push(stall().await);
    }
    let open = tokio::sync::Mutex::new(open);
    eventually("the ninth to be refused", || async {
        // The server may take a probe before it has read every stalled head; a stalled
        // submission that found the slots full was answered (429) and closed. Replace it, so
        // that in the end all the stalled ones hold a slot.
        let mut open = open.lock().await;
        for stream in open.iter_mut() {
            let mut buf = [0u8; 512];
            if !matches!(stream.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock) {
                *stream = stall().await;
            }
        }
        drop(open);
        let r = app.submit_batch(ACCOUNT_A, &a, p256_items(1)).await;
        (r.status == 429).then_some(())
    })
    .await;
    let b = app.token(&[ACCOUNT_B], &[], Permission::Write).await;
    let other = app.submit_batch(ACCOUNT_B, &b, p256_items(1)).await;
    assert_eq!(other.status, 202, "another tenant has its own");
    drop(open);
    eventually("A's next to be accepted", || async {
        let r = app.submit_batch(ACCOUNT_A, &a, p256_items(1)).await;
        (r.status == 202).then_some(())
    })
    .await;
}
