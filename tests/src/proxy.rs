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
