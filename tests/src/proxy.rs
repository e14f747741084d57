//! A loopback TCP proxy that a test can "blackhole" to simulate a network partition,
//! or make drop and reset its connections.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// What a [`TcpProxy`] does with traffic right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyMode {
    /// Forwards bytes both ways.
    Open,
    /// Blackholed: connections stay open, nothing is forwarded (see [`TcpProxy::blackhole`]).
    Stall,
    /// Every connection is closed, and new ones are closed as soon as they are accepted
    /// (see [`TcpProxy::drop_traffic`]).
    Drop,
}

/// The state every connection task watches.
#[derive(Clone, Copy, Debug)]
struct State {
    mode: ProxyMode,
    /// Bumped by [`TcpProxy::reset_connections`]: connections accepted under an older
    /// generation close.
    generation: u64,
}

/// A loopback TCP proxy in front of one target address, controllable by the test.
///
/// While [blackholed](TcpProxy::blackhole), every connection stays open but no byte is
/// forwarded in either direction, and new connections are accepted but not connected
/// to the target: a partition that a client can only detect by timeouts. Bytes are
/// held, not dropped (the proxy simply stops reading), so after
/// [`restore`](TcpProxy::restore) existing connections carry on like TCP connections
/// after a healed partition, including requests sent during the partition.
///
/// Two harsher faults: [`drop_traffic`](TcpProxy::drop_traffic) closes every
/// connection and keeps closing new ones until [`restore`](TcpProxy::restore) (a
/// peer that refuses), and [`reset_connections`](TcpProxy::reset_connections)
/// closes the current connections once (a middlebox that forgot them).
///
/// Dropping the proxy stops its accept loop and all its connections.
pub struct TcpProxy {
    addr: SocketAddr,
    /// The mode and connection generation; every task watches it.
    state: watch::Sender<State>,
    /// Owns (through a [`JoinSet`]) every connection task, so aborting it ends them all.
    accept_loop: JoinHandle<()>,
}

impl TcpProxy {
    /// Starts a proxy listening on `127.0.0.1:0` (a free port) that forwards to `target`.
    pub async fn start(target: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("cannot bind the proxy's loopback port");
        let addr = listener.local_addr().expect("proxy listener address");
        let (state, watcher) = watch::channel(State {
            mode: ProxyMode::Open,
            generation: 0,
        });
        let accept_loop = tokio::spawn(accept_loop(listener, target, watcher));
        TcpProxy {
            addr,
            state,
            accept_loop,
        }
    }

    /// Starts a proxy in front of a client URL like `http://127.0.0.1:2379`.
    ///
    /// # Panics
    /// If `endpoint` is not `http://IP:PORT` (host names are not resolved).
    pub async fn start_for(endpoint: &str) -> TcpProxy {
        let authority = endpoint
            .strip_prefix("http://")
            .unwrap_or(endpoint)
            .trim_end_matches('/');
        let target: SocketAddr = authority
            .parse()
            .unwrap_or_else(|e| panic!("proxy target {endpoint:?} is not http://IP:PORT: {e}"));
        TcpProxy::start(target).await
    }

    /// The proxy's client URL, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address the proxy listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops forwarding, keeping connections open (see [`TcpProxy`]).
    pub fn blackhole(&self) {
        self.set_mode(ProxyMode::Stall);
    }

    /// Closes every connection, and every new one as soon as it is accepted, until
    /// [`restore`](TcpProxy::restore).
    pub fn drop_traffic(&self) {
        self.set_mode(ProxyMode::Drop);
    }

    /// Closes the connections open now; later ones are served as the mode says.
    pub fn reset_connections(&self) {
        self.state.send_modify(|s| s.generation += 1);
    }

    /// Forwards again after [`blackhole`](TcpProxy::blackhole) or
    /// [`drop_traffic`](TcpProxy::drop_traffic).
    pub fn restore(&self) {
        self.set_mode(ProxyMode::Open);
    }

    /// Sets the mode directly.
    pub fn set_mode(&self, mode: ProxyMode) {
        self.state.send_modify(|s| s.mode = mode);
    }

    /// The current mode.
    pub fn mode(&self) -> ProxyMode {
        self.state.borrow().mode
    }

    /// Whether the proxy is currently blackholed.
    pub fn is_blackholed(&self) -> bool {
        self.mode() == ProxyMode::Stall
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        // Dropping the accept loop's future drops its JoinSet, which aborts every
        // connection task (their sockets close when the tasks are dropped).
        self.accept_loop.abort();
    }
}

async fn accept_loop(listener: TcpListener, target: SocketAddr, state: watch::Receiver<State>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => {
                    connections.spawn(serve(client, target, state.clone()));
                }
                Err(e) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    tracing::warn!("proxy for {target}: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            // Reap finished connections so the set does not grow forever.
            Some(_) = connections.join_next() => {}
        }
    }
}

/// Forwards one client connection to `target` until either side is done, the proxy
/// drops traffic, or the connection is reset.
async fn serve(mut client: TcpStream, target: SocketAddr, mut state: watch::Receiver<State>) {
    let generation = state.borrow().generation;
    // While blackholed the target is unreachable: don't even connect.
    if wait_open(&mut state).await.is_err() || state.borrow().mode == ProxyMode::Drop {
        return;
    }
    let Ok(mut upstream) = TcpStream::connect(target).await else {
        return; // the client sees the connection closed, much like "refused"
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (client_read, client_write) = client.split();
    let (upstream_read, upstream_write) = upstream.split();
    let mut killer = state.clone();
    let killed = killer.wait_for(|s| s.mode == ProxyMode::Drop || s.generation != generation);
    tokio::select! {
        _ = async {
            tokio::try_join!(
                pump(client_read, upstream_write, state.clone()),
                pump(upstream_read, client_write, state),
            )
        } => {}
        // Returning drops both sockets: each side sees its connection closed.
        _ = killed => {}
    }
}

/// Copies bytes one way, pausing while blackholed. Forwards EOF as a half-close.
async fn pump(
    mut from: ReadHalf<'_>,
    mut to: WriteHalf<'_>,
    mut state: watch::Receiver<State>,
) -> io::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        wait_open(&mut state).await?;
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return to.shutdown().await;
        }
        // A read may complete just after blackhole(): hold the bytes until restore().
        wait_open(&mut state).await?;
        to.write_all(&buf[..n]).await?;
    }
}

/// Waits until the proxy is not blackholed; fails once the proxy is gone.
async fn wait_open(state: &mut watch::Receiver<State>) -> io::Result<()> {
    match state.wait_for(|s| s.mode != ProxyMode::Stall).await {
        Ok(_) => Ok(()),
        Err(_) => Err(io::Error::other("proxy stopped")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on loopback; returns its address.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    /// Sends `msg` and reads the echo; `None` if the connection closed.
    async fn round_trip(s: &mut TcpStream, msg: &[u8]) -> Option<Vec<u8>> {
        s.write_all(msg).await.ok()?;
        let mut buf = vec![0u8; msg.len()];
        let read = tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut buf)).await;
        match read {
            Ok(Ok(_)) => Some(buf),
            _ => None,
        }
    }

    #[tokio::test]
    async fn reset_closes_open_connections_only() {
        let proxy = TcpProxy::start(echo_server().await).await;
        let mut old = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(
            round_trip(&mut old, b"one").await.as_deref(),
            Some(&b"one"[..])
        );
        proxy.reset_connections();
        assert_eq!(proxy.mode(), ProxyMode::Open);
        assert_eq!(
            round_trip(&mut old, b"two").await,
            None,
            "reset kept it open"
        );
        let mut new = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(
            round_trip(&mut new, b"three").await.as_deref(),
            Some(&b"three"[..])
        );
    }

    #[tokio::test]
    async fn drop_closes_everything_until_restored() {
        let proxy = TcpProxy::start(echo_server().await).await;
        let mut old = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(round_trip(&mut old, b"a").await.is_some());
        proxy.drop_traffic();
        assert!(!proxy.is_blackholed());
        assert_eq!(round_trip(&mut old, b"b").await, None);
        let mut during = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut during, b"c").await, None);
        proxy.restore();
        let mut after = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(
            round_trip(&mut after, b"d").await.as_deref(),
            Some(&b"d"[..])
        );
    }

    #[tokio::test]
    async fn stall_holds_bytes_until_restored() {
        let proxy = TcpProxy::start(echo_server().await).await;
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(round_trip(&mut s, b"x").await.is_some());
        proxy.blackhole();
        assert_eq!(proxy.mode(), ProxyMode::Stall);
        s.write_all(b"held").await.unwrap();
        let mut buf = [0u8; 4];
        let early = tokio::time::timeout(Duration::from_millis(300), s.read_exact(&mut buf)).await;
        assert!(early.is_err(), "bytes got through a stalled proxy");
        proxy.restore();
        tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut buf))
            .await
            .expect("held bytes delivered after restore")
            .unwrap();
        assert_eq!(&buf, b"held");
    }
}
