//! `csrd bench list`: list-page latency for one tenant with many CSRs.
//!
//! Seeds `rows` CSRs for a fresh random account straight into Postgres (realistic row sizes,
//! placeholder key material), times `db::csrs::list` for first, middle, last and past-the-end
//! pages in every order, then deletes the seeded rows.

use std::time::{Duration, Instant};

use anyhow::Context;

use crate::db::{build_pool, csrs, migrate};
use crate::domain::{AccountId, Direction, ListQuery, Owner, OwnerKind, SortField};

pub async fn run(database_url: &str, rows: u32, samples: u32) -> anyhow::Result<()> {
    let pool = build_pool(database_url, 2, "csrd-bench")?;
    let mut client = pool.get().await.context("connecting to Postgres")?;
    migrate::migrate(&mut client).await?;
    let account = hex::encode(crate::crypto::secret::random_array::<16>());
    let owner = Owner::Account(AccountId::parse(&account).expect("32 hex"));

    let started = Instant::now();
    client
        .execute(
            "INSERT INTO custom_csrs (id, owner_kind, owner_id, key_type, common_name, country, state,
                 locality, organization, organizational_unit, sans, name, description, csr_pem,
                 envelope_version, kek_id, wrapped_dek, dek_nonce, key_nonce, key_ciphertext, created_at)
             SELECT gen_random_uuid(), 'account', $1, 'p256v1', 'host' || g || '.example.com', 'US',
                 'California', 'San Francisco', 'Bench Inc.', NULL,
                 ARRAY['host' || g || '.example.com', 'www.host' || g || '.example.com'],
                 'csr-' || (g % 1000), NULL, repeat('M', 1100), 1, 'bench',
                 decode(repeat(md5(g::text), 3), 'hex'), decode(substr(md5(g::text), 1, 24), 'hex'),
                 decode(substr(md5(g::text), 9, 24), 'hex'), decode(repeat(md5(g::text), 9), 'hex'),
                 now() - (g || ' seconds')::interval
             FROM generate_series(1, $2::int) AS g",
            &[&account, &(rows as i32)],
        )
        .await
        .context("seeding rows (gen_random_uuid needs Postgres 13 or newer)")?;
    // Steady state: autovacuum sets the visibility map after a bulk load, which is what lets
    // the list walk the index without touching the table.
    client.batch_execute("VACUUM ANALYZE custom_csrs").await?;
    eprintln!(
        "seeded {rows} rows in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let per_page = 50u64;
    let last = u64::from(rows).div_ceil(per_page).max(1);
    println!("| order | direction | page | rows | median ms | max ms |");
    println!("|---|---|---|---|---|---|");
    for order in [SortField::CreatedAt, SortField::Name, SortField::AccountTag] {
        for direction in [Direction::Asc, Direction::Desc] {
            for page in [1, last / 2, last, last + 1] {
                let q = ListQuery {
                    page,
                    per_page,
                    order,
                    direction,
                };
                let mut times = Vec::new();
                let mut got = 0;
                for _ in 0..samples.max(1) {
                    let t = Instant::now();
                    let (items, _) = csrs::list(&mut client, &owner, &q).await?;
                    times.push(t.elapsed());
                    got = items.len();
                }
                times.sort();
                let ms = |d: Duration| d.as_secs_f64() * 1000.0;
                println!(
                    "| {order:?} | {direction:?} | {page} | {got} | {:.2} | {:.2} |",
                    ms(times[times.len() / 2]),
                    ms(*times.last().unwrap())
                );
            }
        }
    }
    let n = client
        .execute(
            "DELETE FROM custom_csrs WHERE owner_kind = $1 AND owner_id = $2",
            &[&OwnerKind::Account.as_str(), &account],
        )
        .await?;
    eprintln!("removed the {n} seeded rows");
    Ok(())
}
