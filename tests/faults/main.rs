//! Fault injection: a load of creates (mixed key types, Idempotency-Keys, client retries)
//! against `csrd ingress` and two `csrd worker` processes while a fault is injected, then a
//! checker in the style of RabbitMQ's Jepsen queue checker compares the clients' history with
//! Postgres and the queues: lost, duplicated and unexpected must all be zero, and every queue
//! drained.
//!
//! These tests restart the machine's RabbitMQ and Postgres, so `scripts/test` runs them one at
//! a time after the main suite. The short form runs in CI; `scripts/faults` runs the long form
//! (`CSRD_FAULT_REQUESTS`, `CSRD_FAULT_ROUNDS`).

// Tests make and present throw-away credentials: revealing them is what they are for.
#![allow(clippy::disallowed_methods)]

mod batch;
mod checker;
mod cluster;
mod load;

use std::time::Duration;

use checker::check;
use cluster::{Cluster, Fault, Shape};
use csrd_test_support::pg_pair::PgPair;
use csrd_test_support::rabbit_node::RabbitCluster;

fn requests() -> usize {
    std::env::var("CSRD_FAULT_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(240)
}

fn rounds() -> usize {
    std::env::var("CSRD_FAULT_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

async fn scenario(fault: Fault) {
    for round in 1..=rounds() {
        let cluster = Cluster::start().await;
        run_round(cluster, fault, requests(), round).await;
    }
}

async fn run_round(mut cluster: Cluster, fault: Fault, requests: usize, round: usize) {
    let load = tokio::spawn(load::run(
        cluster.base_urls(),
        cluster.token.clone(),
        requests,
    ));
    // Let the load get going, then inject the fault in the middle of it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.inject(fault).await;
    let history = load.await.expect("load task");
    let report = check(&cluster, &history).await;
    println!("fault {fault:?} round {round}: {report}");
    report.assert_clean();
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_killed_with_sigkill_and_replaced() {
    scenario(Fault::KillWorker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_stopped_and_started() {
    scenario(Fault::RestartBroker).await;
}

/// Three RabbitMQ nodes of the test's own (the machine's node untouched), quorum queues on all
/// three, two ingresses and three workers as processes; under load the node leading the jobs
/// queue is stopped and started, then another node is killed outright and started again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_cluster_loses_a_node_then_another() {
    for round in 1..=rounds() {
        let started = std::time::Instant::now();
        let rabbit = tokio::task::spawn_blocking(|| RabbitCluster::start(3))
            .await
            .unwrap();
        println!(
            "cluster: three nodes up in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let cluster = Cluster::start_shaped(Shape {
            ingresses: 2,
            workers: 3,
            rabbit_cluster: Some(rabbit),
            pg_pair: None,
        })
        .await;
        // The faults take ~20 s: enough load to span them.
        run_round(cluster, Fault::ClusterNodesDown, requests() * 3, round).await;
        println!(
            "cluster round {round}: {:.1} s in all",
            started.elapsed().as_secs_f64()
        );
    }
}

/// A Postgres primary and a synchronous replica of the test's own (the machine's server
/// untouched), csrd on a multi-host `DATABASE_URL` with `target_session_attrs=read-write`; under
/// load the primary is SIGKILLed and the replica promoted. Nothing acknowledged is lost, nothing
/// is made twice, and the same csrd processes carry on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_primary_killed_and_synchronous_replica_promoted() {
    for round in 1..=rounds() {
        let started = std::time::Instant::now();
        let pair = tokio::task::spawn_blocking(PgPair::start).await.unwrap();
        println!(
            "failover: primary and synchronous replica up in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let mut cluster = Cluster::start_shaped(Shape {
            pg_pair: Some(pair),
            ..Shape::default()
        })
        .await;
        let load = tokio::spawn(load::run(
            cluster.base_urls(),
            cluster.token.clone(),
            requests(),
        ));
        tokio::time::sleep(Duration::from_secs(2)).await;
        cluster.inject(Fault::FailoverPostgres).await;
        let history = load.await.expect("load task");
        cluster.assert_all_running();
        let report = check(&cluster, &history).await;
        let recovered = cluster.recovered_after.expect("the failover was timed");
        println!(
            "fault FailoverPostgres round {round}: {report} | recovered in {:.1} s, csrd not restarted",
            recovered.as_secs_f64()
        );
        report.assert_clean();
        cluster.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted() {
    scenario(Fault::RestartPostgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completion_events_dropped_for_a_while() {
    scenario(Fault::DropEvents).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_killed_with_sigkill_while_chunks_of_a_batch_are_in_flight() {
    for _ in 1..=rounds() {
        batch::worker_killed_during_a_batch().await;
    }
}
