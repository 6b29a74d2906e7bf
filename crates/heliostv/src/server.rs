//! The tokio driver: listeners, one task per connection, and the data pumps
//! between the yard's readers and the data sockets. All protocol decisions
//! are taken by [`crate::session`]; this file only carries them out.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};
use yard::{ReaderEvent, ReaderOptions, Yard, YardEvent};

use crate::config::Config;
use crate::data::{SectionFilter, strip_si};
use crate::session::{
    Catalog, ChannelRef, ControlAction, ControlSession, DataAction, DataKind, DataSession, Grant,
    Mode, Registry, canonical_uri, sort_services,
};
use crate::wire::{
    ChangeKind, Decoder, Message, Origin, ServiceChange, ServiceInfo, encode_section,
};

/// Errors of [`run`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("no {0} listener could be opened")]
    NoListener(&'static str),
}

/// Binds every configured address (IPv6 sockets with `IPV6_V6ONLY`, so
/// `[::]` and `0.0.0.0` on one port coexist, §3) and serves until
/// `shutdown`. An IPv6 wildcard on a host without IPv6 is skipped with a
/// warning; any other bind failure is an error.
pub async fn run(config: Config, yard: Yard, shutdown: CancellationToken) -> Result<(), Error> {
    let control = bind_all(&config.control_listen, "control")?;
    let data = bind_all(&config.data_listen, "data")?;
    serve_listeners(control, data, yard, config, shutdown).await;
    Ok(())
}

fn bind_all(addrs: &[SocketAddr], what: &'static str) -> Result<Vec<TcpListener>, Error> {
    let mut listeners = Vec::new();
    for &addr in addrs {
        match bind(addr) {
            Ok(l) => listeners.push(l),
            Err(source)
                if addr.is_ipv6()
                    && matches!(
                        source.kind(),
                        std::io::ErrorKind::AddrNotAvailable | std::io::ErrorKind::Unsupported
                    )
                    || source.raw_os_error() == Some(97) =>
            {
                warn!(%addr, error = %source, "heliostv: IPv6 not available, listener skipped");
            }
            Err(source) => return Err(Error::Bind { addr, source }),
        }
    }
    if listeners.is_empty() {
        return Err(Error::NoListener(what));
    }
    Ok(listeners)
}

/// A listening socket for one address.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// Serves one control and one data listener until `shutdown` is cancelled,
/// then ends every session (ABORT `shutdown`) and returns once the
/// connections are closed.
pub async fn serve(
    control: TcpListener,
    data: TcpListener,
    yard: Yard,
    config: Config,
    shutdown: CancellationToken,
) {
    serve_listeners(vec![control], vec![data], yard, config, shutdown).await
}

/// [`serve`] with any number of listeners of each kind.
pub async fn serve_listeners(
    control: Vec<TcpListener>,
    data: Vec<TcpListener>,
    yard: Yard,
    config: Config,
    shutdown: CancellationToken,
) {
    let shared = Arc::new(Shared::new(yard, config, shutdown.clone()));
    let tracker = TaskTracker::new();
    for l in control {
        if let Ok(addr) = l.local_addr() {
            info!(%addr, "heliostv control listener");
        }
        tracker.spawn(accept_loop(
            l,
            Listener::Control,
            shared.clone(),
            tracker.clone(),
        ));
    }
    for l in data {
        if let Ok(addr) = l.local_addr() {
            info!(%addr, "heliostv data listener");
        }
        tracker.spawn(accept_loop(
            l,
            Listener::Data,
            shared.clone(),
            tracker.clone(),
        ));
    }
    shutdown.cancelled().await;
    tracker.close();
    if tokio::time::timeout(Duration::from_secs(5), tracker.wait())
        .await
        .is_err()
    {
        warn!("heliostv: connections still open 5 s after shutdown");
    }
}

#[derive(Clone, Copy, Debug)]
enum Listener {
    Control,
    Data,
}

async fn accept_loop(
    listener: TcpListener,
    kind: Listener,
    shared: Arc<Shared>,
    tracker: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors and the like: back off rather than spin.
                warn!(error = %e, "heliostv accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        if matches!(kind, Listener::Data) && shared.config.data_send_buffer > 0 {
            let _ = socket2::SockRef::from(&stream)
                .set_send_buffer_size(shared.config.data_send_buffer);
        }
        let keepalive = socket2::TcpKeepalive::new().with_time(Duration::from_secs(60));
        let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
        let shared = shared.clone();
        match kind {
            Listener::Control => {
                let span = info_span!("heliostv", conn = "control", %peer, session = tracing::field::Empty);
                tracker.spawn(control_connection(shared, stream).instrument(span));
            }
            Listener::Data => {
                let span = info_span!("heliostv", conn = "data", %peer);
                tracker.spawn(data_connection(shared, stream, peer).instrument(span));
            }
        }
    }
}

// ------------------------------------------------------------ shared state

struct Shared {
    yard: Yard,
    config: Config,
    shutdown: CancellationToken,
    state: Mutex<State>,
}

struct State {
    registry: Registry,
    data: HashMap<u32, DataHandle>,
}

/// How a control task closes a data connection and waits for it (§8.4).
#[derive(Clone)]
struct DataHandle {
    close: CancellationToken,
    closed: CancellationToken,
}

impl Shared {
    fn new(yard: Yard, config: Config, shutdown: CancellationToken) -> Shared {
        let registry = Registry::new(config.session_limits(), StdRng::from_os_rng());
        Shared {
            yard,
            config,
            shutdown,
            state: Mutex::new(State {
                registry,
                data: HashMap::new(),
            }),
        }
    }

    async fn close_data(&self, token: u32) {
        let handle = self.state.lock().data.remove(&token);
        if let Some(h) = handle {
            h.close.cancel();
            if tokio::time::timeout(Duration::from_secs(2), h.closed.cancelled())
                .await
                .is_err()
            {
                warn!(token, "heliostv: data connection slow to close");
            }
        }
    }
}

/// The yard's channels as HeliosTv services.
struct YardCatalog<'a> {
    shared: &'a Shared,
}

impl Catalog for YardCatalog<'_> {
    fn channels(&self) -> Vec<ChannelRef> {
        self.shared
            .yard
            .channels()
            .iter()
            .map(|c| ChannelRef {
                id: c.id,
                number: c.number,
                name: c.name.clone(),
            })
            .collect()
    }

    fn services(&self) -> Vec<ServiceInfo> {
        let channels = self.shared.yard.channels();
        let refs = self.channels();
        let mut services: Vec<ServiceInfo> = channels
            .iter()
            .zip(refs.iter())
            .map(|(c, r)| {
                // From the programme the yard last saw (probed or played),
                // whoever read it; both false before any PMT (§11.2).
                let (has_video, has_audio) =
                    self.shared.yard.program(c.id).map_or((false, false), |p| {
                        (
                            p.tracks.iter().any(|t| t.codec.is_video()),
                            p.tracks.iter().any(|t| t.codec.is_audio()),
                        )
                    });
                ServiceInfo {
                    uri: canonical_uri(r, &refs),
                    name: c.name.clone(),
                    number: u64::from(c.number),
                    provider: c.provider_name.clone().unwrap_or_default(),
                    tags: c
                        .tags
                        .iter()
                        .filter_map(|t| self.shared.yard.tag(*t))
                        .map(|t| t.name.clone())
                        .collect(),
                    has_video,
                    has_audio,
                }
            })
            .collect();
        sort_services(&mut services);
        services
    }
}

// ------------------------------------------------------ control connection

/// A SERVICES subscription of one session (§11.3).
struct Subscription {
    request: u64,
    /// The last state told to the client, by URI (clients match by URI).
    known: BTreeMap<String, ServiceInfo>,
    /// When the batched changes are due.
    due: Option<Instant>,
}

async fn control_connection(shared: Arc<Shared>, stream: TcpStream) {
    let id = shared.state.lock().registry.new_session_id();
    tracing::Span::current().record("session", id.0);
    debug!(session = id.0, "control connection");
    metrics::counter!("switchyard_heliostv_control_connections_total").increment(1);
    let mut session = ControlSession::new(id);
    let mut decoder = Decoder::new(shared.config.wire_limits());
    let (mut rd, mut wr) = stream.into_split();
    let mut out: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let hello_deadline = Instant::now() + shared.config.hello_timeout();
    // Subscribed to the feeds from the start, so no change made after a
    // SERVICES snapshot can be missed (§11.3: none before, all after).
    let mut yard_events = shared.yard.events();
    let mut subscription: Option<Subscription> = None;
    let mut was_open = false;
    let mut closing = false;

    while !closing {
        if out.len() > shared.config.control_queue_limit {
            warn!(
                session = id.0,
                queued = out.len(),
                "heliostv: control connection closed, client not reading answers"
            );
            break;
        }
        let room = decoder.room().min(buf.len());
        let due = subscription.as_ref().and_then(|s| s.due);
        let subscribed = subscription.is_some();
        tokio::select! {
            biased;
            _ = shared.shutdown.cancelled() => {
                let actions = { let mut st = shared.state.lock(); session.shutdown(&mut st.registry) };
                closing = apply_control(&shared, actions, &mut out, &mut subscription).await;
            }
            written = wr.write(&out), if !out.is_empty() => match written {
                Ok(n) if n > 0 => { out.drain(..n); }
                _ => break,
            },
            read = rd.read(&mut buf[..room]), if room > 0 => {
                let n = match read { Ok(n) if n > 0 => n, _ => break };
                decoder.push(buf.get(..n).unwrap_or_default());
                loop {
                    let actions = match decoder.next_object() {
                        Ok(None) => break,
                        Ok(Some(object)) => {
                            let message = object.into_message(Origin::Client);
                            if let Err(m) = &message {
                                debug!(session = id.0, error = %m, "heliostv: malformed message");
                                metrics::counter!("switchyard_heliostv_malformed_total").increment(1);
                            }
                            let mut st = shared.state.lock();
                            let catalog = YardCatalog { shared: &shared };
                            session.handle(message, std::time::Instant::now(), &mut st.registry, &catalog)
                        }
                        Err(e) => {
                            info!(session = id.0, error = %e, "heliostv: control stream unreadable");
                            let mut st = shared.state.lock();
                            session.stream_error(e, &mut st.registry)
                        }
                    };
                    if !was_open && session.roles().is_some() {
                        was_open = true;
                        metrics::gauge!("switchyard_heliostv_sessions").increment(1.0);
                    }
                    closing = apply_control(&shared, actions, &mut out, &mut subscription).await;
                    if closing { break; }
                }
            }
            _ = tokio::time::sleep_until(hello_deadline), if session.roles().is_none() && !session.is_closed() => {
                debug!(session = id.0, "heliostv: no HELLO in time");
                let actions = { let mut st = shared.state.lock(); session.hello_timeout(&mut st.registry) };
                closing = apply_control(&shared, actions, &mut out, &mut subscription).await;
            }
            ev = yard_events.recv(), if subscribed => {
                let relevant = match ev {
                    Ok(YardEvent::ChannelAdded(_) | YardEvent::ChannelUpdated(_) | YardEvent::ChannelRemoved(_)
                        | YardEvent::TagAdded(_) | YardEvent::TagUpdated(_) | YardEvent::TagRemoved(_)) => true,
                    Ok(_) => false,
                    Err(broadcast::error::RecvError::Lagged(_)) => true,
                    Err(broadcast::error::RecvError::Closed) => { yard_events = broadcast::channel(1).1; false }
                };
                if let (true, Some(s)) = (relevant, subscription.as_mut()) {
                    s.due.get_or_insert(Instant::now() + shared.config.services_coalesce());
                }
            }
            _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                if let Some(s) = subscription.as_mut() {
                    s.due = None;
                    notify_changes(&shared, s, &mut out);
                }
            }
        }
    }
    // Whatever way the loop ended, the session ends: its data connections go.
    let actions = {
        let mut st = shared.state.lock();
        session.connection_lost(&mut st.registry)
    };
    apply_control(&shared, actions, &mut out, &mut subscription).await;
    if !out.is_empty() {
        let _ = tokio::time::timeout(Duration::from_secs(2), wr.write_all(&out)).await;
    }
    let _ = wr.shutdown().await;
    if was_open {
        metrics::gauge!("switchyard_heliostv_sessions").decrement(1.0);
    }
    debug!(session = id.0, "control connection closed");
}

/// Carries out a session's actions; returns whether the connection is to close.
async fn apply_control(
    shared: &Shared,
    actions: Vec<ControlAction>,
    out: &mut Vec<u8>,
    subscription: &mut Option<Subscription>,
) -> bool {
    let mut close = false;
    for action in actions {
        match action {
            ControlAction::Send(message) => {
                if let Message::Abort { reason } | Message::Error { error: reason, .. } = &message {
                    debug!(%reason, "heliostv: refusal sent");
                    metrics::counter!("switchyard_heliostv_refusals_total", "reason" => reason.clone()).increment(1);
                }
                message.encode(out);
            }
            ControlAction::CloseData(token) => shared.close_data(token).await,
            ControlAction::Subscribe { request, snapshot } => {
                *subscription = Some(Subscription {
                    request,
                    known: snapshot.into_iter().map(|s| (s.uri.clone(), s)).collect(),
                    due: None,
                });
            }
            ControlAction::Close => close = true,
        }
    }
    close
}

/// Compares the current services with what the client knows and queues one
/// notification with the differences, if any.
fn notify_changes(shared: &Shared, sub: &mut Subscription, out: &mut Vec<u8>) {
    let now: BTreeMap<String, ServiceInfo> = YardCatalog { shared }
        .services()
        .into_iter()
        .map(|s| (s.uri.clone(), s))
        .collect();
    let mut changes = Vec::new();
    for (uri, old) in &sub.known {
        if !now.contains_key(uri) {
            changes.push(ServiceChange {
                kind: ChangeKind::Removed,
                service: old.clone(),
            });
        }
    }
    for (uri, new) in &now {
        match sub.known.get(uri) {
            None => changes.push(ServiceChange {
                kind: ChangeKind::Added,
                service: new.clone(),
            }),
            Some(old) if old != new => changes.push(ServiceChange {
                kind: ChangeKind::Updated,
                service: new.clone(),
            }),
            Some(_) => {}
        }
    }
    sub.known = now;
    if changes.is_empty() {
        return;
    }
    // Keep every notification under the largest message we send (§4.3).
    let limit = shared.config.max_sent_message;
    let mut batch: Vec<rmpv::Value> = Vec::new();
    let mut size = 16;
    for change in changes {
        let value = change.to_value();
        let mut encoded = Vec::new();
        crate::wire::encode_value(&value, &mut encoded);
        if !batch.is_empty() && size + encoded.len() > limit {
            Message::ServicesChanged {
                request: sub.request,
                changes: std::mem::take(&mut batch),
            }
            .encode(out);
            size = 16;
        }
        size += encoded.len();
        batch.push(value);
    }
    Message::ServicesChanged {
        request: sub.request,
        changes: batch,
    }
    .encode(out);
}

// --------------------------------------------------------- data connection

async fn data_connection(shared: Arc<Shared>, stream: TcpStream, peer: SocketAddr) {
    if shared
        .state
        .lock()
        .registry
        .is_blocked(peer.ip(), std::time::Instant::now())
    {
        debug!("heliostv: data connection refused, too many invalid tokens from this address");
        metrics::counter!("switchyard_heliostv_refusals_total", "reason" => "token_guessing")
            .increment(1);
        return;
    }
    let (mut rd, mut wr) = stream.into_split();
    let mut decoder = Decoder::new(shared.config.wire_limits());
    let mut buf = vec![0u8; 4096];
    let deadline = Instant::now() + shared.config.authorize_timeout();
    let first = loop {
        match decoder.next_object() {
            Ok(Some(o)) => break Ok(o.into_message(Origin::Client)),
            Ok(None) => {}
            Err(e) => break Err(e),
        }
        let room = decoder.room().min(buf.len());
        let Some(slot) = buf.get_mut(..room) else {
            return;
        };
        match tokio::time::timeout_at(deadline, rd.read(slot)).await {
            Err(_) => {
                debug!("heliostv: no AUTHORIZE in time");
                return;
            }
            Ok(Ok(0) | Err(_)) => return,
            Ok(Ok(n)) => decoder.push(buf.get(..n).unwrap_or_default()),
        }
    };
    let mut data_session = DataSession::new(peer.ip());
    let (actions, handle) = {
        let mut st = shared.state.lock();
        let actions = match first {
            Ok(message) => {
                data_session.handle(message, std::time::Instant::now(), &mut st.registry)
            }
            Err(e) => data_session.stream_error(e),
        };
        // Registered under the same lock as the grant, so a DEL_SERVICE can
        // never find the entry ACTIVE without a way to close its connection.
        let handle = actions.iter().find_map(|a| match a {
            DataAction::Stream(grant) => {
                let h = DataHandle {
                    close: CancellationToken::new(),
                    closed: CancellationToken::new(),
                };
                st.data.insert(grant.token, h.clone());
                Some((*grant, h))
            }
            _ => None,
        });
        (actions, handle)
    };
    let mut out = Vec::new();
    for a in &actions {
        if let DataAction::Send(m) = a {
            if let Message::Abort { reason } | Message::Error { error: reason, .. } = m {
                debug!(%reason, "heliostv: data connection refused");
                metrics::counter!("switchyard_heliostv_refusals_total", "reason" => reason.clone())
                    .increment(1);
            }
            m.encode(&mut out);
        }
    }
    let Some((grant, handle)) = handle else {
        let _ = tokio::time::timeout(Duration::from_secs(2), wr.write_all(&out)).await;
        let _ = wr.shutdown().await;
        return;
    };
    let _finish = FinishGuard {
        shared: shared.clone(),
        token: grant.token,
        closed: handle.closed.clone(),
    };
    metrics::gauge!("switchyard_heliostv_data_connections").increment(1.0);
    // Client bytes after AUTHORIZE are read and discarded (§9.1 STREAMING).
    drop(decoder);
    let pump = Pump {
        shared: &shared,
        grant,
        peer,
        close: handle.close,
        rd,
        wr,
    };
    pump.run(out).await;
    metrics::gauge!("switchyard_heliostv_data_connections").decrement(1.0);
}

/// Ends a granted data connection however its task ends.
struct FinishGuard {
    shared: Arc<Shared>,
    token: u32,
    closed: CancellationToken,
}

impl Drop for FinishGuard {
    fn drop(&mut self) {
        let mut st = self.shared.state.lock();
        st.registry.data_closed(self.token);
        st.data.remove(&self.token);
        drop(st);
        self.closed.cancel();
    }
}

/// Why a pump stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// DEL_SERVICE, end of session or shutdown.
    Closed,
    /// The client closed or reset the connection.
    Gone,
    /// The socket accepted no byte for the stall timeout.
    Stalled,
}

struct Pump<'a> {
    shared: &'a Shared,
    grant: Grant,
    peer: SocketAddr,
    close: CancellationToken,
    rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
}

impl Pump<'_> {
    async fn run(mut self, result: Vec<u8>) {
        let channel = self.grant.channel_id;
        let config = &self.shared.config;
        let label = format!("heliostv {}", self.peer);
        let (opts, stall) = match self.grant.kind {
            DataKind::Ts(Mode::Player) => (
                ReaderOptions::ts(label).with_max_bytes(config.player_queue_limit),
                config.player_stall_timeout(),
            ),
            DataKind::Ts(Mode::Recorder) => (
                ReaderOptions::recorder(label).with_max_bytes(config.recorder_queue_limit),
                config.recorder_stall_timeout(),
            ),
            DataKind::Sections(_) => (
                ReaderOptions::ts(label).with_max_bytes(config.section_queue_limit),
                config.player_stall_timeout(),
            ),
        };
        let mut reader = match self.shared.yard.subscribe(channel, opts) {
            Ok(r) => r,
            Err(e) => {
                // The channel went away between NEW_SERVICE and AUTHORIZE:
                // the entry ends like any other closed data connection.
                info!(channel, error = %e, "heliostv: channel unavailable");
                let _ =
                    tokio::time::timeout(Duration::from_secs(2), self.wr.write_all(&result)).await;
                return;
            }
        };
        let name = reader.channel().name.clone();
        info!(channel = %name, kind = ?self.grant.kind, "heliostv: streaming");
        if self.write(&result, stall, false).await.is_err() {
            return;
        }
        let mut sections = match self.grant.kind {
            DataKind::Sections(tables) => Some(SectionFilter::new(tables)),
            DataKind::Ts(_) => None,
        };
        let recorder = self.grant.kind == DataKind::Ts(Mode::Recorder);
        let mode = match self.grant.kind {
            DataKind::Ts(Mode::Player) => "player",
            DataKind::Ts(Mode::Recorder) => "recorder",
            DataKind::Sections(_) => "section",
        };
        let mut discard = [0u8; 1024];
        let mut sent: u64 = 0;
        let mut dropped_before_start: Option<u64> = None;
        let stop = loop {
            let event = tokio::select! {
                biased;
                _ = self.close.cancelled() => break Stop::Closed,
                _ = self.shared.shutdown.cancelled() => break Stop::Closed,
                read = self.rd.read(&mut discard) => match read {
                    Ok(n) if n > 0 => continue,
                    _ => break Stop::Gone,
                },
                ev = reader.recv() => ev,
            };
            match event {
                None => {
                    info!(channel = %name, "heliostv: channel ended, data connection closed");
                    break Stop::Closed;
                }
                Some(ReaderEvent::Ts(chunk)) => {
                    let bytes = match sections.as_mut() {
                        None => strip_si(chunk),
                        Some(filter) => {
                            let mut out = Vec::new();
                            filter.push(&chunk, &mut |s| encode_section(s, &mut out));
                            // Chunks before the first keyframe are counted as
                            // dropped too; only later drops mean overflow.
                            let dropped = reader.stats().dropped_ts_bytes;
                            let baseline = *dropped_before_start.get_or_insert(dropped);
                            if dropped > baseline {
                                warn!(channel = %name, peer = %self.peer, "heliostv: section connection closed: queue limit");
                                break Stop::Closed;
                            }
                            Bytes::from(out)
                        }
                    };
                    if bytes.is_empty() {
                        continue;
                    }
                    match self.write(&bytes, stall, sections.is_none()).await {
                        Ok(()) => {
                            sent += bytes.len() as u64;
                            metrics::counter!("switchyard_heliostv_bytes_sent_total", "mode" => mode)
                                .increment(bytes.len() as u64);
                        }
                        Err(stop) => break stop,
                    }
                }
                Some(ReaderEvent::Overflow) => {
                    let queued = reader.stats().queued_bytes;
                    warn!(channel = %name, peer = %self.peer, queued, "recorder cut: queue limit");
                    metrics::counter!("switchyard_heliostv_recorder_cuts_total", "reason" => "queue_limit").increment(1);
                    break Stop::Closed;
                }
                Some(ReaderEvent::Program(_)) => {}
                Some(ReaderEvent::SourceLost { reason }) => {
                    debug!(channel = %name, %reason, "heliostv: input lost")
                }
                Some(ReaderEvent::SourceResumed) => {
                    debug!(channel = %name, "heliostv: input resumed")
                }
                Some(ReaderEvent::Frame(_)) => {}
            }
        };
        if stop == Stop::Stalled {
            if recorder {
                warn!(channel = %name, peer = %self.peer, "recorder cut: stalled");
                metrics::counter!("switchyard_heliostv_recorder_cuts_total", "reason" => "stalled")
                    .increment(1);
            } else {
                info!(channel = %name, "heliostv: stalled client closed");
            }
        }
        let dropped = reader.stats().dropped_ts_bytes;
        if dropped > 0 {
            metrics::counter!("switchyard_heliostv_dropped_bytes_total", "mode" => mode)
                .increment(dropped);
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.wr.shutdown()).await;
        info!(channel = %name, sent, dropped, ?stop, "heliostv: data connection closed");
    }

    /// Writes `data`, cancellable. No byte accepted for `stall` is a stall.
    /// When closed midway and `packets` is set, the packet in progress is
    /// finished first (briefly), so the stream ends on a packet boundary.
    async fn write(&mut self, data: &[u8], stall: Duration, packets: bool) -> Result<(), Stop> {
        let mut off = 0usize;
        while let Some(rest) = data.get(off..).filter(|r| !r.is_empty()) {
            tokio::select! {
                biased;
                _ = self.close.cancelled() => {
                    let partial = off % media::ts::PACKET_SIZE;
                    if packets && partial != 0 {
                        let end = off + (media::ts::PACKET_SIZE - partial);
                        if let Some(tail) = data.get(off..end) {
                            let _ = tokio::time::timeout(Duration::from_secs(1), self.wr.write_all(tail)).await;
                        }
                    }
                    return Err(Stop::Closed);
                }
                written = tokio::time::timeout(stall, self.wr.write(rest)) => match written {
                    Err(_) => return Err(Stop::Stalled),
                    Ok(Ok(n)) if n > 0 => off += n,
                    Ok(_) => return Err(Stop::Gone),
                },
            }
        }
        Ok(())
    }
}
