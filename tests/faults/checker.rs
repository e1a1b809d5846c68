//! Compares the clients' history with what Postgres and the queues hold, in the style of
//! RabbitMQ's Jepsen queue checker.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::time::Duration;

use csrd_test_support::{broker, poll_until};

use crate::cluster::Cluster;
use crate::load::{History, Outcome, request_name};

#[derive(Debug, Default)]
pub struct Report {
    pub requests: usize,
    pub attempts: usize,
    pub created: usize,
    pub failed: usize,
    pub indeterminate: usize,
    /// Acknowledged (201) but no row.
    pub lost: Vec<String>,
    /// More than one row (so more than one key) for one request, or two ids for one key.
    pub duplicated: Vec<String>,
    /// Rows nobody asked for, or that no answer and no Idempotency-Key record explains.
    pub unexpected: Vec<String>,
    /// Messages left in the jobs and dead-letter queues.
    pub queued: u32,
    pub statuses: HashMap<u16, usize>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut statuses: Vec<_> = self.statuses.iter().collect();
        statuses.sort();
        write!(
            f,
            "requests={} attempts={} created={} failed={} indeterminate={} | lost={} duplicated={} unexpected={} queued={} | answers {:?}",
            self.requests,
            self.attempts,
            self.created,
            self.failed,
            self.indeterminate,
            self.lost.len(),
            self.duplicated.len(),
            self.unexpected.len(),
            self.queued,
            statuses
        )
    }
}

impl Report {
    #[track_caller]
    pub fn assert_clean(&self) {
        assert!(self.lost.is_empty(), "lost: {:?}", self.lost);
        assert!(
            self.duplicated.is_empty(),
            "duplicated: {:?}",
            self.duplicated
        );
        assert!(
            self.unexpected.is_empty(),
            "unexpected: {:?}",
            self.unexpected
        );
        assert_eq!(self.queued, 0, "queues drained");
        assert_eq!(self.failed, 0, "no create failed");
        assert_eq!(self.indeterminate, 0, "every request got a definite answer");
        assert_eq!(self.created, self.requests);
    }
}

pub async fn check(cluster: &Cluster, history: &History) -> Report {
    let mut report = Report {
        requests: history.outcomes.len(),
        attempts: history.attempts,
        statuses: history.statuses.clone(),
        ..Default::default()
    };
    // Wait for the queues to drain (in-flight retries may still be finishing).
    let topology = cluster.iso.topology();
    let url = cluster.amqp_url();
    let drained = poll_until(Duration::from_secs(20), || async {
        let (jobs, dead) = broker::queued_at(&url, &topology).await;
        (jobs + dead == 0).then_some(())
    })
    .await;
    if drained.is_none() {
        let (jobs, dead) = broker::queued_at(&url, &topology).await;
        report.queued = jobs + dead;
    }

    let pool = csrd::db::build_pool(&cluster.iso.database_url, 1, "csrd-faults").unwrap();
    let client = pool.get().await.unwrap();
    let rows: Vec<(String, String)> = client
        .query("SELECT id::text, common_name FROM custom_csrs", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let keyed: HashMap<String, String> = client
        .query("SELECT csr_id::text, key FROM idempotency_keys", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();

    let mut rows_by_name: HashMap<&str, Vec<&str>> = HashMap::new();
    for (id, name) in &rows {
        rows_by_name
            .entry(name.as_str())
            .or_default()
            .push(id.as_str());
    }
    let asked: HashSet<String> = (0..history.outcomes.len()).map(request_name).collect();

    for (name, outcome) in &history.outcomes {
        match outcome {
            Outcome::Created(id) => {
                report.created += 1;
                if !rows.iter().any(|(row_id, _)| row_id == id) {
                    report.lost.push(format!("{name} ({id})"));
                }
            }
            Outcome::Failed => report.failed += 1,
            Outcome::Indeterminate => report.indeterminate += 1,
        }
        let seen: HashSet<&String> = history
            .ids_seen
            .get(name)
            .map(|v| v.iter().collect())
            .unwrap_or_default();
        if seen.len() > 1 {
            report
                .duplicated
                .push(format!("{name}: answers named {} ids", seen.len()));
        }
    }
    for (name, ids) in &rows_by_name {
        if ids.len() > 1 {
            report
                .duplicated
                .push(format!("{name}: {} rows", ids.len()));
        }
        if !asked.contains(*name) {
            report
                .unexpected
                .push(format!("{name}: nobody asked for it"));
        }
        for id in ids {
            if !keyed.contains_key(*id) {
                report.unexpected.push(format!(
                    "{name} ({id}): no Idempotency-Key record explains it"
                ));
            }
        }
    }
    report
}
