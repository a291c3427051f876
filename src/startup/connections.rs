//! The port's connection loop. Each accepted connection (plain or TLS)
//! speaks HTTP/2 or HTTP/1.1 — with upgrades, so WebSockets work on the
//! same port (tonic's own server serves no upgrades) — through one service:
//! the layers and the routes. The caller's address and certificate ride in
//! each request's extensions (`PeerInfo`). When `stop` fires, no new
//! connection is taken and open ones are closed gracefully: in-flight
//! requests and streams finish first; `cut` ends the connections still
//! open. The serving task ends only once every connection task — and every
//! HTTP/2 stream task hyper spawned — has ended and dropped its handle on
//! the service (so on the engine and the store): a program that stops
//! dialogd may reopen its data dir at once.

use crate::tls::{Conn, PeerInfo};
use futures_util::StreamExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::server::Connected;
use tower::{Service, ServiceExt};

type Request = http::Request<tonic::body::Body>;
type Response = http::Response<tonic::body::Body>;

/// How long a client may take to send a request's headers (HTTP/1.1).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// When the serving task stops taking connections, and when it cuts them.
pub struct Stopping {
    pub stop: CancellationToken,
    pub cut: CancellationToken,
}

/// Spawns hyper's tasks (HTTP/2 streams) where the serving task waits for
/// them.
#[derive(Clone)]
struct TrackedExecutor(TaskTracker);

impl<F> hyper::rt::Executor<F> for TrackedExecutor
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        self.0.spawn(future);
    }
}

/// Serves `incoming` with `service` until `stop`, then drains.
pub fn serve<S>(
    incoming: ReceiverStream<std::io::Result<Conn>>,
    service: S,
    max_header_list_bytes: u32,
    Stopping { stop, cut }: Stopping,
) -> JoinHandle<Result<(), String>>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    tokio::spawn(async move {
        let tasks = TaskTracker::new();
        let mut builder = auto::Builder::new(TrackedExecutor(tasks.clone()));
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT);
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .max_header_list_size(max_header_list_bytes);
        let graceful = GracefulShutdown::new();
        let mut incoming = incoming;
        loop {
            let conn = tokio::select! {
                _ = stop.cancelled() => break,
                next = incoming.next() => match next {
                    None => break,
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "connection not accepted");
                        continue;
                    }
                    Some(Ok(conn)) => conn,
                },
            };
            let peer: PeerInfo = conn.connect_info();
            let service = service.clone();
            let per_request =
                hyper::service::service_fn(move |request: http::Request<Incoming>| {
                    let mut request = request.map(tonic::body::Body::new);
                    request.extensions_mut().insert(peer.clone());
                    service.clone().oneshot(request)
                });
            let connection = builder
                .serve_connection_with_upgrades(TokioIo::new(conn), per_request)
                .into_owned();
            let connection = graceful.watch(connection);
            let cut = cut.clone();
            tasks.spawn(async move {
                tokio::select! {
                    result = connection => if let Err(e) = result {
                        tracing::debug!(error = %e, "connection ended with an error");
                    },
                    _ = cut.cancelled() => {}
                }
            });
        }
        drop(incoming);
        tokio::select! {
            _ = graceful.shutdown() => {}
            _ = cut.cancelled() => {}
        }
        tasks.close();
        tasks.wait().await;
        Ok(())
    })
}
