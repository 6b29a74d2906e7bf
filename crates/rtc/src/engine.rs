//! The body of one media worker: every str0m peer of the rooms pinned to it, the
//! routing of datagrams to peers, and the forwarding of frames from publishers to
//! subscribers.
//!
//! str0m's contract shapes this file: every mutation of an `Rtc` (input, write,
//! keyframe request, SDP change) is followed by a full drain of `poll_output`.
//! Draining one peer can produce work for others (a frame to forward, a keyframe
//! to ask for); that work is queued as an [`Action`] and run after the drain, so
//! no two peers are ever borrowed at once.

use std::collections::{HashMap, VecDeque};

/// The per-packet maps (peers by id, routes by source address): foldhash is
/// several times cheaper than SipHash on these short keys and still seeded
/// per process, so remote parties cannot aim collisions at it.
type FastMap<K, V> = foldhash::HashMap<K, V>;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use str0m::bwe::{Bitrate, BweKind};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::{Codec, CodecConfig, PayloadParams};
use str0m::media::{Direction, KeyframeRequestKind, MediaData, MediaKind, MediaTime, Mid, Pt, Rid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::VideoOrientation;
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};
use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::egress::Egress;
use crate::forward::{KeyframeLimiter, LossControl, Timeline, choose_encoding, upstream_remb};
use crate::worker::{Command, Directory};
use crate::{
    Config, Error, Kind, Layer, ParticipantRef, PeerEvent, PeerStats, PublishOptions, SfuEvent,
    StreamInfo, SubscribeOptions, TapFrame, TrackInfo,
};

/// A publication is announced when every track has media, or this long after the
/// first track's media (a camera that never starts must not hide the microphone).
const READY_GRACE: Duration = Duration::from_millis(1000);
const HOUSEKEEPING: Duration = Duration::from_millis(100);
/// Fast start (as Galène): a joining subscriber is sent the frames since the last
/// keyframe at once, instead of waiting for a new keyframe, when that keyframe is
/// this recent. Beyond it the catch-up burst would be worse than the wait.
const FAST_START_FRAMES: usize = 15;
const FAST_START_BYTES: usize = 64 * 1024;
/// A down track still waiting for the keyframe it asked for (layer switch, join,
/// resume) asks again after this long. Publishers drop requests as they please:
/// libwebrtc ignores any that arrive within 300 ms of the last one it honoured,
/// for whichever encoding, so a switch asked for right after a join or another
/// switch would otherwise wait for the next periodic keyframe, which a browser
/// never sends.
const KEYFRAME_RETRY_MIN: Duration = Duration::from_millis(400);

/// A frame as forwarding needs it, from a live `MediaData` or from the cache.
#[derive(Clone)]
struct Frame {
    mid: Mid,
    rid: Option<Rid>,
    time: MediaTime,
    network_time: Instant,
    /// When str0m handed the frame over: its last packet has just been read.
    /// (`network_time` is the first packet's arrival, which includes how the
    /// publisher spread the frame out.)
    completed: Instant,
    data: Arc<[u8]>,
    keyframe: bool,
    orientation: Option<VideoOrientation>,
    audio_level: Option<(i8, bool)>,
}

impl Frame {
    fn of(d: &MediaData) -> Frame {
        Frame {
            mid: d.mid,
            rid: d.rid,
            time: d.time,
            network_time: d.network_time,
            completed: Instant::now(),
            data: d.data.clone(),
            keyframe: d.is_keyframe(),
            orientation: d.ext_vals.video_orientation,
            audio_level: d.ext_vals.audio_level.zip(d.ext_vals.voice_activity),
        }
    }
}

struct Packet {
    socket: usize,
    source: SocketAddr,
    data: Vec<u8>,
}

enum Action {
    Forward {
        from: String,
        frame: Box<Frame>,
    },
    Keyframe {
        publisher: String,
        mid: Mid,
        rid: Option<Rid>,
    },
    SubscriberConnected {
        id: String,
    },
    End {
        id: String,
        failed: bool,
        reason: String,
    },
}

struct Peer {
    room: String,
    rtc: Rtc,
    timeout: Instant,
    created: Instant,
    connected: bool,
    events: mpsc::UnboundedSender<PeerEvent>,
    role: Role,
    pending_offer: Option<SdpPendingOffer>,
    stats: PeerStats,
    last_bytes: Option<(Instant, u64, u64)>,
}

enum Role {
    Publisher(Box<Publisher>),
    Subscriber(Box<Subscriber>),
}

struct Publisher {
    owner: ParticipantRef,
    label: String,
    tracks: Vec<UpTrack>,
    ready: bool,
    announced_tracks: usize,
    first_media: Option<Instant>,
    subscribers: Vec<String>,
    taps: Vec<mpsc::Sender<TapFrame>>,
    audio_paused: bool,
    video_paused: bool,
    /// The publisher's offer asks for `goog-remb` feedback. str0m answers
    /// with it for video whatever was offered, so this is read from the
    /// offer itself: only a client that offered it understands a REMB.
    remb: bool,
}

struct UpTrack {
    mid: Mid,
    kind: Kind,
    rids: Vec<String>,
    params: Option<PayloadParams>,
    limiters: HashMap<Option<Rid>, KeyframeLimiter>,
    /// Bytes received per encoding in the current second, and the last full
    /// second's rate in bits per second (indexed like `rids`, or [0] without).
    bytes: Vec<u64>,
    rates: Vec<u64>,
    /// Per encoding: the frames since the last keyframe while fast start is
    /// still possible (see `FAST_START_FRAMES`), else empty.
    gop: Vec<Vec<Frame>>,
}

struct Subscriber {
    layer: Layer,
    tracks: Vec<DownTrack>,
    /// str0m's TWCC estimate toward the subscriber (simulcast subscriptions).
    twcc: Option<u64>,
    /// The subscriber's last REMB: the most it says it can take.
    remb: Option<u64>,
    /// Galène-style rate control from the loss the receiver reports.
    loss: LossControl,
}

impl Subscriber {
    /// What the layer choice may spend. A REMB is the receiver's explicit cap
    /// and bounds every layer choice but a named one; the TWCC estimate only
    /// drives [`Layer::Auto`], where the subscriber asked to follow it.
    fn allowance(&self) -> Option<u64> {
        let lowest = |caps: &[Option<u64>]| caps.iter().flatten().copied().min();
        match self.layer {
            Layer::Auto => lowest(&[self.twcc, self.remb, self.loss.cap()]),
            Layer::High => lowest(&[self.remb, self.loss.cap()]),
            Layer::Low | Layer::Rid(_) => None,
        }
    }
}

struct DownTrack {
    kind: Kind,
    source: String,
    source_mid: Mid,
    /// Our m-line; known at once when we offer, after `MediaAdded` when the
    /// client offers.
    mid: Option<Mid>,
    codec: Codec,
    pt: Option<Pt>,
    rids: Vec<String>,
    current: Option<usize>,
    target: usize,
    need_keyframe: bool,
    /// When a keyframe was last asked for on this track's behalf.
    asked: Option<Instant>,
    timeline: Timeline,
    paused: bool,
}

impl DownTrack {
    /// Waiting for a keyframe: to start, to resume, or to complete a switch.
    fn waiting(&self) -> bool {
        self.kind == Kind::Video && (self.need_keyframe || self.current != Some(self.target))
    }
}

pub(crate) struct Engine {
    index: usize,
    config: Config,
    local_addrs: Vec<SocketAddr>,
    egress: Egress,
    directory: Arc<Directory>,
    events: broadcast::Sender<SfuEvent>,
    load: Arc<AtomicUsize>,
    peers: FastMap<String, Peer>,
    routes: FastMap<SocketAddr, String>,
    actions: VecDeque<Action>,
    last_second: Instant,
}

impl Engine {
    pub(crate) fn new(
        index: usize,
        config: Config,
        sockets: Vec<Arc<UdpSocket>>,
        local_addrs: Vec<SocketAddr>,
        directory: Arc<Directory>,
        events: broadcast::Sender<SfuEvent>,
        load: Arc<AtomicUsize>,
    ) -> Self {
        Engine {
            index,
            config,
            egress: Egress::new(sockets, local_addrs.clone()),
            local_addrs,
            directory,
            events,
            load,
            peers: FastMap::default(),
            routes: FastMap::default(),
            actions: VecDeque::new(),
            last_second: Instant::now(),
        }
    }

    pub(crate) async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        shutdown: CancellationToken,
    ) {
        let (ptx, mut packets) = mpsc::channel::<Packet>(4096);
        let readers = CancellationToken::new();
        for (i, sock) in self.egress.sockets().iter().enumerate() {
            tokio::spawn(read_socket(i, sock.clone(), ptx.clone(), readers.clone()));
        }
        drop(ptx);
        let mut tick = tokio::time::interval(HOUSEKEEPING);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next = self.next_timeout();
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                cmd = commands.recv() => match cmd {
                    Some(cmd) => self.command(cmd),
                    None => break,
                },
                pkt = packets.recv() => {
                    let Some(pkt) = pkt else { break };
                    self.packet(pkt);
                    // Take what is already queued before looking at timers again.
                    for _ in 0..256 {
                        match packets.try_recv() {
                            Ok(p) => self.packet(p),
                            Err(_) => break,
                        }
                    }
                }
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(next)) => {
                    self.timeouts(Instant::now());
                }
                _ = tick.tick() => self.housekeeping(Instant::now()),
            }
            // Whatever this turn produced leaves before the worker waits again.
            self.egress.flush();
        }
        readers.cancel();
        let ids: Vec<String> = self.peers.keys().cloned().collect();
        for id in ids {
            self.end_peer(&id, false, "shutdown");
        }
        self.egress.flush();
    }

    fn next_timeout(&self) -> Instant {
        let cap = Instant::now() + HOUSEKEEPING;
        self.peers
            .values()
            .map(|p| p.timeout)
            .min()
            .map_or(cap, |t| t.min(cap))
    }

    // ---- input ------------------------------------------------------------

    fn packet(&mut self, pkt: Packet) {
        let now = Instant::now();
        let Some(destination) = self.local_addrs.get(pkt.socket).copied() else {
            return;
        };
        let Ok(contents) = pkt.data.as_slice().try_into() else {
            return;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source: pkt.source,
                destination,
                contents,
            },
        );
        let routed = self
            .routes
            .get(&pkt.source)
            .filter(|id| self.peers.get(*id).is_some_and(|p| p.rtc.accepts(&input)))
            .cloned();
        let id = match routed {
            Some(id) => id,
            None => {
                let found = self
                    .peers
                    .iter()
                    .find(|(_, p)| p.rtc.accepts(&input))
                    .map(|(id, _)| id.clone());
                match found {
                    Some(id) => {
                        self.routes.insert(pkt.source, id.clone());
                        id
                    }
                    None => {
                        metrics::counter!("switchyard_rtc_unrouted_datagrams_total").increment(1);
                        return;
                    }
                }
            }
        };
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if let Err(e) = peer.rtc.handle_input(input) {
            tracing::debug!(peer = %id, "input rejected: {e}");
            self.actions.push_back(Action::End {
                id: id.clone(),
                failed: true,
                reason: format!("media error: {e}"),
            });
        }
        self.drain(&id);
        self.run_actions(now);
    }

    fn timeouts(&mut self, now: Instant) {
        // Split borrows instead of collecting the due ids: this runs on every
        // wake-up and cloning each id was an allocation per peer per wake-up.
        let Engine {
            peers,
            egress,
            actions,
            events,
            directory,
            ..
        } = self;
        for (id, peer) in peers.iter_mut() {
            if peer.timeout > now {
                continue;
            }
            if let Err(e) = peer.rtc.handle_input(Input::Timeout(now)) {
                actions.push_back(Action::End {
                    id: id.clone(),
                    failed: true,
                    reason: format!("media error: {e}"),
                });
            }
            drain_peer(id, peer, egress, actions, events, directory);
        }
        self.run_actions(now);
    }

    // ---- output -----------------------------------------------------------

    /// Drains one peer's output until str0m hands back a timeout, sending
    /// datagrams and turning events into state changes or queued actions.
    fn drain(&mut self, id: &str) {
        let Some(peer) = self.peers.get_mut(id) else {
            return;
        };
        drain_peer(
            id,
            peer,
            &mut self.egress,
            &mut self.actions,
            &self.events,
            &self.directory,
        );
    }

    fn run_actions(&mut self, now: Instant) {
        // Bounded: each action is produced by a drain that consumed input, so the
        // queue empties; the cap is a guard against a logic loop.
        for _ in 0..100_000 {
            let Some(action) = self.actions.pop_front() else {
                return;
            };
            match action {
                Action::Forward { from, frame } => self.forward(&from, &frame, now),
                Action::Keyframe {
                    publisher,
                    mid,
                    rid,
                } => self.keyframe(&publisher, mid, rid, now, false),
                Action::SubscriberConnected { id } => self.subscriber_connected(&id, now),
                Action::End { id, failed, reason } => self.end_peer(&id, failed, &reason),
            }
        }
        tracing::error!(worker = self.index, "action queue did not empty; dropping");
        self.actions.clear();
    }

    // ---- forwarding -------------------------------------------------------

    fn forward(&mut self, from: &str, data: &Frame, now: Instant) {
        // Later than the caller's `now` when earlier frames took a while; str0m
        // wants time that never goes backwards per peer.
        let now = now.max(Instant::now());
        let subs = match self.peers.get_mut(from).map(|p| &mut p.role) {
            Some(Role::Publisher(p)) => std::mem::take(&mut p.subscribers),
            _ => return,
        };
        let mut written = 0u64;
        let mut kind = Kind::Audio;
        for sid in &subs {
            let Some(peer) = self.peers.get_mut(sid) else {
                continue;
            };
            if let Some(k) = write_frame(peer, from, data) {
                written += 1;
                kind = k;
                // str0m packetises written media on its next timeout. Doing that
                // now sends the frame before the next subscriber's, instead of one
                // more trip through the event loop and its timer scan for all.
                if let Err(e) = peer.rtc.handle_input(Input::Timeout(now)) {
                    self.actions.push_back(Action::End {
                        id: sid.clone(),
                        failed: true,
                        reason: format!("media error: {e}"),
                    });
                }
                self.drain(sid);
                if k == Kind::Video {
                    self.directory
                        .forward_delay
                        .record(Instant::now().saturating_duration_since(data.completed));
                }
            }
        }
        if written > 0 {
            // One registry lookup per frame, not one per subscriber.
            metrics::counter!("switchyard_rtc_forwarded_frames_total", "kind" => kind.as_str())
                .increment(written);
        }
        if let Some(Role::Publisher(p)) = self.peers.get_mut(from).map(|p| &mut p.role) {
            // Subscribers added while we forwarded were pushed onto the empty list.
            let added = std::mem::replace(&mut p.subscribers, subs);
            p.subscribers.extend(added);
        }
    }

    /// Asks a publisher for a keyframe on one encoding, at most once per
    /// `keyframe_interval_ms` (later requests are deferred, not lost).
    fn keyframe(&mut self, publisher: &str, mid: Mid, rid: Option<Rid>, now: Instant, due: bool) {
        let interval = Duration::from_millis(self.config.keyframe_interval_ms);
        let Some(peer) = self.peers.get_mut(publisher) else {
            return;
        };
        let Role::Publisher(p) = &mut peer.role else {
            return;
        };
        let Some(track) = p.tracks.iter_mut().find(|t| t.mid == mid) else {
            return;
        };
        if track.kind != Kind::Video {
            return;
        }
        let limiter = track
            .limiters
            .entry(rid)
            .or_insert_with(|| KeyframeLimiter::new(interval));
        if !due && !limiter.request(now) {
            return;
        }
        let Some(mut writer) = peer.rtc.writer(mid) else {
            return;
        };
        let kind = if writer.is_request_keyframe_possible(KeyframeRequestKind::Pli) {
            KeyframeRequestKind::Pli
        } else if writer.is_request_keyframe_possible(KeyframeRequestKind::Fir) {
            KeyframeRequestKind::Fir
        } else {
            return;
        };
        if writer.request_keyframe(rid, kind).is_ok() {
            peer.stats.keyframe_requests = peer.stats.keyframe_requests.saturating_add(1);
            metrics::counter!("switchyard_rtc_keyframe_requests_total").increment(1);
        }
        self.drain(publisher);
    }

    fn subscriber_connected(&mut self, id: &str, now: Instant) {
        let wanted: Vec<(String, Mid, usize, Option<Rid>)> = match self.peers.get_mut(id) {
            Some(Peer {
                role: Role::Subscriber(s),
                ..
            }) => s
                .tracks
                .iter_mut()
                .filter(|t| t.kind == Kind::Video)
                .map(|t| {
                    t.need_keyframe = true;
                    t.asked = Some(now);
                    let rid = rid_of(&t.rids, t.target);
                    (t.source.clone(), t.source_mid, t.target, rid)
                })
                .collect(),
            _ => return,
        };
        for (source, mid, enc, rid) in wanted {
            let cached: Vec<Frame> = match self.peers.get(&source).map(|p| &p.role) {
                Some(Role::Publisher(p)) => p
                    .tracks
                    .iter()
                    .find(|t| t.mid == mid)
                    .and_then(|t| t.gop.get(enc))
                    .cloned()
                    .unwrap_or_default(),
                _ => Vec::new(),
            };
            if cached.is_empty() {
                self.keyframe(&source, mid, rid, now, false);
                continue;
            }
            for f in &cached {
                let Some(peer) = self.peers.get_mut(id) else {
                    return;
                };
                write_frame(peer, &source, f);
                // Each write is a mutation: drain before the next.
                self.drain(id);
            }
            metrics::counter!("switchyard_rtc_fast_starts_total").increment(1);
        }
    }

    // ---- lifecycle --------------------------------------------------------

    fn end_peer(&mut self, id: &str, failed: bool, reason: &str) {
        let Some(mut peer) = self.peers.remove(id) else {
            return;
        };
        peer.rtc.disconnect();
        // Let str0m say goodbye (DTLS close) if it has something to send.
        for _ in 0..16 {
            match peer.rtc.poll_output() {
                Ok(Output::Transmit(t)) => self.egress.send(t.source, t.destination, &t.contents),
                Ok(Output::Event(_)) => {}
                _ => break,
            }
        }
        self.routes.retain(|_, v| v != id);
        self.directory.release(id);
        // The exporter keeps series it has seen; zero them so a departed peer does
        // not look like a live one in dashboards.
        let role = match peer.role {
            Role::Publisher(_) => "publication",
            Role::Subscriber(_) => "subscription",
        };
        let labels = [
            ("room", peer.room.clone()),
            ("peer", id.to_string()),
            ("role", role.to_string()),
        ];
        for name in [
            "switchyard_rtc_peer_bitrate_in_bps",
            "switchyard_rtc_peer_bitrate_out_bps",
            "switchyard_rtc_peer_loss_ratio",
            "switchyard_rtc_peer_rtt_seconds",
        ] {
            metrics::gauge!(name, &labels).set(0.0);
        }
        self.load.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!("switchyard_rtc_peers").decrement(1.0);
        let ev = if failed {
            PeerEvent::Failed(reason.to_string())
        } else {
            PeerEvent::Closed(reason.to_string())
        };
        let _ = peer.events.send(ev);
        if failed {
            let _ = self.events.send(SfuEvent::PeerFailed {
                room: peer.room.clone(),
                id: id.to_string(),
                reason: reason.to_string(),
            });
        }
        tracing::info!(peer = %id, room = %peer.room, failed, "peer ended: {reason}");
        match peer.role {
            Role::Publisher(p) => {
                if p.ready {
                    self.directory.remove_stream(&peer.room, id);
                    let _ = self.events.send(SfuEvent::StreamRemoved {
                        room: peer.room.clone(),
                        id: id.to_string(),
                    });
                }
                for sid in p.subscribers {
                    self.end_peer(&sid, true, "source stream loss");
                }
            }
            Role::Subscriber(s) => {
                for t in &s.tracks {
                    if let Some(Peer {
                        role: Role::Publisher(p),
                        ..
                    }) = self.peers.get_mut(&t.source)
                    {
                        p.subscribers.retain(|x| x != id);
                    }
                }
            }
        }
    }

    fn housekeeping(&mut self, now: Instant) {
        // Deferred keyframe requests that are now due.
        let mut due = Vec::new();
        for (id, peer) in &mut self.peers {
            if let Role::Publisher(p) = &mut peer.role {
                for t in &mut p.tracks {
                    for (rid, l) in &mut t.limiters {
                        if l.poll(now) {
                            due.push((id.clone(), t.mid, *rid));
                        }
                    }
                }
            }
        }
        for (id, mid, rid) in due {
            self.keyframe(&id, mid, rid, now, true);
        }
        self.retry_keyframes(now);

        let connect_timeout = Duration::from_secs(self.config.connect_timeout_s);
        let mut timed_out = Vec::new();
        let mut became_ready = Vec::new();
        for (id, peer) in &mut self.peers {
            if !peer.connected && now.saturating_duration_since(peer.created) > connect_timeout {
                timed_out.push(id.clone());
            }
            if let Role::Publisher(p) = &mut peer.role {
                let with_media = p.tracks.iter().filter(|t| t.params.is_some()).count();
                let all = with_media == p.tracks.len() && with_media > 0;
                let grace = p
                    .first_media
                    .is_some_and(|t| now.saturating_duration_since(t) >= READY_GRACE);
                if (!p.ready && (all || grace)) || (p.ready && with_media > p.announced_tracks) {
                    became_ready.push(id.clone());
                }
            }
        }
        for id in timed_out {
            self.end_peer(&id, true, "ICE/DTLS connection timed out");
        }
        for id in became_ready {
            self.announce(&id);
        }

        if now.saturating_duration_since(self.last_second) >= Duration::from_secs(1) {
            let secs = now
                .saturating_duration_since(self.last_second)
                .as_secs_f64();
            self.last_second = now;
            self.each_second(secs, now);
        }
        self.run_actions(now);
    }

    /// Asks again for the keyframes that down tracks have waited for too long.
    fn retry_keyframes(&mut self, now: Instant) {
        let retry = Duration::from_millis(self.config.keyframe_interval_ms).max(KEYFRAME_RETRY_MIN);
        let mut wanted = Vec::new();
        for peer in self.peers.values_mut() {
            let Role::Subscriber(s) = &mut peer.role else {
                continue;
            };
            if !peer.connected {
                continue;
            }
            for t in s.tracks.iter_mut().filter(|t| t.waiting() && !t.paused) {
                if t.asked
                    .is_some_and(|a| now.saturating_duration_since(a) < retry)
                {
                    continue;
                }
                t.asked = Some(now);
                let w = (t.source.clone(), t.source_mid, rid_of(&t.rids, t.target));
                if !wanted.contains(&w) {
                    wanted.push(w);
                }
            }
        }
        for (source, mid, rid) in wanted {
            let paused = match self.peers.get(&source).map(|p| &p.role) {
                Some(Role::Publisher(p)) => p.video_paused,
                _ => true,
            };
            if !paused {
                metrics::counter!("switchyard_rtc_keyframe_retries_total").increment(1);
                self.keyframe(&source, mid, rid, now, false);
            }
        }
    }

    /// The last measured rates of a publisher track's encodings.
    fn up_rates(&self, source: &str, mid: Mid) -> Vec<u64> {
        match self.peers.get(source).map(|p| &p.role) {
            Some(Role::Publisher(p)) => p
                .tracks
                .iter()
                .find(|t| t.mid == mid)
                .map(|t| t.rates.clone())
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    fn announce(&mut self, id: &str) {
        let Some(peer) = self.peers.get_mut(id) else {
            return;
        };
        let Role::Publisher(p) = &mut peer.role else {
            return;
        };
        let info = stream_info(id, &peer.room, p);
        p.announced_tracks = info.tracks.len();
        let first = !p.ready;
        p.ready = true;
        self.directory.put_stream(info.clone());
        let room = peer.room.clone();
        if first {
            let _ = peer.events.send(PeerEvent::Ready);
            let _ = self
                .events
                .send(SfuEvent::StreamAdded { room, stream: info });
        } else {
            let _ = self
                .events
                .send(SfuEvent::StreamUpdated { room, stream: info });
        }
    }

    fn each_second(&mut self, secs: f64, now: Instant) {
        let secs = secs.max(0.001);
        // Rates of every publisher encoding, for automatic layer choice.
        let mut rates: HashMap<(String, Mid), Vec<u64>> = HashMap::new();
        for (id, peer) in &mut self.peers {
            if let Role::Publisher(p) = &mut peer.role {
                for t in &mut p.tracks {
                    t.rates = t
                        .bytes
                        .iter()
                        .map(|b| ((*b as f64) * 8.0 / secs) as u64)
                        .collect();
                    t.bytes.iter_mut().for_each(|b| *b = 0);
                    rates.insert((id.clone(), t.mid), t.rates.clone());
                }
            }
        }
        let mut switches = Vec::new();
        // Allowances of the receivers of each publisher encoding
        // (publisher, mid, encoding index), for the upstream REMB.
        let mut receivers: HashMap<(String, Mid, usize), Vec<Option<u64>>> = HashMap::new();
        for (id, peer) in &mut self.peers {
            let role = match &peer.role {
                Role::Publisher(_) => "publication",
                Role::Subscriber(_) => "subscription",
            };
            let labels = [
                ("room", peer.room.clone()),
                ("peer", id.clone()),
                ("role", role.to_string()),
            ];
            metrics::gauge!("switchyard_rtc_peer_bitrate_in_bps", &labels)
                .set(peer.stats.bitrate_in as f64);
            metrics::gauge!("switchyard_rtc_peer_bitrate_out_bps", &labels)
                .set(peer.stats.bitrate_out as f64);
            metrics::gauge!("switchyard_rtc_peer_loss_ratio", &labels)
                .set(f64::from(peer.stats.loss));
            if let Some(rtt) = peer.stats.rtt_ms {
                metrics::gauge!("switchyard_rtc_peer_rtt_seconds", &labels)
                    .set(f64::from(rtt) / 1000.0);
            }
            // Publications' statistics are published below, with their REMB.
            let Role::Subscriber(s) = &mut peer.role else {
                continue;
            };
            let mut layer_name = None;
            let mut desired = 0u64;
            let sending = s
                .tracks
                .iter()
                .filter(|t| t.kind == Kind::Video)
                .filter_map(|t| {
                    let r = rates.get(&(t.source.clone(), t.source_mid))?;
                    r.get(t.current?).copied()
                })
                .max()
                .unwrap_or(peer.stats.bitrate_out);
            s.loss.second(peer.stats.loss, sending);
            let allowance = s.allowance();
            for t in s
                .tracks
                .iter()
                .filter(|t| t.kind == Kind::Video && !t.paused)
            {
                if let Some(e) = t.current {
                    receivers
                        .entry((t.source.clone(), t.source_mid, e))
                        .or_default()
                        .push(allowance);
                }
            }
            for t in &mut s.tracks {
                if t.kind != Kind::Video {
                    continue;
                }
                let r = rates
                    .get(&(t.source.clone(), t.source_mid))
                    .cloned()
                    .unwrap_or_default();
                desired = desired.max(r.first().copied().unwrap_or(0));
                if !t.rids.is_empty() {
                    let want = choose_encoding(&s.layer, &t.rids, &r, t.current, allowance);
                    if want != t.target {
                        t.target = want;
                        t.asked = Some(now);
                        switches.push((t.source.clone(), t.source_mid, rid_of(&t.rids, want)));
                    }
                    layer_name = t.current.and_then(|c| t.rids.get(c).cloned());
                }
            }
            peer.stats.layer = layer_name;
            if desired > 0 {
                // Let the estimator probe toward the best encoding with headroom.
                let want = desired.saturating_add(desired / 4).max(300_000);
                peer.rtc
                    .bwe()
                    .set_bitrate(Bitrate::kbps(100), Bitrate::bps(want));
            }
            self.directory.put_stats(id, peer.stats.clone());
        }
        for (id, peer) in &mut self.peers {
            let Peer {
                role, rtc, stats, ..
            } = peer;
            if let Role::Publisher(p) = role {
                stats.upstream_remb = send_upstream_remb(id, rtc, p, &receivers);
                self.directory.put_stats(id, stats.clone());
            }
        }
        for (source, mid, rid) in switches {
            self.keyframe(&source, mid, rid, now, false);
        }
        let ids: Vec<String> = self.peers.keys().cloned().collect();
        for id in ids {
            self.drain(&id);
        }
    }

    // ---- commands ---------------------------------------------------------

    fn command(&mut self, cmd: Command) {
        let now = Instant::now();
        match cmd {
            Command::Publish {
                room,
                id,
                owner,
                offer_sdp,
                opts,
                events,
                reply,
            } => {
                let r = self.publish(now, room, id, owner, &offer_sdp, opts, events);
                let _ = reply.send(r);
            }
            Command::Subscribe {
                room,
                id,
                subscriber,
                offer_sdp,
                opts,
                events,
                reply,
            } => {
                let _ = subscriber;
                let r = self.subscribe(now, room, id, offer_sdp.as_deref(), opts, events);
                let _ = reply.send(r);
            }
            Command::Answer { id, sdp, reply } => {
                let _ = reply.send(self.answer(&id, &sdp));
            }
            Command::Offer { id, sdp, reply } => {
                let _ = reply.send(self.reoffer(&id, &sdp));
            }
            Command::Candidate { id, line, reply } => {
                let _ = reply.send(self.candidate(&id, &line));
            }
            Command::IceRestart { id, reply } => {
                let _ = reply.send(self.ice_restart(&id));
            }
            Command::Close { id, reply } => {
                self.end_peer(&id, false, "closed");
                let _ = reply.send(Ok(()));
            }
            Command::SetLayer { id, layer, reply } => {
                let _ = reply.send(self.set_layer(&id, layer, now));
            }
            Command::Pause {
                id,
                kind,
                paused,
                reply,
            } => {
                let _ = reply.send(self.pause(&id, kind, paused, now));
            }
            Command::SwitchSource {
                id,
                kind,
                from,
                reply,
            } => {
                let _ = reply.send(self.switch_source(&id, kind, &from, now));
            }
            Command::Tap { id, sink, reply } => {
                let _ = reply.send(self.tap(&id, sink, now));
            }
        }
        self.run_actions(now);
    }

    /// `bwe`: a sending peer whose rate we choose (simulcast subscriptions)
    /// runs send-side bandwidth estimation, which needs transport-wide
    /// sequence numbers on every packet and the receiver's feedback on them.
    /// Other subscriptions leave transport-cc out of the offer, as Galène
    /// does: the receiver then reports REMB (from abs-send-time), which with
    /// the loss reports is all a single-encoding stream's rate control uses,
    /// and the per-packet registry and the receiver's feedback every ~100 ms
    /// (a third of a subscriber's incoming packets) are not paid for.
    fn new_rtc(&self, now: Instant, codecs: CodecConfig, bwe: bool, twcc: bool) -> Rtc {
        let mut cfg = RtcConfig::new()
            .set_ice_lite(true)
            .set_stats_interval(Some(Duration::from_secs(1)))
            // Datagrams of up to 1200 bytes, as Chrome sends them (str0m's
            // default 1150 would cut a forwarded frame into more packets than
            // the publisher sent); still below IPv6's minimum link MTU.
            .set_mtu(1200..=str0m::DATAGRAM_MTU_WARN)
            // Sent video kept for retransmission: ~3 s at 1.5 Mbit/s, more than
            // a NACK needs at any usable round-trip time and still larger than
            // a big keyframe. str0m's default (1000) held ~1.2 MB per video
            // down track and was still filling, page by page, minutes in.
            .set_send_buffer_video(512);
        *cfg.codec_config() = codecs;
        if bwe {
            cfg = cfg.enable_bwe(Some(Bitrate::kbps(3000)));
        }
        if !twcc {
            let mut exts = str0m::rtp::ExtensionMap::empty();
            for (id, ext) in str0m::rtp::ExtensionMap::standard().iter() {
                if *ext != str0m::rtp::Extension::TransportSequenceNumber {
                    exts.set(id, ext.clone());
                }
            }
            cfg = cfg.set_extension_map(exts);
        }
        let mut rtc = cfg.build(now);
        for addr in &self.local_addrs {
            match Candidate::host(*addr, "udp") {
                Ok(c) => {
                    rtc.add_local_candidate(c);
                }
                Err(e) => tracing::warn!("unusable host address {addr}: {e}"),
            }
            for public in &self.config.public_addresses {
                if public.is_ipv4() != addr.is_ipv4() {
                    continue;
                }
                let pa = SocketAddr::new(*public, addr.port());
                if let Ok(c) = Candidate::server_reflexive(pa, *addr, "udp") {
                    rtc.add_local_candidate(c);
                }
            }
        }
        rtc
    }

    fn insert_peer(&mut self, id: String, peer: Peer) {
        self.load.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!("switchyard_rtc_peers").increment(1.0);
        // Live peers always have statistics, zero until the first report.
        self.directory.put_stats(&id, PeerStats::default());
        self.peers.insert(id, peer);
    }

    #[allow(clippy::too_many_arguments)]
    fn publish(
        &mut self,
        now: Instant,
        room: String,
        id: String,
        owner: ParticipantRef,
        offer_sdp: &str,
        opts: PublishOptions,
        events: mpsc::UnboundedSender<PeerEvent>,
    ) -> Result<String, Error> {
        let allowed = allowed_codecs(&self.config.codecs, &opts.codecs);
        let offer = SdpOffer::from_sdp_string(offer_sdp).map_err(|e| Error::Sdp(e.to_string()))?;
        let mut rtc = self.new_rtc(now, publish_codecs(&allowed), false, true);
        let answer = rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| Error::Sdp(e.to_string()))?;
        let answer = answer.to_sdp_string();
        if !answer_has_codec(&answer) {
            return Err(Error::NoCodec);
        }
        let peer = Peer {
            room,
            rtc,
            timeout: now,
            created: now,
            connected: false,
            events,
            role: Role::Publisher(Box::new(Publisher {
                owner,
                label: opts.label,
                tracks: Vec::new(),
                ready: false,
                announced_tracks: 0,
                first_media: None,
                subscribers: Vec::new(),
                taps: Vec::new(),
                audio_paused: false,
                video_paused: false,
                remb: offers_remb(offer_sdp),
            })),
            pending_offer: None,
            stats: PeerStats::default(),
            last_bytes: None,
        };
        tracing::info!(peer = %id, room = %peer.room, "publication created");
        self.insert_peer(id.clone(), peer);
        self.drain(&id);
        Ok(answer)
    }

    fn subscribe(
        &mut self,
        now: Instant,
        room: String,
        id: String,
        offer_sdp: Option<&str>,
        opts: SubscribeOptions,
        events: mpsc::UnboundedSender<PeerEvent>,
    ) -> Result<(String, String), Error> {
        let mut tracks = Vec::new();
        let mut params = Vec::new();
        let mut msid = None;
        for (kind, from) in [
            (Kind::Audio, &opts.audio_from),
            (Kind::Video, &opts.video_from),
        ] {
            let Some(from) = from else { continue };
            let src = match self.peers.get(from) {
                Some(Peer {
                    role: Role::Publisher(p),
                    room: r,
                    ..
                }) if *r == room && p.ready => p,
                _ => return Err(Error::NoSuchStream(from.clone())),
            };
            let up = src
                .tracks
                .iter()
                .find(|t| t.kind == kind && t.params.is_some())
                .ok_or_else(|| Error::NoSuchTrack(from.clone(), kind.as_str()))?;
            let Some(up_params) = up.params else {
                return Err(Error::NoSuchTrack(from.clone(), kind.as_str()));
            };
            let spec = up_params.spec();
            if !opts.codecs.is_empty()
                && !opts
                    .codecs
                    .iter()
                    .any(|c| c.eq_ignore_ascii_case(codec_name(spec.codec)))
            {
                return Err(Error::NoCodec);
            }
            let (pt, rtx) = down_payload_types(spec.codec);
            params.push(PayloadParams::new(pt.into(), rtx.map(Into::into), spec));
            msid.get_or_insert_with(|| from.clone());
            let target = choose_encoding(&opts.layer, &up.rids, &up.rates, None, None);
            tracks.push(DownTrack {
                kind,
                source: from.clone(),
                source_mid: up.mid,
                mid: None,
                codec: spec.codec,
                pt: None,
                rids: up.rids.clone(),
                current: None,
                target,
                need_keyframe: kind == Kind::Video,
                asked: None,
                timeline: Timeline::default(),
                paused: false,
            });
        }
        if tracks.is_empty() {
            return Err(Error::NoSuchStream(String::new()));
        }
        let msid = msid.unwrap_or_else(|| id.clone());
        // Bandwidth estimation paces sending to its estimate, which only pays off
        // when there is a lower encoding to fall back to; single-encoding streams
        // are forwarded unpaced for the lowest delay.
        let simulcast = tracks
            .iter()
            .any(|t| t.kind == Kind::Video && t.rids.len() > 1);
        let mut rtc = self.new_rtc(
            now,
            CodecConfig::new_from_payload_params(params),
            simulcast,
            simulcast,
        );
        let mut pending_offer = None;
        let sdp = match offer_sdp {
            Some(offer) => {
                let offer =
                    SdpOffer::from_sdp_string(offer).map_err(|e| Error::Sdp(e.to_string()))?;
                let answer = rtc
                    .sdp_api()
                    .accept_offer(offer)
                    .map_err(|e| Error::Sdp(e.to_string()))?
                    .to_sdp_string();
                if !answer_has_codec(&answer) {
                    return Err(Error::NoCodec);
                }
                answer
            }
            None => {
                let mut api = rtc.sdp_api();
                for t in &mut tracks {
                    let kind = match t.kind {
                        Kind::Audio => MediaKind::Audio,
                        Kind::Video => MediaKind::Video,
                    };
                    let track_id = format!("{}-{}", t.source, t.kind.as_str());
                    t.mid = Some(api.add_media(
                        kind,
                        Direction::SendOnly,
                        Some(msid.clone()),
                        Some(track_id),
                        None,
                    ));
                }
                let Some((offer, pending)) = api.apply() else {
                    return Err(Error::Sdp("nothing to offer".into()));
                };
                pending_offer = Some(pending);
                offer.to_sdp_string()
            }
        };
        for t in &tracks {
            if let Some(Peer {
                role: Role::Publisher(p),
                ..
            }) = self.peers.get_mut(&t.source)
                && !p.subscribers.contains(&id)
            {
                p.subscribers.push(id.clone());
            }
        }
        let peer = Peer {
            room,
            rtc,
            timeout: now,
            created: now,
            connected: false,
            events,
            role: Role::Subscriber(Box::new(Subscriber {
                layer: opts.layer,
                tracks,
                twcc: None,
                remb: None,
                loss: LossControl::default(),
            })),
            pending_offer,
            stats: PeerStats::default(),
            last_bytes: None,
        };
        tracing::info!(peer = %id, room = %peer.room, source = %msid, "subscription created");
        self.insert_peer(id.clone(), peer);
        self.drain(&id);
        Ok((sdp, msid))
    }

    fn answer(&mut self, id: &str, sdp: &str) -> Result<(), Error> {
        let peer = self
            .peers
            .get_mut(id)
            .ok_or_else(|| Error::NoSuchPeer(id.to_string()))?;
        let pending = peer
            .pending_offer
            .take()
            .ok_or_else(|| Error::NotOffering(id.to_string()))?;
        let answer = SdpAnswer::from_sdp_string(sdp).map_err(|e| Error::Sdp(e.to_string()))?;
        let r = peer
            .rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .map_err(|e| Error::Sdp(e.to_string()));
        self.drain(id);
        r
    }

    fn reoffer(&mut self, id: &str, sdp: &str) -> Result<String, Error> {
        let peer = self
            .peers
            .get_mut(id)
            .ok_or_else(|| Error::NoSuchPeer(id.to_string()))?;
        let offer = SdpOffer::from_sdp_string(sdp).map_err(|e| Error::Sdp(e.to_string()))?;
        if let Role::Publisher(p) = &mut peer.role {
            p.remb = offers_remb(sdp);
        }
        let r = peer
            .rtc
            .sdp_api()
            .accept_offer(offer)
            .map(|a| a.to_sdp_string())
            .map_err(|e| Error::Sdp(e.to_string()));
        self.drain(id);
        r
    }

    fn candidate(&mut self, id: &str, line: &str) -> Result<(), Error> {
        let peer = self
            .peers
            .get_mut(id)
            .ok_or_else(|| Error::NoSuchPeer(id.to_string()))?;
        match Candidate::from_sdp_string(line) {
            Ok(c) => {
                peer.rtc.add_remote_candidate(c);
                self.drain(id);
                Ok(())
            }
            // mDNS host candidates: an ICE-lite server learns the address from the
            // client's connectivity checks anyway.
            Err(_) if line.contains(".local ") => Ok(()),
            Err(e) => Err(Error::Candidate(e.to_string())),
        }
    }

    fn ice_restart(&mut self, id: &str) -> Result<String, Error> {
        let peer = self
            .peers
            .get_mut(id)
            .ok_or_else(|| Error::NoSuchPeer(id.to_string()))?;
        if !matches!(peer.role, Role::Subscriber(_)) {
            return Err(Error::NotOffering(id.to_string()));
        }
        peer.pending_offer = None;
        let mut api = peer.rtc.sdp_api();
        api.ice_restart(true);
        let r = match api.apply() {
            Some((offer, pending)) => {
                peer.pending_offer = Some(pending);
                Ok(offer.to_sdp_string())
            }
            None => Err(Error::Sdp("nothing to offer".into())),
        };
        self.drain(id);
        r
    }

    fn set_layer(&mut self, id: &str, layer: Layer, now: Instant) -> Result<(), Error> {
        let peer = self
            .peers
            .get_mut(id)
            .ok_or_else(|| Error::NoSuchPeer(id.to_string()))?;
        let Role::Subscriber(s) = &mut peer.role else {
            return Err(Error::NoSuchPeer(id.to_string()));
        };
        s.layer = layer;
        let sources: Vec<(String, Mid)> = s
            .tracks
            .iter()
            .map(|t| (t.source.clone(), t.source_mid))
            .collect();
        // The same measured rates as the once-a-second choice, so that choice
        // does not undo this one a moment later.
        let rates: Vec<Vec<u64>> = sources
            .iter()
            .map(|(source, mid)| self.up_rates(source, *mid))
            .collect();
        let Some(Peer {
            role: Role::Subscriber(s),
            ..
        }) = self.peers.get_mut(id)
        else {
            return Err(Error::NoSuchPeer(id.to_string()));
        };
        let mut switches = Vec::new();
        let allowance = s.allowance();
        for (t, r) in s.tracks.iter_mut().zip(&rates) {
            if t.kind != Kind::Video || t.rids.is_empty() {
                continue;
            }
            let want = choose_encoding(&s.layer, &t.rids, r, t.current, allowance);
            if want != t.target {
                t.target = want;
                t.asked = Some(now);
                switches.push((t.source.clone(), t.source_mid, rid_of(&t.rids, want)));
            }
        }
        for (source, mid, rid) in switches {
            self.keyframe(&source, mid, rid, now, false);
        }
        Ok(())
    }

    /// Points a subscription's track of `kind` at another stream of the same
    /// room and codec (OWT `subscription-control` update of `from`). The
    /// subscriber keeps its m-line and SSRC; it switches at the new source's
    /// next keyframe, with the timeline re-anchored so timestamps run on.
    fn switch_source(
        &mut self,
        id: &str,
        kind: Kind,
        from: &str,
        now: Instant,
    ) -> Result<(), Error> {
        let room = match self.peers.get(id) {
            Some(Peer {
                role: Role::Subscriber(_),
                room,
                ..
            }) => room.clone(),
            _ => return Err(Error::NoSuchPeer(id.to_string())),
        };
        let (source_mid, codec, rids, rates) = match self.peers.get(from) {
            Some(Peer {
                role: Role::Publisher(p),
                room: r,
                ..
            }) if *r == room && p.ready => {
                let up = p
                    .tracks
                    .iter()
                    .find(|t| t.kind == kind && t.params.is_some())
                    .ok_or_else(|| Error::NoSuchTrack(from.to_string(), kind.as_str()))?;
                let codec = up.params.map(|p| p.spec().codec);
                (up.mid, codec, up.rids.clone(), up.rates.clone())
            }
            _ => return Err(Error::NoSuchStream(from.to_string())),
        };
        let Some(Peer {
            role: Role::Subscriber(s),
            ..
        }) = self.peers.get_mut(id)
        else {
            return Err(Error::NoSuchPeer(id.to_string()));
        };
        let allowance = s.allowance();
        let t = s
            .tracks
            .iter_mut()
            .find(|t| t.kind == kind)
            .ok_or_else(|| Error::NoSuchTrack(id.to_string(), kind.as_str()))?;
        if codec != Some(t.codec) {
            return Err(Error::CodecMismatch(from.to_string()));
        }
        let old = std::mem::replace(&mut t.source, from.to_string());
        t.source_mid = source_mid;
        t.target = choose_encoding(&s.layer, &rids, &rates, None, allowance);
        t.rids = rids;
        t.current = None;
        t.need_keyframe = kind == Kind::Video;
        t.asked = Some(now);
        let target = rid_of(&t.rids, t.target);
        let still_reads_old = s.tracks.iter().any(|t| t.source == old);
        if !still_reads_old
            && let Some(Peer {
                role: Role::Publisher(p),
                ..
            }) = self.peers.get_mut(&old)
        {
            p.subscribers.retain(|x| x != id);
        }
        if let Some(Peer {
            role: Role::Publisher(p),
            ..
        }) = self.peers.get_mut(from)
            && !p.subscribers.iter().any(|x| x == id)
        {
            p.subscribers.push(id.to_string());
        }
        tracing::info!(peer = %id, kind = kind.as_str(), from, "subscription source switched");
        if kind == Kind::Video {
            self.keyframe(from, source_mid, target, now, false);
        }
        Ok(())
    }

    fn pause(&mut self, id: &str, kind: Kind, paused: bool, now: Instant) -> Result<(), Error> {
        let peer = self
            .peers
            .get_mut(id)
            .ok_or_else(|| Error::NoSuchPeer(id.to_string()))?;
        let mut keyframes = Vec::new();
        match &mut peer.role {
            Role::Publisher(p) => {
                if !p.tracks.iter().any(|t| t.kind == kind) {
                    return Err(Error::NoSuchTrack(id.to_string(), kind.as_str()));
                }
                match kind {
                    Kind::Audio => p.audio_paused = paused,
                    Kind::Video => p.video_paused = paused,
                }
                if !paused && kind == Kind::Video {
                    for t in p.tracks.iter().filter(|t| t.kind == Kind::Video) {
                        for (i, _) in t
                            .rids
                            .iter()
                            .enumerate()
                            .chain(std::iter::once((0, &String::new())))
                        {
                            keyframes.push((id.to_string(), t.mid, rid_of(&t.rids, i)));
                        }
                    }
                    // Subscribers must restart at the keyframe.
                    let subs = p.subscribers.clone();
                    for sid in subs {
                        if let Some(Peer {
                            role: Role::Subscriber(s),
                            ..
                        }) = self.peers.get_mut(&sid)
                        {
                            for t in s
                                .tracks
                                .iter_mut()
                                .filter(|t| t.source == id && t.kind == Kind::Video)
                            {
                                t.need_keyframe = true;
                                t.asked = Some(now);
                            }
                        }
                    }
                }
                if let Some(Peer {
                    role: Role::Publisher(p),
                    room,
                    ..
                }) = self.peers.get(id)
                    && p.ready
                {
                    let info = stream_info(id, room, p);
                    self.directory.put_stream(info.clone());
                    let _ = self.events.send(SfuEvent::StreamUpdated {
                        room: room.clone(),
                        stream: info,
                    });
                }
            }
            Role::Subscriber(s) => {
                let mut found = false;
                for t in s.tracks.iter_mut().filter(|t| t.kind == kind) {
                    found = true;
                    t.paused = paused;
                    if !paused && kind == Kind::Video {
                        t.need_keyframe = true;
                        t.asked = Some(now);
                        keyframes.push((t.source.clone(), t.source_mid, rid_of(&t.rids, t.target)));
                    }
                }
                if !found {
                    return Err(Error::NoSuchTrack(id.to_string(), kind.as_str()));
                }
            }
        }
        keyframes.dedup();
        for (source, mid, rid) in keyframes {
            self.keyframe(&source, mid, rid, now, false);
        }
        Ok(())
    }

    fn tap(&mut self, id: &str, sink: mpsc::Sender<TapFrame>, now: Instant) -> Result<(), Error> {
        let peer = self
            .peers
            .get_mut(id)
            .ok_or_else(|| Error::NoSuchStream(id.to_string()))?;
        let Role::Publisher(p) = &mut peer.role else {
            return Err(Error::NoSuchStream(id.to_string()));
        };
        p.taps.push(sink);
        let wanted: Vec<(Mid, Option<Rid>)> = p
            .tracks
            .iter()
            .filter(|t| t.kind == Kind::Video)
            .map(|t| (t.mid, rid_of(&t.rids, 0)))
            .collect();
        for (mid, rid) in wanted {
            self.keyframe(id, mid, rid, now, false);
        }
        Ok(())
    }
}

// ---- free functions (no borrow of the engine) -------------------------------

async fn read_socket(
    index: usize,
    sock: Arc<UdpSocket>,
    out: mpsc::Sender<Packet>,
    stop: CancellationToken,
) {
    // recvmmsg: a burst (every subscriber's receiver report, four publishers'
    // frames) is one system call instead of one per datagram. GRO stays off
    // so that each buffer holds exactly one datagram of at most 2 KiB.
    let state = quinn_udp::UdpSocketState::new((&*sock).into());
    if let Err(e) =
        nix::sys::socket::setsockopt(&*sock, nix::sys::socket::sockopt::UdpGroSegment, &false)
    {
        tracing::debug!("UDP_GRO off: {e}");
    }
    let Ok(state) = state else {
        tracing::warn!(
            worker = index,
            "batched receive unavailable; reading one by one"
        );
        return read_socket_one_by_one(index, sock, out, stop).await;
    };
    let batch = quinn_udp::BATCH_SIZE.clamp(1, 32);
    let mut storage = vec![[0u8; 2048]; batch];
    let mut meta = vec![quinn_udp::RecvMeta::default(); batch];
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            r = sock.readable() => if r.is_err() { continue },
        }
        let got = {
            let mut bufs: Vec<std::io::IoSliceMut<'_>> = storage
                .iter_mut()
                .map(|b| std::io::IoSliceMut::new(b))
                .collect();
            sock.try_io(tokio::io::Interest::READABLE, || {
                state.recv((&*sock).into(), &mut bufs, &mut meta)
            })
        };
        let n = match got {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            // ICMP errors from earlier sends surface here on Linux; not fatal.
            Err(e) => {
                tracing::trace!("udp receive: {e}");
                continue;
            }
        };
        for (m, b) in meta.iter().zip(&storage).take(n) {
            let Some(data) = b.get(..m.len) else { continue };
            for d in data.chunks(m.stride.max(1)) {
                if !deliver(&out, index, m.addr, d).await {
                    return;
                }
            }
        }
    }
}

/// Hands one datagram to the worker; false once the worker has stopped.
async fn deliver(
    out: &mpsc::Sender<Packet>,
    socket: usize,
    source: SocketAddr,
    data: &[u8],
) -> bool {
    let pkt = Packet {
        socket,
        source,
        data: data.to_vec(),
    };
    out.send(pkt).await.is_ok()
}

/// Where batched receive is unavailable (not Linux, or quinn-udp refused).
async fn read_socket_one_by_one(
    index: usize,
    sock: Arc<UdpSocket>,
    out: mpsc::Sender<Packet>,
    stop: CancellationToken,
) {
    let mut buf = vec![0u8; 2048];
    loop {
        let r = tokio::select! {
            _ = stop.cancelled() => return,
            r = sock.recv_from(&mut buf) => r,
        };
        match r {
            Ok((n, source)) => {
                let Some(data) = buf.get(..n) else { continue };
                if !deliver(&out, index, source, data).await {
                    return;
                }
            }
            // ICMP errors from earlier sends surface here on Linux; not fatal.
            Err(e) => tracing::trace!("udp receive: {e}"),
        }
    }
}

/// Whether an SDP offer asks for `goog-remb` feedback on any payload type.
fn offers_remb(sdp: &str) -> bool {
    sdp.lines().any(|l| {
        l.trim_end().starts_with("a=rtcp-fb:") && l.split_whitespace().any(|w| w == "goog-remb")
    })
}

/// Sends a publisher the REMB its receivers call for (Galène's rule, see
/// [`upstream_remb`]), once a second, if it negotiated `goog-remb`. libwebrtc
/// takes a REMB's value as the cap for the whole connection, so one message
/// carries the total, on the first video stream. Returns what was sent.
fn send_upstream_remb(
    id: &str,
    rtc: &mut Rtc,
    p: &Publisher,
    receivers: &HashMap<(String, Mid, usize), Vec<Option<u64>>>,
) -> Option<u64> {
    if !p.remb {
        return None;
    }
    let video: Vec<&UpTrack> = p.tracks.iter().filter(|t| t.kind == Kind::Video).collect();
    let first = video.first()?;
    // A recording tap takes whatever comes, like a receiver without a limit.
    let tapped: Vec<Option<u64>> = if p.taps.is_empty() {
        Vec::new()
    } else {
        vec![None]
    };
    let audio = p.tracks.iter().filter(|t| t.kind == Kind::Audio).count();
    let none: Vec<Option<u64>> = Vec::new();
    let mut encodings: Vec<(Option<&str>, &[Option<u64>])> = Vec::new();
    for t in &video {
        for e in 0..t.rids.len().max(1) {
            let got = receivers
                .get(&(id.to_string(), t.mid, e))
                .filter(|r| !r.is_empty())
                .unwrap_or(if tapped.is_empty() { &none } else { &tapped });
            encodings.push((t.rids.get(e).map(String::as_str), got.as_slice()));
        }
    }
    let bps = upstream_remb(audio, encodings);
    let rid = first.rids.first().map(|r| Rid::from(r.as_str()));
    let mut api = rtc.direct_api();
    let rx = api.stream_rx_by_mid(first.mid, rid)?;
    rx.request_remb(Bitrate::bps(bps));
    Some(bps)
}

/// Drains one peer's output until str0m hands back a timeout, sending
/// datagrams and turning events into state changes or queued actions.
fn drain_peer(
    id: &str,
    peer: &mut Peer,
    egress: &mut Egress,
    actions: &mut VecDeque<Action>,
    events: &broadcast::Sender<SfuEvent>,
    directory: &Directory,
) {
    loop {
        if !peer.rtc.is_alive() {
            peer.timeout = Instant::now();
            actions.push_back(Action::End {
                id: id.to_string(),
                failed: true,
                reason: "peer connection closed".into(),
            });
            return;
        }
        let out = match peer.rtc.poll_output() {
            Ok(o) => o,
            Err(e) => {
                tracing::debug!(peer = %id, "poll failed: {e}");
                peer.rtc.disconnect();
                peer.timeout = Instant::now();
                actions.push_back(Action::End {
                    id: id.to_string(),
                    failed: true,
                    reason: format!("media error: {e}"),
                });
                return;
            }
        };
        match out {
            Output::Timeout(t) => {
                peer.timeout = t;
                return;
            }
            Output::Transmit(t) => {
                egress.send(t.source, t.destination, &t.contents);
            }
            Output::Event(ev) => {
                handle_event(id, peer, ev, actions, events, directory);
            }
        }
    }
}

fn handle_event(
    id: &str,
    peer: &mut Peer,
    ev: Event,
    actions: &mut VecDeque<Action>,
    events: &broadcast::Sender<SfuEvent>,
    _directory: &Directory,
) {
    match ev {
        Event::Connected if !peer.connected => {
            peer.connected = true;
            let _ = peer.events.send(PeerEvent::Connected);
            let _ = events.send(SfuEvent::PeerConnected {
                room: peer.room.clone(),
                id: id.to_string(),
            });
            if matches!(peer.role, Role::Subscriber(_)) {
                actions.push_back(Action::SubscriberConnected { id: id.to_string() });
            }
        }
        Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
            actions.push_back(Action::End {
                id: id.to_string(),
                failed: true,
                reason: "ICE disconnected".into(),
            });
        }
        Event::MediaAdded(m) => match &mut peer.role {
            Role::Publisher(p) => {
                if matches!(m.direction, Direction::RecvOnly | Direction::SendRecv) {
                    let rids: Vec<String> = m
                        .simulcast
                        .as_ref()
                        .map(|s| {
                            let layers = if s.recv.is_empty() { &s.send } else { &s.recv };
                            layers.iter().map(|l| l.rid.to_string()).collect()
                        })
                        .unwrap_or_default();
                    let n = rids.len().max(1);
                    p.tracks.push(UpTrack {
                        mid: m.mid,
                        kind: if m.kind == MediaKind::Audio {
                            Kind::Audio
                        } else {
                            Kind::Video
                        },
                        rids,
                        params: None,
                        limiters: HashMap::new(),
                        bytes: vec![0; n],
                        rates: vec![0; n],
                        gop: vec![Vec::new(); n],
                    });
                }
            }
            Role::Subscriber(s) => {
                let kind = if m.kind == MediaKind::Audio {
                    Kind::Audio
                } else {
                    Kind::Video
                };
                if let Some(t) = s
                    .tracks
                    .iter_mut()
                    .find(|t| t.kind == kind && t.mid.is_none())
                {
                    t.mid = Some(m.mid);
                }
            }
        },
        Event::MediaData(d) => {
            if let Role::Publisher(p) = &mut peer.role {
                media_in(id, p, d, actions);
            }
        }
        Event::KeyframeRequest(req) => {
            if let Role::Subscriber(s) = &peer.role
                && let Some(t) = s.tracks.iter().find(|t| t.mid == Some(req.mid))
            {
                peer.stats.keyframe_requests = peer.stats.keyframe_requests.saturating_add(1);
                actions.push_back(Action::Keyframe {
                    publisher: t.source.clone(),
                    mid: t.source_mid,
                    // A keyframe of the old encoding would be dropped while a
                    // switch is pending; the target's serves both.
                    rid: rid_of(&t.rids, t.target),
                });
            }
        }
        Event::EgressBitrateEstimate(BweKind::Twcc { estimate, .. }) => {
            if let Role::Subscriber(s) = &mut peer.role {
                s.twcc = Some(estimate.as_u64());
                peer.stats.bwe = s.allowance().or(s.twcc);
            }
        }
        Event::EgressBitrateEstimate(BweKind::Remb { estimate, .. }) => {
            if let Role::Subscriber(s) = &mut peer.role {
                s.remb = Some(estimate.as_u64());
                peer.stats.bwe = s.allowance().or(s.remb);
            }
        }
        Event::PeerStats(st) => {
            let now = st.timestamp;
            if let Some((t, rx, tx)) = peer.last_bytes {
                let dt = now.saturating_duration_since(t).as_secs_f64();
                if dt > 0.0 {
                    peer.stats.bitrate_in =
                        (st.peer_bytes_rx.saturating_sub(rx) as f64 * 8.0 / dt) as u64;
                    peer.stats.bitrate_out =
                        (st.peer_bytes_tx.saturating_sub(tx) as f64 * 8.0 / dt) as u64;
                }
            }
            peer.last_bytes = Some((now, st.peer_bytes_rx, st.peer_bytes_tx));
            if let Some(rtt) = st.rtt {
                peer.stats.rtt_ms = Some(rtt.as_secs_f32() * 1000.0);
            }
            if let Some(bwe) = st.bwe_tx {
                peer.stats.bwe = Some(bwe.as_u64());
            }
            let loss = match peer.role {
                Role::Publisher(_) => st.ingress_loss_fraction,
                Role::Subscriber(_) => st.egress_loss_fraction,
            };
            if let Some(l) = loss {
                peer.stats.loss = l.clamp(0.0, 1.0);
            }
        }
        Event::MediaEgressStats(st) => {
            // str0m reports totals per (mid, rid); keep the largest seen.
            peer.stats.nacks = peer.stats.nacks.max(st.nacks);
            if let Some(rtt) = st.rtt {
                peer.stats.rtt_ms = Some(rtt.as_secs_f32() * 1000.0);
            }
        }
        Event::MediaIngressStats(st) => {
            peer.stats.nacks = peer.stats.nacks.max(st.nacks);
        }
        _ => {}
    }
}

fn media_in(id: &str, p: &mut Publisher, d: MediaData, actions: &mut VecDeque<Action>) {
    let Some(track) = p.tracks.iter_mut().find(|t| t.mid == d.mid) else {
        return;
    };
    let enc = d
        .rid
        .and_then(|r| track.rids.iter().position(|x| x.as_str() == &*r))
        .unwrap_or(0);
    if let Some(b) = track.bytes.get_mut(enc) {
        *b = b.saturating_add(d.data.len() as u64);
    }
    if track.params.is_none() {
        track.params = Some(d.params);
    }
    p.first_media.get_or_insert(d.network_time);
    if !d.contiguous && track.kind == Kind::Video {
        // A gap the NACKs could not fill: only a keyframe repairs the picture.
        actions.push_back(Action::Keyframe {
            publisher: id.to_string(),
            mid: d.mid,
            rid: d.rid,
        });
    }
    if enc == 0 && !p.taps.is_empty() {
        let spec = d.params.spec();
        let frame = TapFrame {
            kind: track.kind,
            codec: codec_name(spec.codec).to_string(),
            rid: d.rid.map(|r| r.to_string()),
            rtp_time: d.time.numer(),
            clock_rate: d.time.denom(),
            keyframe: d.is_keyframe(),
            payload: bytes::Bytes::copy_from_slice(&d.data),
        };
        p.taps.retain(|t| !t.is_closed());
        for t in &p.taps {
            if t.try_send(frame.clone()).is_err() {
                metrics::counter!("switchyard_rtc_tap_dropped_total").increment(1);
            }
        }
    }
    let paused = match track.kind {
        Kind::Audio => p.audio_paused,
        Kind::Video => p.video_paused,
    };
    let frame = Frame::of(&d);
    if track.kind == Kind::Video
        && let Some(gop) = track.gop.get_mut(enc)
    {
        if frame.keyframe {
            gop.clear();
            gop.push(frame.clone());
        } else if !gop.is_empty() {
            gop.push(frame.clone());
            let bytes: usize = gop.iter().map(|f| f.data.len()).sum();
            if gop.len() > FAST_START_FRAMES || bytes > FAST_START_BYTES {
                gop.clear();
            }
        }
    }
    if !paused && p.ready && !p.subscribers.is_empty() {
        actions.push_back(Action::Forward {
            from: id.to_string(),
            frame: Box::new(frame),
        });
    }
}

/// Writes one frame to every matching down track of a subscriber; returns the
/// kind if anything was written (the caller then drains the subscriber).
fn write_frame(peer: &mut Peer, from: &str, data: &Frame) -> Option<Kind> {
    let Peer {
        rtc,
        role,
        connected,
        ..
    } = peer;
    let Role::Subscriber(s) = role else {
        return None;
    };
    if !*connected {
        return None;
    }
    let mut wrote = None;
    for t in s
        .tracks
        .iter_mut()
        .filter(|t| t.source == from && t.source_mid == data.mid)
    {
        let Some(mid) = t.mid else { continue };
        if t.paused {
            continue;
        }
        let enc = data
            .rid
            .and_then(|r| t.rids.iter().position(|x| x.as_str() == &*r))
            .unwrap_or(0);
        let keyframe = data.keyframe;
        if Some(enc) != t.current {
            if enc == t.target && (keyframe || t.kind == Kind::Audio) {
                t.current = Some(enc);
                t.timeline.reanchor();
            } else {
                continue;
            }
        }
        if t.need_keyframe && t.kind == Kind::Video {
            if !keyframe {
                continue;
            }
            t.need_keyframe = false;
        }
        let pt = match t.pt {
            Some(pt) => pt,
            None => {
                let w = rtc.writer(mid)?;
                let pt = w
                    .payload_params()
                    .find(|p| p.spec().codec == t.codec)
                    .map(|p| p.pt())?;
                t.pt = Some(pt);
                pt
            }
        };
        let step = match t.kind {
            Kind::Video => 3000,
            Kind::Audio => u64::from(data.time.denom() / 50),
        };
        let out = t.timeline.map(data.time.numer(), step);
        let Some(mut writer) = rtc.writer(mid) else {
            continue;
        };
        // Carry what the receiver needs to render correctly: a phone camera's
        // rotation, and audio levels for speaker detection.
        if let Some(o) = data.orientation {
            writer = writer.video_orientation(o);
        }
        if let Some((level, vad)) = data.audio_level {
            writer = writer.audio_level(level, vad);
        }
        let time = MediaTime::new(out, data.time.frequency());
        match writer.write(pt, data.network_time, time, data.data.clone()) {
            Ok(()) => wrote = Some(t.kind),
            Err(e) => tracing::debug!("write to {mid}: {e}"),
        }
    }
    wrote
}

fn rid_of(rids: &[String], index: usize) -> Option<Rid> {
    rids.get(index).map(|r| Rid::from(r.as_str()))
}

fn stream_info(id: &str, room: &str, p: &Publisher) -> StreamInfo {
    let tracks = p
        .tracks
        .iter()
        .filter_map(|t| {
            let params = t.params?;
            let spec = params.spec();
            let profile = match spec.codec {
                Codec::H264 => spec.format.profile_level_id.map(|v| format!("{v:06x}")),
                Codec::Vp9 => spec.format.profile_id.map(|v| v.to_string()),
                _ => None,
            };
            Some(TrackInfo {
                kind: t.kind,
                codec: codec_name(spec.codec).to_string(),
                profile,
                clock_rate: spec.clock_rate.get(),
                channels: spec.channels,
                mid: t.mid.to_string(),
                simulcast_rids: t.rids.clone(),
            })
        })
        .collect();
    StreamInfo {
        id: id.to_string(),
        room: room.to_string(),
        owner: p.owner.clone(),
        label: p.label.clone(),
        tracks,
        audio_paused: p.audio_paused,
        video_paused: p.video_paused,
    }
}

pub(crate) fn codec_name(c: Codec) -> &'static str {
    match c {
        Codec::Opus => "opus",
        Codec::PCMU => "pcmu",
        Codec::PCMA => "pcma",
        Codec::G722 => "g722",
        Codec::H264 => "h264",
        Codec::H265 => "h265",
        Codec::Vp8 => "vp8",
        Codec::Vp9 => "vp9",
        Codec::Av1 => "av1",
        _ => "unknown",
    }
}

/// Down-stream payload types: Galène's fixed numbers, with RTX next to each video
/// codec so NACKs can be answered.
fn down_payload_types(c: Codec) -> (u8, Option<u8>) {
    match c {
        Codec::Vp8 => (96, Some(97)),
        Codec::Vp9 => (98, Some(99)),
        Codec::Av1 => (35, Some(36)),
        Codec::H264 => (102, Some(103)),
        Codec::H265 => (104, Some(105)),
        Codec::Opus => (111, None),
        Codec::G722 => (9, None),
        Codec::PCMU => (0, None),
        Codec::PCMA => (8, None),
        _ => (120, Some(121)),
    }
}

fn allowed_codecs(global: &[String], room: &[String]) -> Vec<String> {
    global
        .iter()
        .filter(|c| room.is_empty() || room.iter().any(|r| r.eq_ignore_ascii_case(c)))
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

fn publish_codecs(allowed: &[String]) -> CodecConfig {
    let on = |name: &str| allowed.iter().any(|c| c == name);
    let mut c = CodecConfig::empty();
    c.enable_opus(on("opus"), false);
    c.enable_g722(on("g722"), false);
    c.enable_pcmu(on("pcmu"), false);
    c.enable_pcma(on("pcma"), false);
    c.enable_vp8(on("vp8"));
    c.enable_vp9(on("vp9"));
    c.enable_h264(on("h264"));
    c.enable_av1(on("av1"));
    c
}

/// True if at least one m-line of an answer kept a codec (str0m answers an m-line
/// without a common codec with no `rtpmap`).
fn answer_has_codec(answer: &str) -> bool {
    answer.lines().any(|l| l.starts_with("a=rtpmap:"))
}
