//! The HTSP server: accepts TCP connections and drives one [`Session`] per
//! connection, a writer task serving its [`OutQueues`], and one task per
//! subscription pulling frames from the yard through a [`StreamConverter`].
//!
//! This is the only module of the crate that does I/O or reads the clock.

use std::collections::HashMap;
use std::io::{Read, Seek};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Notify, Semaphore, broadcast, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use yard::access::{Access, Rights};
use yard::dvr::{Autorec, Cutpoint, Dvr, DvrEntry, DvrError, EntryUpdate, NewEntry, Timerec};
use yard::{ChannelInfo, EpgEvent, ReaderEvent, ReaderOptions, Tag, Yard};

use crate::queue::OutQueues;
use crate::session::{Backend, Change, DiskSpace, FileHandle, Output, Session, SubscribeParams};
use crate::streaming::{SourceInfo, StreamConverter, StreamOut};
use crate::tickets::Tickets;
use crate::wire::{self, Msg};

/// `[htsp]` in the server's TOML.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub enabled: bool,
    /// Tvheadend's port, so clients work with their defaults.
    pub listen: String,
    /// Announced in `hello` (Kodi shows it).
    pub server_name: String,
    /// Further connections are closed at once.
    pub max_connections: usize,
    /// How long a `getTicket` ticket is valid.
    pub ticket_lifetime_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enabled: true,
            listen: "0.0.0.0:9982".into(),
            server_name: "Switchyard".into(),
            max_connections: 256,
            ticket_lifetime_secs: 300,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("HTSP listen address {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// Why a DVR file cannot be served over HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DvrFileError {
    #[error("no such recording")]
    NotFound,
    #[error("no access to this recording")]
    Forbidden,
    #[error("the recording has no file yet")]
    NoFile,
}

/// Everything the HTSP server (and the HTTP routes that share its tickets
/// and recordings) needs. Cheap to clone.
#[derive(Clone)]
pub struct HtspContext {
    pub yard: Yard,
    pub dvr: Option<Dvr>,
    pub access: Arc<Access>,
    pub tickets: Tickets,
    backend: Arc<YardBackend>,
    max_connections: usize,
}

impl HtspContext {
    pub fn new(yard: Yard, dvr: Option<Dvr>, access: Arc<Access>, config: &Config) -> HtspContext {
        // Tvheadend's range is 30 s to an hour; shorter lifetimes are
        // allowed for tests and strict setups.
        let tickets = Tickets::new(Duration::from_secs(
            config.ticket_lifetime_secs.clamp(1, 3600),
        ));
        let backend = Arc::new(YardBackend {
            yard: yard.clone(),
            dvr: dvr.clone(),
            access: access.clone(),
            tickets: tickets.clone(),
            server_name: config.server_name.clone(),
        });
        HtspContext {
            yard,
            dvr,
            access,
            tickets,
            backend,
            max_connections: config.max_connections.max(1),
        }
    }

    /// For HTTP `?ticket=`: the rights a ticket grants on `path` (request
    /// path without webroot and query), if valid now.
    pub fn check_ticket(&self, ticket: &str, path: &str) -> Option<Rights> {
        self.tickets.check(ticket, path)
    }

    /// For HTTP `/dvrfile/{id}`: the recording's file, if `rights` may read it.
    pub fn dvr_file(&self, id: u32, rights: &Rights) -> Result<PathBuf, DvrFileError> {
        let dvr = self.dvr.as_ref().ok_or(DvrFileError::NotFound)?;
        let e = dvr.entry(id).ok_or(DvrFileError::NotFound)?;
        if !rights.dvr {
            return Err(DvrFileError::Forbidden);
        }
        if !e.visible_to(rights) {
            return Err(DvrFileError::NotFound);
        }
        dvr.file_path(id)
            .filter(|p| p.exists())
            .ok_or(DvrFileError::NoFile)
    }
}

/// Binds `config.listen` and serves until `shutdown`.
pub async fn run(
    config: Config,
    ctx: HtspContext,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let listener = TcpListener::bind(&config.listen)
        .await
        .map_err(|source| Error::Bind {
            addr: config.listen.clone(),
            source,
        })?;
    tracing::info!(addr = %config.listen, "HTSP listening");
    serve(listener, ctx, shutdown).await;
    Ok(())
}

/// Serves HTSP on an already bound listener (tests bind port 0).
pub async fn serve(listener: TcpListener, ctx: HtspContext, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(ctx.max_connections));
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "HTSP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "HTSP connection limit reached; closing");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        limit_send_buffer(&stream);
        let ctx = ctx.clone();
        let shutdown = shutdown.clone();
        let span = tracing::info_span!("htsp", %peer, user = tracing::field::Empty);
        tokio::spawn(
            async move {
                metrics::counter!("switchyard_htsp_connections_total").increment(1);
                metrics::gauge!("switchyard_htsp_connections").increment(1.0);
                let (rd, wr) = stream.into_split();
                Connection::run(ctx, peer, rd, wr, shutdown).await;
                metrics::gauge!("switchyard_htsp_connections").decrement(1.0);
                drop(permit);
            }
            .instrument(span),
        );
    }
}

/// What the connection's tasks share.
struct Shared {
    queues: Mutex<OutQueues>,
    wake: Notify,
    /// Cancelled when the connection ends, for whatever reason.
    closed: CancellationToken,
    epoch: Instant,
}

impl Shared {
    fn now_sec(&self) -> u64 {
        self.epoch.elapsed().as_secs()
    }
}

struct SubHandle {
    task: tokio::task::JoinHandle<()>,
    converter: Arc<Mutex<StreamConverter>>,
}

struct Connection {
    ctx: HtspContext,
    peer: SocketAddr,
    shared: Arc<Shared>,
    subs: HashMap<u32, SubHandle>,
}

fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

async fn recv_opt<T: Clone>(
    rx: &mut Option<broadcast::Receiver<T>>,
) -> Result<T, broadcast::error::RecvError> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

impl Connection {
    async fn run(
        ctx: HtspContext,
        peer: SocketAddr,
        rd: OwnedReadHalf,
        wr: OwnedWriteHalf,
        shutdown: CancellationToken,
    ) {
        let challenge: [u8; 32] = rand::random();
        let rights = ctx.access.for_address(peer.ip());
        let mut session = Session::new(ctx.backend.clone(), challenge, rights);
        let shared = Arc::new(Shared {
            queues: Mutex::new(OutQueues::new()),
            wake: Notify::new(),
            closed: shutdown.child_token(),
            epoch: Instant::now(),
        });
        let writer = tokio::spawn(write_loop(wr, shared.clone()).in_current_span());
        let (req_tx, mut req_rx) = mpsc::channel::<Msg>(1);
        let reader = tokio::spawn(read_loop(rd, req_tx, shared.closed.clone()).in_current_span());
        let mut yard_events = Some(ctx.yard.events());
        let mut dvr_events = ctx.dvr.as_ref().map(Dvr::events);
        let mut conn = Connection {
            ctx,
            peer,
            shared: shared.clone(),
            subs: HashMap::new(),
        };
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        tick.tick().await;
        tracing::debug!("HTSP connection open");
        loop {
            let outputs = tokio::select! {
                _ = shared.closed.cancelled() => break,
                req = req_rx.recv() => match req {
                    Some(req) => {
                        let out = session.handle(unix_now(), &req);
                        if let Some(user) = &session.rights().username {
                            tracing::Span::current().record("user", user.as_str());
                        }
                        out
                    }
                    None => break,
                },
                ev = recv_opt(&mut yard_events) => match ev {
                    Ok(ev) => session.on_change(unix_now(), &Change::Yard(ev)),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "HTSP client missed catalog changes");
                        Vec::new()
                    }
                    Err(broadcast::error::RecvError::Closed) => { yard_events = None; Vec::new() }
                },
                ev = recv_opt(&mut dvr_events) => match ev {
                    Ok(ev) => session.on_change(unix_now(), &Change::Dvr(ev)),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "HTSP client missed DVR changes");
                        Vec::new()
                    }
                    Err(broadcast::error::RecvError::Closed) => { dvr_events = None; Vec::new() }
                },
                _ = tick.tick() => session.tick(unix_now()),
            };
            let anonymize = session.rights().anonymize;
            for o in outputs {
                conn.apply(o, anonymize).await;
            }
        }
        shared.closed.cancel();
        for (_, s) in conn.subs.drain() {
            s.task.abort();
        }
        reader.abort();
        let _ = writer.await;
        tracing::debug!("HTSP connection closed");
    }

    async fn apply(&mut self, o: Output, anonymize: bool) {
        let shared = self.shared.clone();
        match o {
            Output::Pause(d) => tokio::time::sleep(d).await,
            Output::Send(msg) => shared.queues.lock().push_control(&msg, None),
            Output::SendActivating {
                msg,
                subscription_id,
            } => shared
                .queues
                .lock()
                .push_control(&msg, Some(subscription_id)),
            Output::SendSub {
                subscription_id,
                msg,
            } => shared.queues.lock().push_sub(subscription_id, &msg),
            Output::Subscribe(p) => self.subscribe(p, anonymize),
            Output::Unsubscribe { subscription_id } => {
                if let Some(s) = self.subs.remove(&subscription_id) {
                    s.task.abort();
                }
                shared.queues.lock().remove_subscription(subscription_id);
            }
            Output::FilterStreams {
                subscription_id,
                enable,
                disable,
            } => {
                if let Some(s) = self.subs.get(&subscription_id) {
                    s.converter.lock().filter(&enable, &disable);
                }
            }
        }
        shared.wake.notify_one();
    }

    fn subscribe(&mut self, p: SubscribeParams, anonymize: bool) {
        let ch = self.ctx.yard.channel(p.channel_id);
        let source = SourceInfo {
            service: ch
                .as_ref()
                .map(|c| c.service_name.clone().unwrap_or_else(|| c.name.clone()))
                .unwrap_or_default(),
            provider: ch.as_ref().and_then(|c| c.provider_name.clone()),
            network_type: "IPTV".into(),
            mux: ch.as_ref().map(|c| c.name.clone()).unwrap_or_default(),
            anonymize,
        };
        let converter = Arc::new(Mutex::new(StreamConverter::new(
            p.subscription_id,
            p.ninety_khz,
            source,
        )));
        let generation = self
            .shared
            .queues
            .lock()
            .add_subscription(p.subscription_id, p.queue_depth);
        let label = format!("htsp {} sub {}", self.peer, p.subscription_id);
        let task = tokio::spawn(
            run_subscription(
                self.ctx.yard.clone(),
                p.clone(),
                self.shared.clone(),
                converter.clone(),
                label,
                generation,
            )
            .in_current_span(),
        );
        if let Some(old) = self
            .subs
            .insert(p.subscription_id, SubHandle { task, converter })
        {
            old.task.abort();
        }
    }
}

async fn read_loop(mut rd: OwnedReadHalf, tx: mpsc::Sender<Msg>, closed: CancellationToken) {
    loop {
        let mut prefix = [0u8; 4];
        if let Err(e) = rd.read_exact(&mut prefix).await {
            if e.kind() != std::io::ErrorKind::UnexpectedEof {
                tracing::debug!(error = %e, "HTSP read failed");
            }
            break;
        }
        let len = match wire::frame_body_len(prefix) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "HTSP frame refused; closing connection");
                break;
            }
        };
        let mut body = vec![0u8; len];
        if let Err(e) = rd.read_exact(&mut body).await {
            tracing::debug!(error = %e, "HTSP read failed mid-frame");
            break;
        }
        let msg = match wire::decode_body(&body) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "invalid htsmsg frame; closing connection");
                break;
            }
        };
        if tx.send(msg).await.is_err() {
            break;
        }
    }
    closed.cancel();
}

async fn write_loop(mut wr: OwnedWriteHalf, shared: Arc<Shared>) {
    loop {
        let item = shared.queues.lock().pop();
        match item {
            Some(item) => {
                for chunk in &item.chunks {
                    if let Err(e) = wr.write_all(chunk).await {
                        tracing::debug!(error = %e, "HTSP write failed");
                        shared.closed.cancel();
                        return;
                    }
                }
                metrics::counter!("switchyard_htsp_bytes_sent_total").increment(item.len() as u64);
            }
            None => {
                tokio::select! {
                    _ = shared.wake.notified() => {}
                    _ = shared.closed.cancelled() => {
                        // Flush what is already queued (e.g. a last reply), briefly.
                        let deadline = tokio::time::sleep(Duration::from_millis(200));
                        tokio::pin!(deadline);
                        loop {
                            let Some(item) = shared.queues.lock().pop() else { break };
                            for chunk in &item.chunks {
                                tokio::select! {
                                    _ = &mut deadline => return,
                                    r = wr.write_all(chunk) => if r.is_err() { return },
                                }
                            }
                        }
                        let _ = wr.shutdown().await;
                        return;
                    }
                }
            }
        }
    }
}

/// How long a subscription may go without a `subscriptionStart` before the
/// client is told there is no data.
const NO_DATA_AFTER: Duration = Duration::from_secs(5);

async fn run_subscription(
    yard: Yard,
    p: SubscribeParams,
    shared: Arc<Shared>,
    converter: Arc<Mutex<StreamConverter>>,
    label: String,
    generation: u64,
) {
    let id = p.subscription_id;
    let push_msg = |m: &Msg| {
        let mut q = shared.queues.lock();
        if q.is_current(id, generation) {
            q.push_sub(id, m);
        }
        drop(q);
        shared.wake.notify_one();
    };
    let opts = ReaderOptions::frames(label)
        .with_max_bytes((p.queue_depth as usize).max(ReaderOptions::DEFAULT_MAX_BYTES));
    let mut reader = match yard.subscribe(p.channel_id, opts) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(subscription = id, error = %e, "HTSP subscription could not start");
            push_msg(
                &Msg::new()
                    .with("method", "subscriptionStatus")
                    .with("subscriptionId", id)
                    .with("status", "No source available")
                    .with("subscriptionError", "badSignal"),
            );
            return;
        }
    };
    let started_at = Instant::now();
    let mut told_no_data = false;
    let mut was_started = false;
    // The second of the last `signalStatus` (sent about once a second while
    // media flows, §8.4).
    let mut signal_sec: Option<u64> = None;
    loop {
        let ev = tokio::select! {
            ev = reader.recv() => ev,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                let started = converter.lock().started();
                if !started && !told_no_data && started_at.elapsed() >= NO_DATA_AFTER {
                    told_no_data = true;
                    let m = converter.lock().no_data_status();
                    push_msg(&m);
                }
                continue;
            }
        };
        let mut lost_signal = None;
        let outs = {
            let mut c = converter.lock();
            match ev {
                None => {
                    push_msg(
                        &Msg::new()
                            .with("method", "subscriptionStop")
                            .with("subscriptionId", id)
                            .with("status", "Source deleted"),
                    );
                    return;
                }
                Some(ReaderEvent::Program(prog)) => c.on_program(prog),
                Some(ReaderEvent::Frame(f)) => c.on_frame(&f),
                Some(ReaderEvent::SourceLost { reason }) => {
                    signal_sec = None;
                    lost_signal = Some(c.signal_status(false));
                    c.on_source_lost(&reason)
                }
                Some(ReaderEvent::SourceResumed) => c.on_source_resumed(),
                Some(ReaderEvent::Ts(_)) | Some(ReaderEvent::Overflow) => Vec::new(),
            }
        };
        if outs.is_empty() {
            continue;
        }
        let now_sec = shared.now_sec();
        let signal = {
            let c = converter.lock();
            (c.started() && signal_sec != Some(now_sec)).then(|| c.signal_status(true))
        };
        let mut q = shared.queues.lock();
        if !q.is_current(id, generation) {
            return;
        }
        if let Some(m) = &lost_signal {
            q.push_status(id, m);
        }
        for o in outs {
            match o {
                StreamOut::Msg(m) => {
                    let is_start = m.get_str("method").as_deref() == Some("subscriptionStart");
                    q.push_sub(id, &m);
                    if is_start && !was_started {
                        was_started = true;
                        q.push_sub(
                            id,
                            &Msg::new()
                                .with("method", "subscriptionStatus")
                                .with("subscriptionId", id),
                        );
                    }
                }
                StreamOut::Packet(pkt) => {
                    if let Err(e) = q.push_packet(id, pkt, now_sec) {
                        tracing::warn!(error = %e, "HTSP client stopped reading; closing connection");
                        shared.closed.cancel();
                        return;
                    }
                }
            }
        }
        if let Some(m) = signal {
            signal_sec = Some(now_sec);
            q.push_status(id, &m);
        }
        drop(q);
        shared.wake.notify_one();
    }
}

// ---------------------------------------------------------------- backend

struct YardBackend {
    yard: Yard,
    dvr: Option<Dvr>,
    access: Arc<Access>,
    tickets: Tickets,
    server_name: String,
}

fn no_dvr() -> DvrError {
    DvrError::Invalid("no recorder")
}

struct RecordingFile {
    file: std::fs::File,
}

impl FileHandle for RecordingFile {
    fn read(&mut self, offset: Option<u64>, size: usize) -> std::io::Result<Vec<u8>> {
        if let Some(o) = offset {
            self.file.seek(std::io::SeekFrom::Start(o))?;
        }
        let mut buf = Vec::with_capacity(size.min(1 << 20));
        (&mut self.file).take(size as u64).read_to_end(&mut buf)?;
        Ok(buf)
    }
    fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64> {
        self.file.seek(pos)
    }
    fn stat(&mut self) -> std::io::Result<(i64, i64)> {
        let m = self.file.metadata()?;
        let mtime = m
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs() as i64);
        Ok((m.len() as i64, mtime))
    }
}

impl Backend for YardBackend {
    fn server_name(&self) -> String {
        self.server_name.clone()
    }
    fn verify(&self, username: &str, proof: &dyn Fn(&str) -> bool) -> Option<Rights> {
        self.access.verify(username, proof)
    }
    fn channels(&self) -> Vec<Arc<ChannelInfo>> {
        self.yard.channels()
    }
    fn channel(&self, id: u32) -> Option<Arc<ChannelInfo>> {
        self.yard.channel(id)
    }
    fn tags(&self) -> Vec<Arc<Tag>> {
        self.yard.tags()
    }
    fn tag(&self, id: u32) -> Option<Arc<Tag>> {
        self.yard.tag(id)
    }
    fn events(&self, channel_id: u32, from: i64, to: i64) -> Vec<Arc<EpgEvent>> {
        self.yard.epg_events(channel_id, from, to)
    }
    fn event(&self, id: u32) -> Option<Arc<EpgEvent>> {
        self.yard.epg_event(id)
    }
    fn search(&self, title: &str) -> Vec<Arc<EpgEvent>> {
        self.yard.epg_search(title)
    }
    fn utc_offset_minutes(&self, now: i64) -> i32 {
        use chrono::{Offset, TimeZone};
        chrono::Local
            .timestamp_opt(now, 0)
            .single()
            .map_or(0, |t| t.offset().fix().local_minus_utc() / 60)
    }
    fn disk_space(&self) -> Option<DiskSpace> {
        let dir = self.dvr.as_ref().map_or_else(
            || self.yard.data_dir().to_owned(),
            |d| d.recordings_dir().to_owned(),
        );
        let (free, total) = fs_space(&dir)?;
        let used = self
            .dvr
            .as_ref()
            .map(|d| d.entries().iter().map(|e| e.file_size).sum())
            .unwrap_or(0);
        Some(DiskSpace { free, used, total })
    }
    fn create_ticket(&self, path: &str, rights: &Rights) -> String {
        self.tickets.create(path, rights)
    }
    fn dvr_entries(&self) -> Vec<DvrEntry> {
        self.dvr.as_ref().map(Dvr::entries).unwrap_or_default()
    }
    fn dvr_entry(&self, id: u32) -> Option<DvrEntry> {
        self.dvr.as_ref()?.entry(id)
    }
    fn autorecs(&self) -> Vec<Autorec> {
        self.dvr.as_ref().map(Dvr::autorecs).unwrap_or_default()
    }
    fn autorec(&self, id: &str) -> Option<Autorec> {
        self.dvr.as_ref()?.autorec(id)
    }
    fn timerecs(&self) -> Vec<Timerec> {
        self.dvr.as_ref().map(Dvr::timerecs).unwrap_or_default()
    }
    fn timerec(&self, id: &str) -> Option<Timerec> {
        self.dvr.as_ref()?.timerec(id)
    }
    fn add_dvr_entry(&self, new: NewEntry) -> Result<DvrEntry, DvrError> {
        self.dvr.as_ref().ok_or_else(no_dvr)?.add_entry(new)
    }
    fn update_dvr_entry(&self, id: u32, u: EntryUpdate) -> Result<DvrEntry, DvrError> {
        self.dvr
            .as_ref()
            .ok_or(DvrError::NotFound)?
            .update_entry(id, u)
    }
    fn stop_dvr_entry(&self, id: u32) -> Result<(), DvrError> {
        self.dvr.as_ref().ok_or(DvrError::NotFound)?.stop_entry(id)
    }
    fn cancel_dvr_entry(&self, id: u32) -> Result<(), DvrError> {
        self.dvr
            .as_ref()
            .ok_or(DvrError::NotFound)?
            .cancel_entry(id)
    }
    fn delete_dvr_entry(&self, id: u32) -> Result<(), DvrError> {
        self.dvr
            .as_ref()
            .ok_or(DvrError::NotFound)?
            .delete_entry(id)
    }
    fn add_autorec(&self, a: Autorec) -> Result<Autorec, DvrError> {
        self.dvr.as_ref().ok_or_else(no_dvr)?.add_autorec(a)
    }
    fn update_autorec(
        &self,
        id: &str,
        f: &mut dyn FnMut(&mut Autorec),
    ) -> Result<Autorec, DvrError> {
        self.dvr
            .as_ref()
            .ok_or(DvrError::NotFound)?
            .update_autorec(id, f)
    }
    fn delete_autorec(&self, id: &str) -> Result<(), DvrError> {
        self.dvr
            .as_ref()
            .ok_or(DvrError::NotFound)?
            .delete_autorec(id)
    }
    fn add_timerec(&self, t: Timerec) -> Result<Timerec, DvrError> {
        self.dvr.as_ref().ok_or_else(no_dvr)?.add_timerec(t)
    }
    fn update_timerec(
        &self,
        id: &str,
        f: &mut dyn FnMut(&mut Timerec),
    ) -> Result<Timerec, DvrError> {
        self.dvr
            .as_ref()
            .ok_or(DvrError::NotFound)?
            .update_timerec(id, f)
    }
    fn delete_timerec(&self, id: &str) -> Result<(), DvrError> {
        self.dvr
            .as_ref()
            .ok_or(DvrError::NotFound)?
            .delete_timerec(id)
    }
    fn cutpoints(&self, id: u32) -> Result<Option<Vec<Cutpoint>>, DvrError> {
        self.dvr.as_ref().ok_or(DvrError::NotFound)?.cutpoints(id)
    }
    fn mark_played(&self, id: u32, playcount: Option<u32>, playposition: Option<u32>) {
        if let Some(d) = &self.dvr
            && let Err(e) = d.mark_played(id, playcount, playposition)
        {
            tracing::debug!(id, error = %e, "could not record play count");
        }
    }
    fn open_recording(&self, id: u32) -> std::io::Result<Box<dyn FileHandle>> {
        let path = self
            .dvr
            .as_ref()
            .and_then(|d| d.file_path(id))
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))?;
        Ok(Box::new(RecordingFile {
            file: std::fs::File::open(path)?,
        }))
    }
}

/// Bytes the kernel may hold for a connection. Kept modest so that a client
/// that stops reading fills *our* queue, where the drop policy (§8.5) and
/// `queueStatus` see it, rather than hiding megabytes of stale video in
/// socket buffers.
const SEND_BUFFER: libc::c_int = 128 * 1024;

fn limit_send_buffer(stream: &tokio::net::TcpStream) {
    use std::os::fd::AsRawFd;
    let fd = stream.as_raw_fd();
    let v: libc::c_int = SEND_BUFFER;
    // SAFETY: `fd` is an open socket owned by `stream`; the option value is
    // a c_int of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        tracing::debug!("could not limit the socket send buffer");
    }
}

/// (free, total) bytes of the file system holding `dir`.
fn fs_space(dir: &std::path::Path) -> Option<(i64, i64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a writable statvfs.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return None;
    }
    let frsize = st.f_frsize as i64;
    Some((
        (st.f_bavail as i64).saturating_mul(frsize),
        (st.f_blocks as i64).saturating_mul(frsize),
    ))
}
