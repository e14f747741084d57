//! A tonic gRPC server behind `distlock-tower`'s `LockLayer`, on etcd. Calls
//! carrying `x-order-id` metadata run under lock `order:{id}`;
//! the service is `tonic-health`'s `grpc.health.v1.Health`, standing in for
//! your own.
//!
//! It starts the server, makes calls, prints what happened, exits:
//!
//! 1. a `Check` for order 42: `SERVING`;
//! 2. while a background job holds `order:42`: `ABORTED` (a busy order, not
//!    an unavailable server; `grpc-retry-pushback-ms` says when to retry)
//!    after the layer's 500 ms wait, and calls for other orders or without
//!    an order still pass;
//! 3. a server-streaming `Watch` for order 9 holds its lock until the client
//!    drops the stream.
//!
//! `cargo run -p distlock-examples --example tonic_service` (on the etcd of
//! `DISTLOCK_ENDPOINTS`, else on a throwaway local one)

mod support;

use std::time::{Duration, Instant};

use distlock::{EtcdConfig, LockManager, LockOptions};
use distlock_tower::{GrpcMethod, LockLayer};
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Server};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// A `Check` call, with `x-order-id: {order}` when given; prints its outcome.
async fn check(client: &HealthClient<Channel>, order: Option<u32>) -> Result<(), Error> {
    let mut req = tonic::Request::new(HealthCheckRequest::default());
    if let Some(order) = order {
        req.metadata_mut()
            .insert("x-order-id", order.to_string().parse()?);
    }
    let started = Instant::now();
    let outcome = match client.clone().check(req).await {
        Ok(response) => format!("{:?}", response.into_inner().status()),
        Err(status) => format!("{:?}: {}", status.code(), status.message()),
    };
    let order = order.map_or("none".to_owned(), |o| o.to_string());
    println!(
        "  order {order:<4} {:>4} ms  {outcome}",
        started.elapsed().as_millis()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    // DISTLOCK_ENDPOINTS, or a throwaway etcd (examples/support), removed on exit.
    let etcd = support::etcd().await?;
    let config = EtcdConfig::new(etcd.endpoints());
    let manager = LockManager::connect(config.clone(), "/shop").await?;

    // Every method of the health service, keyed by the `x-order-id` metadata.
    let order = GrpcMethod::new("/grpc.health.v1.Health/*", "x-order-id").prefix("order:");
    let layer = LockLayer::new(manager, order)
        .ttl(Duration::from_secs(10))
        .expect("a valid TTL")
        .wait(Duration::from_millis(500));
    let (_reporter, health) = tonic_health::server::health_reporter();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(
        Server::builder()
            .layer(layer)
            .add_service(health)
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    let channel = Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let client = HealthClient::new(channel);
    println!(
        "gRPC server at {addr}, locks on etcd at {}",
        etcd.endpoints()[0]
    );

    println!("\n1. a call for order 42");
    check(&client, Some(42)).await?;

    println!("\n2. a background job holds `order:42`");
    let jobs = LockManager::connect(config, "/shop").await?;
    let job = jobs
        .new_lock("order:42", LockOptions::default())?
        .lock()
        .await?;
    check(&client, Some(42)).await?;
    check(&client, Some(43)).await?;
    check(&client, None).await?;
    job.unlock().await?;

    println!("\n3. an open Watch stream for order 9 holds `order:9`");
    let mut req = tonic::Request::new(HealthCheckRequest::default());
    req.metadata_mut().insert("x-order-id", "9".parse()?);
    let mut watch = client.clone().watch(req).await?.into_inner();
    if let Some(first) = watch.message().await? {
        println!("  watch: {:?}", first.status());
    }
    check(&client, Some(9)).await?;
    drop(watch); // the client cancels the stream: the server releases at once
    println!("  stream dropped:");
    check(&client, Some(9)).await?;
    Ok(())
}
