//! An HTTP/1 client for the Tower suites: one request per connection, and a
//! handle that closes the connection when dropped (a client that goes away).

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::task::JoinHandle;

/// A client connection; closed (the socket dropped) when this is dropped.
pub struct Conn(JoinHandle<()>);

impl Drop for Conn {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sends `GET path` on a connection of its own, with the given headers;
/// returns once the response head is in.
pub async fn open(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (http::Response<Incoming>, Conn) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let conn = Conn(tokio::spawn(async move {
        let _ = conn.await;
    }));
    let mut req = http::Request::get(path).header("host", "localhost");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let response = sender
        .send_request(req.body(Empty::<Bytes>::new()).unwrap())
        .await
        .expect("the server answers, it does not drop the connection");
    (response, conn)
}

/// Sends `method path` on a connection of its own, with the given headers;
/// returns the status once the response head is in (the connection is then
/// closed).
pub async fn status_of(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> http::StatusCode {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let _conn = Conn(tokio::spawn(async move {
        let _ = conn.await;
    }));
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let response = sender
        .send_request(req.body(Empty::<Bytes>::new()).unwrap())
        .await
        .expect("the server answers, it does not drop the connection");
    response.status()
}
