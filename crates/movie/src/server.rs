//! The tokio driver of the server: it binds P0, feeds the [`Negotiator`],
//! runs one task per session with its own port, and moves datagrams between
//! the sockets and the sans-IO state machines.
//!
//! One task per session keeps sessions independent: a session that is slow
//! to send, or flooded with garbage, delays only its own timers.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::task::Poll;

use rand::Rng;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::ReadBuf;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant as TokioInstant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::Transmit;
use crate::config::{Config, ConfigError};
use crate::library::{LibraryError, MovieLibrary};
use crate::server_session::{
    Negotiator, NewSession, P0Context, PortAllocator, ServerSession, SessionParams,
};
use crate::wire::{MAX_DATAGRAM, SessionEntry};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Library(#[from] LibraryError),
    #[error("cannot bind the movie port {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("movie server I/O: {0}")]
    Io(#[from] io::Error),
}

/// Socket buffers large enough to absorb a burst of Movie Data to many
/// members; the kernel caps them at its own maximum.
const SOCKET_BUFFER: usize = 4 * 1024 * 1024;
/// Receive buffer larger than any valid datagram, so that an oversized one
/// is seen as such (§3.2).
const RECV_BUFFER: usize = MAX_DATAGRAM + 1;

/// Builds the library the configuration names: `library` (if set) plus
/// the given in-memory movies (for example the embedded demo movie).
pub fn library_from_config(
    config: &Config,
    embedded: Vec<(String, bytes::Bytes)>,
) -> Result<MovieLibrary, LibraryError> {
    let mut library = match &config.library {
        Some(dir) => MovieLibrary::with_folder(dir)?,
        None => MovieLibrary::new(),
    };
    for (name, data) in embedded {
        library.add_embedded(name, data);
    }
    Ok(library)
}

fn bind_std(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // So that [::] and 0.0.0.0 can share a port number (§3.1).
        socket.set_only_v6(true)?;
    }
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.bind(&addr.into())?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Binds one UDP socket per address, for P0.
///
/// The default lists the IPv6 wildcard before the IPv4 one (§3.1, §13). On
/// a host without IPv6 the IPv6 wildcard cannot be bound at all; that alone
/// must not keep the demo from starting, so it is then left out with a
/// warning, as long as another address could be bound. A port already in use
/// is never excused: the operator has to know.
pub fn bind_listen(addrs: &[SocketAddr]) -> Result<Vec<UdpSocket>, Error> {
    let mut sockets = Vec::with_capacity(addrs.len());
    let mut skipped = None;
    for &addr in addrs {
        match bind_std(addr).and_then(UdpSocket::from_std) {
            Ok(s) => sockets.push(s),
            Err(source)
                if addrs.len() > 1
                    && addr.ip() == IpAddr::from(std::net::Ipv6Addr::UNSPECIFIED)
                    && source.kind() != io::ErrorKind::AddrInUse =>
            {
                skipped = Some(Error::Bind { addr, source });
            }
            Err(source) => return Err(Error::Bind { addr, source }),
        }
    }
    if let Some(e) = skipped {
        if sockets.is_empty() {
            return Err(e);
        }
        tracing::warn!("{e}; IPv6 is left out");
    }
    Ok(sockets)
}

/// Runs the movie server until `shutdown` is cancelled; sessions then get
/// Stream End SHUTDOWN before this returns. Returns at once when
/// `config.enabled` is false.
pub async fn serve(
    config: Config,
    library: MovieLibrary,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    if !config.enabled {
        tracing::info!("movie protocol disabled");
        return Ok(());
    }
    config.validate()?;
    let sockets = bind_listen(&config.listen)?;
    serve_on(sockets, config, library, shutdown).await
}

/// Like [`serve`], on P0 sockets the caller has bound (tests bind
/// `127.0.0.1:0`). Session ports are bound on the same IP addresses.
pub async fn serve_on(
    sockets: Vec<UdpSocket>,
    config: Config,
    library: MovieLibrary,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    config.validate()?;
    let locals: Vec<SocketAddr> = sockets
        .iter()
        .map(UdpSocket::local_addr)
        .collect::<io::Result<_>>()?;
    tracing::info!(listen = ?locals, "movie server listening");
    let sockets = PortSockets::new(sockets);
    let mut ports = SocketPorts {
        ips: locals.iter().map(SocketAddr::ip).collect(),
        p0: locals.first().map_or(0, SocketAddr::port),
        range: config.session_ports,
        bound: HashMap::new(),
    };
    let mut negotiator = Negotiator::new(&config);
    let summaries: Arc<Mutex<HashMap<u16, SessionEntry>>> = Arc::default();
    let (closed_tx, mut closed_rx) = mpsc::unbounded_channel::<u16>();
    let mut tasks = JoinSet::new();
    let mut buf = vec![0u8; RECV_BUFFER];
    loop {
        flush_p0(&sockets, &mut negotiator).await;
        while let Some(created) = negotiator.poll_new_session() {
            let Some(socks) = ports.take(created.port) else {
                negotiator.session_closed(created.port);
                continue;
            };
            start_session(
                &mut tasks,
                &config,
                &library,
                created,
                socks,
                &summaries,
                &closed_tx,
                shutdown.child_token(),
            );
        }
        metrics::gauge!("switchyard_movie_sessions").set(negotiator.live_sessions() as f64);
        let deadline = negotiator.poll_timeout().map(TokioInstant::from_std);
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(port) = closed_rx.recv() => {
                negotiator.session_closed(port);
                if let Ok(mut s) = summaries.lock() {
                    s.remove(&port);
                }
            }
            received = recv_any(&sockets, &mut buf) => {
                let (len, from) = match received {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::debug!(error = %e, "P0 receive error");
                        continue;
                    }
                };
                let now = TokioInstant::now().into_std();
                let data = buf.get(..len).unwrap_or_default();
                // Only a Port Request needs the library; listing the folder
                // for every datagram would let garbage cost disk reads.
                let has_movies = data.first() == Some(&0x01) && !library.is_empty();
                let snapshot = summaries.clone();
                let list = move || snapshot.lock().map(|s| s.values().cloned().collect()).unwrap_or_default();
                negotiator.handle_datagram(now, from, data, P0Context { ports: &mut ports, has_movies, sessions: &list });
            }
            _ = sleep_until_opt(deadline) => {
                negotiator.handle_timeout(TokioInstant::now().into_std(), &mut ports);
            }
        }
    }
    tracing::info!("movie server shutting down");
    while tasks.join_next().await.is_some() {}
    Ok(())
}

async fn sleep_until_opt(deadline: Option<TokioInstant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Receives from whichever socket has a datagram.
async fn recv_any(sockets: &PortSockets, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
    std::future::poll_fn(|cx| {
        for (s, _) in &sockets.0 {
            let mut rb = ReadBuf::new(buf);
            if let Poll::Ready(r) = s.poll_recv_from(cx, &mut rb) {
                return Poll::Ready(r.map(|from| (rb.filled().len(), from)));
            }
        }
        Poll::Pending
    })
    .await
}

/// The sockets of one port (P0 or a session's Ps), one per address, with
/// their family noted once so that sending costs no extra system call.
struct PortSockets(Vec<(UdpSocket, bool)>);

impl PortSockets {
    fn new(sockets: Vec<UdpSocket>) -> Self {
        PortSockets(
            sockets
                .into_iter()
                .map(|s| {
                    let v4 = s.local_addr().map_or(true, |a| a.is_ipv4());
                    (s, v4)
                })
                .collect(),
        )
    }

    fn for_peer(&self, to: SocketAddr) -> Option<&UdpSocket> {
        let same = self.0.iter().find(|(_, v4)| *v4 == to.is_ipv4());
        same.or_else(|| self.0.first()).map(|(s, _)| s)
    }
}

async fn send(sockets: &PortSockets, t: &Transmit) {
    let Some(sock) = sockets.for_peer(t.to) else {
        return;
    };
    let result = match sock.try_send_to(&t.payload, t.to) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => sock.send_to(&t.payload, t.to).await,
        other => other,
    };
    if let Err(e) = result {
        // One member's unreachable address must not disturb the others (§7.2).
        tracing::debug!(to = %t.to, error = %e, "send failed");
        metrics::counter!("switchyard_movie_send_errors_total").increment(1);
    }
}

async fn flush_p0(sockets: &PortSockets, negotiator: &mut Negotiator) {
    while let Some(t) = negotiator.poll_transmit() {
        send(sockets, &t).await;
    }
}

#[allow(clippy::too_many_arguments)]
fn start_session(
    tasks: &mut JoinSet<()>,
    config: &Config,
    library: &MovieLibrary,
    created: NewSession,
    sockets: Vec<UdpSocket>,
    summaries: &Arc<Mutex<HashMap<u16, SessionEntry>>>,
    closed: &mpsc::UnboundedSender<u16>,
    shutdown: CancellationToken,
) {
    let seed: u64 = rand::rng().random();
    let params = SessionParams::new(config, &created, library.movies(), seed);
    let now = TokioInstant::now().into_std();
    let session = ServerSession::new(params, now);
    let span = tracing::info_span!("movie_session", port = created.port, leader = %created.leader);
    let summaries = summaries.clone();
    let closed = closed.clone();
    let port = created.port;
    tracing::info!(parent: &span, "session created");
    tasks.spawn(
        async move {
            run_session(session, PortSockets::new(sockets), &summaries, shutdown).await;
            let _ = closed.send(port);
        }
        .instrument(span),
    );
}

/// How long a shutting-down session may spend confirming its Stream Ends.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

async fn run_session(
    mut session: ServerSession,
    sockets: PortSockets,
    summaries: &Mutex<HashMap<u16, SessionEntry>>,
    shutdown: CancellationToken,
) {
    let mut buf = vec![0u8; RECV_BUFFER];
    let mut shutting_down: Option<TokioInstant> = None;
    let mut next_summary = TokioInstant::now();
    // Control packets are rare (about one per member per second), so the
    // Session List entry is refreshed after each, and every 500 ms.
    let mut heard = false;
    // The session wakes once per chunk interval; one timer moved only when
    // the deadline changes, and one cancellation future, keep that cheap.
    let timer = tokio::time::sleep_until(TokioInstant::now());
    tokio::pin!(timer);
    let mut armed: Option<TokioInstant> = None;
    let cancelled = shutdown.cancelled();
    tokio::pin!(cancelled);
    loop {
        while let Some(t) = session.poll_transmit() {
            send(&sockets, &t).await;
        }
        let mut changed = std::mem::take(&mut heard);
        while let Some(event) = session.poll_event() {
            tracing::debug!(?event, "session event");
            changed = true;
        }
        if session.is_closed() {
            let pacing = session.pacing();
            tracing::info!(
                data_packets = session.data_packets_sent(),
                discarded = session.discards.total(),
                chunks = pacing.chunks,
                mean_late_us = pacing.mean_late().as_micros() as u64,
                max_late_us = pacing.max_late.as_micros() as u64,
                "session closed"
            );
            break;
        }
        let now = TokioInstant::now();
        if changed || now >= next_summary {
            if let Ok(mut s) = summaries.lock() {
                s.insert(session.port(), session.summary());
            }
            next_summary = now + std::time::Duration::from_millis(500);
        }
        if shutting_down.is_some_and(|t| now >= t) {
            tracing::info!("shutdown grace over, closing");
            break;
        }
        let deadline = session.poll_timeout().map(TokioInstant::from_std);
        if deadline != armed {
            if let Some(d) = deadline {
                timer.as_mut().reset(d);
            }
            armed = deadline;
        }
        tokio::select! {
            _ = &mut cancelled, if shutting_down.is_none() => {
                session.shutdown(now.into_std());
                shutting_down = Some(now + SHUTDOWN_GRACE);
            }
            received = recv_any(&sockets, &mut buf) => {
                match received {
                    Ok((len, from)) => {
                        let data = buf.get(..len).unwrap_or_default();
                        session.handle_datagram(TokioInstant::now().into_std(), from, data);
                        heard = true;
                    }
                    Err(e) => tracing::debug!(error = %e, "receive error"),
                }
            }
            _ = &mut timer, if armed.is_some() => {
                armed = None;
                session.handle_timeout(TokioInstant::now().into_std());
            }
            _ = sleep_until_opt(shutting_down) => {}
        }
    }
}

/// Session ports bound on every P0 address (§5.2).
struct SocketPorts {
    ips: Vec<IpAddr>,
    p0: u16,
    range: Option<[u16; 2]>,
    bound: HashMap<u16, Vec<std::net::UdpSocket>>,
}

impl SocketPorts {
    fn bind_all(&self, port: u16) -> Option<Vec<std::net::UdpSocket>> {
        if port < 1024 || port == self.p0 || self.bound.contains_key(&port) {
            return None;
        }
        self.ips
            .iter()
            .map(|ip| bind_std(SocketAddr::new(*ip, port)).ok())
            .collect()
    }

    /// A port the OS picks on the first address, bound under the same number
    /// on the others; up to 8 tries.
    fn os_choice(&self) -> Option<(u16, Vec<std::net::UdpSocket>)> {
        let first = *self.ips.first()?;
        for _ in 0..8 {
            let Ok(sock) = bind_std(SocketAddr::new(first, 0)) else {
                continue;
            };
            let Ok(port) = sock.local_addr().map(|a| a.port()) else {
                continue;
            };
            if port < 1024 || port == self.p0 || self.bound.contains_key(&port) {
                continue;
            }
            let rest: Option<Vec<_>> = self
                .ips
                .iter()
                .skip(1)
                .map(|ip| bind_std(SocketAddr::new(*ip, port)).ok())
                .collect();
            if let Some(mut rest) = rest {
                rest.insert(0, sock);
                return Some((port, rest));
            }
        }
        None
    }

    /// Takes the sockets of a port for its session.
    fn take(&mut self, port: u16) -> Option<Vec<UdpSocket>> {
        let socks = self.bound.remove(&port)?;
        socks
            .into_iter()
            .map(|s| UdpSocket::from_std(s).ok())
            .collect()
    }
}

impl PortAllocator for SocketPorts {
    fn allocate(&mut self, requested: u16) -> Option<u16> {
        let (port, socks) = match self.range {
            Some([lo, hi]) => {
                let first = (lo..=hi)
                    .contains(&requested)
                    .then(|| self.bind_all(requested).map(|s| (requested, s)))
                    .flatten();
                first.or_else(|| {
                    let mut rng = rand::rng();
                    (0..32)
                        .map(|_| rng.random_range(lo..=hi))
                        .chain(lo..=hi)
                        .find_map(|p| self.bind_all(p).map(|s| (p, s)))
                })?
            }
            None => self
                .bind_all(requested)
                .map(|s| (requested, s))
                .or_else(|| self.os_choice())?,
        };
        self.bound.insert(port, socks);
        Some(port)
    }

    fn release(&mut self, port: u16) {
        self.bound.remove(&port);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default P0 addresses are the two wildcards on one port; on a
    /// dual-stack host that only works with `IPV6_V6ONLY` on the IPv6
    /// socket. This test has to bind the wildcards themselves to show it,
    /// but it only ever sends over loopback.
    #[tokio::test]
    async fn ipv6_and_ipv4_wildcards_share_one_port() {
        let defaults = Config::default().listen;
        assert_eq!(defaults.len(), 2);
        let mut bound = None;
        for _ in 0..20 {
            // A port free on IPv4 right now, tried on both wildcards.
            let probe = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
            let port = probe.local_addr().unwrap().port();
            drop(probe);
            let addrs: Vec<SocketAddr> = defaults
                .iter()
                .map(|a| SocketAddr::new(a.ip(), port))
                .collect();
            match bind_listen(&addrs) {
                Ok(s) => {
                    bound = Some((port, s));
                    break;
                }
                Err(Error::Bind { source, .. }) if source.kind() == io::ErrorKind::AddrInUse => {}
                Err(e) => panic!("{e}"),
            }
        }
        let (port, sockets) = bound.expect("no port free on both wildcards in 20 tries");
        let Ok(v6_loopback) = std::net::UdpSocket::bind("[::1]:0") else {
            // No IPv6 on this host: the IPv6 wildcard was left out.
            assert_eq!(sockets.len(), 1);
            return;
        };
        assert_eq!(sockets.len(), 2);
        assert!(sockets[0].local_addr().unwrap().is_ipv6());
        assert!(sockets[1].local_addr().unwrap().is_ipv4());
        let v4_loopback = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        v4_loopback.send_to(b"four", ("127.0.0.1", port)).unwrap();
        v6_loopback.send_to(b"six", ("::1", port)).unwrap();
        let mut buf = [0u8; 16];
        for (socket, want) in [(&sockets[0], &b"six"[..]), (&sockets[1], &b"four"[..])] {
            let (n, _) = tokio::time::timeout(
                std::time::Duration::from_secs(5),
                socket.recv_from(&mut buf),
            )
            .await
            .expect("datagram arrives")
            .unwrap();
            assert_eq!(&buf[..n], want);
        }
    }
}
