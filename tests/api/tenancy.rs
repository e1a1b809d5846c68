//! OWASP API1: one tenant can never read, list or delete another tenant's CSRs, nor learn
//! whether an id exists elsewhere.

use csrd::auth::Permission;
use reqwest::Method;

use csrd_test_support::*;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Caller {
    AccountAWrite,
    AccountARead,
    AccountBWrite,
    ZoneToken,
    LegacyKeyA,
}

#[derive(Clone, Copy, Debug)]
enum Target {
    Own,
    OtherTenant,
    Random,
}

#[derive(Clone, Copy, Debug)]
enum Op {
    List,
    Get,
    Delete,
    Create,
}

/// Expected (status, code) for `caller` doing `op` on account A's path.
fn expected(caller: Caller, op: Op, target: Target) -> (u16, Option<u64>) {
    let on_a = matches!(
        caller,
        Caller::AccountAWrite | Caller::AccountARead | Caller::LegacyKeyA
    );
    let writes = matches!(op, Op::Delete | Op::Create);
    if !on_a || (caller == Caller::AccountARead && writes) {
        return (403, Some(10000));
    }
    match (op, target) {
        (Op::List, _) => (200, None),
        (Op::Create, _) => (201, None),
        (Op::Get | Op::Delete, Target::Own) => (200, None),
        (Op::Get | Op::Delete, Target::OtherTenant | Target::Random) => (404, Some(1419)),
    }
}

async fn create_p256(app: &TestApp, kind: &str, owner: &str, token: &str) -> String {
    let resp = app
        .create(kind, owner, Auth::Bearer(token), &p256_body())
        .await;
    assert_eq!(resp.status, 201, "{}", resp.body);
    resp.body["result"]["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn every_caller_every_operation_every_kind_of_id() {
    let app = spawn_in_memory().await;
    let a_write = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let a_read = app.token(&[ACCOUNT_A], &[], Permission::Read).await;
    let b_write = app.token(&[ACCOUNT_B], &[], Permission::Write).await;
    let zone = app.token(&[], &[ZONE_A], Permission::Write).await;
    let legacy = app
        .legacy_key("owner-a@example.com", &[ACCOUNT_A], &[])
        .await;
    // Ids owned by other tenants: account B's, and zone A's (a zone is not its account).
    let b_id = create_p256(&app, "accounts", ACCOUNT_B, &b_write).await;
    let zone_id = create_p256(&app, "zones", ZONE_A, &zone).await;

    let callers = [
        (Caller::AccountAWrite, Auth::Bearer(&a_write)),
        (Caller::AccountARead, Auth::Bearer(&a_read)),
        (Caller::AccountBWrite, Auth::Bearer(&b_write)),
        (Caller::ZoneToken, Auth::Bearer(&zone)),
        (
            Caller::LegacyKeyA,
            Auth::Legacy("owner-a@example.com", &legacy),
        ),
    ];
    let mut checked = 0;
    for (caller, auth) in &callers {
        for op in [Op::List, Op::Get, Op::Delete, Op::Create] {
            for target in [Target::Own, Target::OtherTenant, Target::Random] {
                for other in [&b_id, &zone_id] {
                    // A fresh own id per case, so deletes do not affect each other.
                    let own = create_p256(&app, "accounts", ACCOUNT_A, &a_write).await;
                    let id = match target {
                        Target::Own => own.clone(),
                        Target::OtherTenant => other.clone(),
                        Target::Random => uuid::Uuid::new_v4().to_string(),
                    };
                    let base = format!("/client/v4/accounts/{ACCOUNT_A}/custom_csrs");
                    let auth = match auth {
                        Auth::Bearer(t) => Auth::Bearer(t),
                        Auth::Legacy(e, k) => Auth::Legacy(e, k),
                        _ => unreachable!(),
                    };
                    let resp = match op {
                        Op::List => app.send(Method::GET, &base, auth, None).await,
                        Op::Get => {
                            app.send(Method::GET, &format!("{base}/{id}"), auth, None)
                                .await
                        }
                        Op::Delete => {
                            app.send(Method::DELETE, &format!("{base}/{id}"), auth, None)
                                .await
                        }
                        Op::Create => {
                            app.send(Method::POST, &base, auth, Some(p256_body().to_string()))
                                .await
                        }
                    };
                    let (status, code) = expected(*caller, op, target);
                    let case = format!("{caller:?} {op:?} {target:?}");
                    match code {
                        Some(code) => resp.assert_failure(status, code),
                        None => assert_eq!(resp.status, status, "{case}: {}", resp.body),
                    }
                    if let Op::List = op
                        && status == 200
                    {
                        let listed: Vec<&str> = resp.body["result"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|r| r["id"].as_str().unwrap())
                            .collect();
                        assert!(
                            !listed.contains(&b_id.as_str()) && !listed.contains(&zone_id.as_str()),
                            "{case}: list leaks another tenant's CSR"
                        );
                    }
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, 5 * 4 * 3 * 2);
    // The other tenants' CSRs survived every attempt.
    for (kind, owner, id, token) in [
        ("accounts", ACCOUNT_B, &b_id, &b_write),
        ("zones", ZONE_A, &zone_id, &zone),
    ] {
        let resp = app
            .send(
                Method::GET,
                &format!("/client/v4/{kind}/{owner}/custom_csrs/{id}"),
                Auth::Bearer(token),
                None,
            )
            .await;
        assert_eq!(resp.status, 200, "{kind} CSR still there");
    }
}

#[tokio::test]
async fn a_caller_without_access_gets_403_before_the_id_is_even_parsed() {
    let app = spawn_in_memory().await;
    let b_write = app.token(&[ACCOUNT_B], &[], Permission::Write).await;
    // A malformed id would be 1418 for an allowed caller; an outsider must not get that far.
    for id in ["not-a-uuid", &uuid::Uuid::new_v4().to_string()] {
        let resp = app
            .send(
                Method::GET,
                &format!("/client/v4/accounts/{ACCOUNT_A}/custom_csrs/{id}"),
                Auth::Bearer(&b_write),
                None,
            )
            .await;
        resp.assert_failure(403, 10000);
    }
}
