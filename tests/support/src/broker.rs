//! Looking at RabbitMQ from the outside: a channel of the test's own, queue depths.

use csrd::amqp::Topology;

use crate::isolation::amqp_url;

/// A connection and channel for a test to publish, get or rebind with.
pub async fn channel(name: &str) -> (lapin::Connection, lapin::Channel) {
    let conn = csrd::amqp::connect(&amqp_url(), name)
        .await
        .expect("RabbitMQ must be running for this test (see scripts/test)");
    let ch = conn.create_channel().await.unwrap();
    (conn, ch)
}

/// Ready messages in the jobs queues (single and bulk) and in the dead-letter queue (0 for a
/// queue that does not exist).
pub async fn queued(topology: &Topology) -> (u32, u32) {
    queued_at(&amqp_url(), topology).await
}

/// The same, asked of the broker at `url`.
pub async fn queued_at(url: &str, topology: &Topology) -> (u32, u32) {
    let conn = csrd::amqp::connect(url, "csrd-tests-depth")
        .await
        .expect("the broker must be running to count its queues");
    let mut depths = [0u32; 3];
    for (depth, queue) in depths.iter_mut().zip([
        topology.jobs_queue(),
        topology.bulk_queue(),
        topology.dead_letter_queue(),
    ]) {
        *depth = csrd::amqp::depth::queue_depth(&conn, &queue)
            .await
            .map_or(0, |(messages, _)| messages);
    }
    let _ = conn.close(200, "checked".into()).await;
    (depths[0] + depths[1], depths[2])
}

pub async fn delete_topology(topology: &Topology) {
    let Ok(conn) = csrd::amqp::connect(&amqp_url(), "csrd-tests-cleanup").await else {
        return;
    };
    if let Ok(ch) = conn.create_channel().await {
        if let Err(e) = topology.delete_all(&ch).await {
            eprintln!("warning: could not delete the AMQP topology: {e}");
        }
        let _ = ch.close(200, "cleanup".into()).await;
    }
    let _ = conn.close(200, "cleanup".into()).await;
}
