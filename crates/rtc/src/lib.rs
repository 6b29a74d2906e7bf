//! The conference media plane: a selective forwarding unit (SFU) built on str0m.
//!
//! Every WebRTC front end (Galène, OWT portal, later WHIP) hands its SDP and ICE
//! candidates to one shared [`Sfu`], which owns the UDP sockets, the str0m peers and
//! the forwarding between them. A Galène user and an OWT user in the same room meet
//! here: streams are addressed by room name and stream id, never by protocol.
//! This crate must never decode or re-encode media, never speak a signalling
//! protocol (no JSON messages of Galène or OWT live here), never block a worker on a
//! slow peer, and never panic on anything a remote peer sent.
//!
//! # Shape
//!
//! * [`Sfu::start`] binds one UDP socket per media worker thread and per host
//!   address (`port_base + worker index`) and spawns the workers. A room is pinned to
//!   one worker, so forwarding inside a room needs no locks.
//! * The server is ICE-lite; its host candidates are written INTO every SDP it
//!   produces (answers and offers), so front ends never need to trickle server
//!   candidates. Remote candidates may be trickled with [`Sfu::add_ice_candidate`].
//! * Publishing: the client always offers ([`Sfu::publish`] returns the answer).
//! * Subscribing, two styles:
//!   - Galène style, server offers: [`Sfu::subscribe`] returns an offer, the front end
//!     relays the client's answer with [`Sfu::remote_answer`];
//!   - OWT style, client offers: [`Sfu::subscribe_with_offer`] returns the answer.
//! * A new offer on an existing peer (renegotiation, client ICE restart) goes to
//!   [`Sfu::remote_offer`] on the same id, NOT close + publish: the browser keeps
//!   its PeerConnection, so the DTLS identity must stay. A server-side ICE restart
//!   of a server-offered subscription is [`Sfu::ice_restart`].
//! * Room-level happenings (a stream became ready, went away) arrive on
//!   [`Sfu::events`]; per-peer happenings (connected, failed) on the
//!   [`PeerEvents`] receiver returned with each publication or subscription.
//! * Ids: publication ids may be chosen by the front end (Galène) or generated
//!   (OWT); subscription ids are always generated. Both share one namespace.
//!
//! # Metrics
//!
//! `switchyard_rtc_peers` (gauge), `switchyard_rtc_forwarded_frames_total{kind}`,
//! `switchyard_rtc_keyframe_requests_total`, `switchyard_rtc_tap_dropped_total`,
//! `switchyard_rtc_unrouted_datagrams_total`, `switchyard_rtc_send_errors_total`,
//! and per peer (labels `room`, `peer`, `role`), refreshed every second:
//! `switchyard_rtc_peer_bitrate_in_bps`, `switchyard_rtc_peer_bitrate_out_bps`,
//! `switchyard_rtc_peer_loss_ratio`, `switchyard_rtc_peer_rtt_seconds`.
//!
//! # Forwarding design (why str0m's frame API)
//!
//! str0m runs in its default "frame" mode: each incoming RTP flow is reassembled into
//! whole encoded frames (no decoding: the payload bytes stay untouched) and written
//! to each subscriber's `Writer`, which packetizes again. That mode gives us, without
//! re-implementing RTP bookkeeping: NACK generation toward publishers, a per
//! down-track retransmission cache answered with RTX, contiguous sequence numbers
//! across simulcast layer switches, keyframe-request events from subscribers (PLI/FIR)
//! that we relay upstream with a rate limit, and whole frames for the recording tap.
//! The price is a frame of forwarding delay, which is what Galène's jitter buffer
//! costs too.
//!
//! # Simulcast
//!
//! rid-simulcast encodings are listed in the publisher's order (highest first).
//! [`Layer::High`] (Galène `video`) forwards the first rid, [`Layer::Low`]
//! (`video-low`) the last. A switch waits for a keyframe on the target encoding
//! (requested at once), so the subscriber never sees a half picture. In
//! [`Layer::Auto`] the worker moves down when the subscriber's bandwidth estimate
//! (TWCC, or REMB) falls below the high layer's rate and up again with 25 %
//! headroom. A subscriber's REMB (its own statement of what it can take) caps
//! [`Layer::High`] the same way, as Galène's receiver allowance does; str0m's
//! TWCC estimate drives only `Auto`. Bandwidth estimation (and transport-cc
//! itself) is switched on only for subscriptions to a simulcast stream: str0m
//! paces sending to its estimate, which adds delay and buys nothing when there
//! is no lower encoding to fall back to; other subscriptions are rate
//! controlled as in Galène, by the receiver's REMB and its loss reports.
//!
//! # Upstream REMB
//!
//! Once a second every publication that negotiated `goog-remb` is sent one
//! REMB with what its receivers can take (Galène's rule, reference §23.4):
//! 100 kbit/s per audio track and per rid-`l` encoding, for every other video
//! encoding the smallest allowance among the subscribers it is forwarded to
//! (floored at 200 kbit/s; the floor too for an encoding nobody receives but
//! a recording), the total capped at 1 Gbit/s. Only publishers whose offer
//! asked for `goog-remb` are sent one. A camera with one slow viewer thus sends what
//! that viewer can decode instead of losing most of it on the way.
//!
//! # Keyframes
//!
//! A subscriber's first video frame is always a keyframe: when its connection
//! comes up the publisher is asked for one (PLI, or FIR if that is all it
//! negotiated), and delta frames are held back until it arrives. Subscribers'
//! PLI/FIR, gaps the NACKs could not repair, layer switches, resumes and recording
//! taps ask too; all requests to one encoding go through a limiter
//! ([`Config::keyframe_interval_ms`]) that defers rather than drops.

#![forbid(unsafe_code)]

mod addresses;
mod egress;
mod engine;
mod forward;
mod ids;
mod worker;

mod delay;
#[cfg(feature = "loadtest")]
pub mod loadtest;
pub use delay::DelaySnapshot;

pub mod testpeer;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

pub use forward::KeyframeLimiter;

/// Settings of the media plane, embedded by the server under `[rtc]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The first UDP port; worker `i` uses `port_base + i`. 0 = ephemeral ports
    /// (tests).
    pub port_base: u16,
    /// Number of media worker threads; 0 = one per CPU core.
    pub workers: usize,
    /// Local addresses to bind and announce as host candidates. Empty = detect:
    /// 127.0.0.1 plus every non-loopback IPv4 interface address.
    pub host_addresses: Vec<IpAddr>,
    /// Extra addresses announced as host candidates but not bound (1:1 NAT,
    /// containers): the port is the worker's port.
    pub public_addresses: Vec<IpAddr>,
    /// Codecs the SFU accepts at all, lower case: `opus`, `vp8`, `vp9`, `h264`,
    /// `av1`, `g722`, `pcmu`, `pcma`. A room's own list narrows this per publication
    /// ([`PublishOptions::codecs`]).
    pub codecs: Vec<String>,
    /// Smallest interval between two keyframe requests sent to one publisher's
    /// track, in milliseconds.
    pub keyframe_interval_ms: u64,
    /// A peer that has not connected within this many seconds is failed.
    pub connect_timeout_s: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            port_base: 8443,
            workers: 0,
            host_addresses: Vec::new(),
            public_addresses: Vec::new(),
            codecs: ["opus", "vp8", "vp9", "h264", "av1"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            keyframe_interval_ms: 500,
            connect_timeout_s: 30,
        }
    }
}

/// Failures reported to front ends; the text is fit to show to a user.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot bind media socket {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start media worker: {0}")]
    Spawn(std::io::Error),
    #[error("bad SDP: {0}")]
    Sdp(String),
    #[error("no acceptable codec in the offer")]
    NoCodec,
    #[error("stream {0} uses another codec")]
    CodecMismatch(String),
    #[error("bad ICE candidate: {0}")]
    Candidate(String),
    #[error("stream {0} does not exist")]
    NoSuchStream(String),
    #[error("stream {0} has no {1} track")]
    NoSuchTrack(String, &'static str),
    #[error("peer {0} does not exist")]
    NoSuchPeer(String),
    #[error("id {0} is already in use")]
    DuplicateId(String),
    #[error("peer {0} is not waiting for an answer")]
    NotOffering(String),
    #[error("the media plane is shutting down")]
    Closed,
}

/// Who owns a publication or subscription, as the front end knows them. The SFU
/// only carries it into [`StreamInfo`] and events.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct ParticipantRef {
    /// The participant id in the room (Galène client id, OWT participant id).
    pub id: String,
    /// Display name; may be empty.
    pub username: String,
}

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Audio,
    Video,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Audio => "audio",
            Kind::Video => "video",
        }
    }
}

/// Which simulcast encoding a subscriber receives.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layer {
    /// The first (highest) encoding: Galène `video`.
    #[default]
    High,
    /// The last (lowest) encoding: Galène `video-low`.
    Low,
    /// Start high, follow the subscriber's bandwidth estimate.
    Auto,
    /// One named rid (OWT `simulcastRid`); an unknown rid behaves as `High`.
    Rid(String),
}

/// One published track.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackInfo {
    pub kind: Kind,
    /// Lower-case codec name: `opus`, `vp8`, `vp9`, `h264`, `av1`, `g722`, `pcmu`, `pcma`.
    pub codec: String,
    /// H.264 `profile-level-id` (hex, e.g. `42e01f`) or VP9 `profile-id`, if any.
    pub profile: Option<String>,
    /// Clock rate and channels as negotiated (48000/2 for Opus, 90000/None video).
    pub clock_rate: u32,
    pub channels: Option<u8>,
    /// The m-line's mid in the publisher's SDP.
    pub mid: String,
    /// rid simulcast encodings in the publisher's order (highest first); empty
    /// without simulcast.
    pub simulcast_rids: Vec<String>,
}

/// One publication as seen by every front end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamInfo {
    pub id: String,
    pub room: String,
    pub owner: ParticipantRef,
    /// Galène label (`camera`, `screenshare`, ...); OWT maps it to `video.source`.
    pub label: String,
    pub tracks: Vec<TrackInfo>,
    /// Tracks the owner paused (OWT `stream-control`).
    pub audio_paused: bool,
    pub video_paused: bool,
}

impl StreamInfo {
    pub fn track(&self, kind: Kind) -> Option<&TrackInfo> {
        self.tracks.iter().find(|t| t.kind == kind)
    }
}

/// What a publication accepts.
#[derive(Debug, Clone, Default)]
pub struct PublishOptions {
    /// The stream id; `None` = generated (`[0-9A-Za-z]`, unique across nodes).
    /// Galène clients choose their own ids; OWT lets the server choose.
    pub id: Option<String>,
    pub label: String,
    /// The room's codec list (lower case); empty = whatever [`Config::codecs`] allows.
    pub codecs: Vec<String>,
}

/// What a subscription receives.
#[derive(Debug, Clone, Default)]
pub struct SubscribeOptions {
    /// The stream whose audio is sent; `None` = no audio. (OWT may take audio and
    /// video from different streams; Galène names the same stream twice.)
    pub audio_from: Option<String>,
    /// The stream whose video is sent; `None` = no video.
    pub video_from: Option<String>,
    pub layer: Layer,
    /// Subscriber's codec list (lower case); empty = any. The publisher's codec must
    /// be in it, since the SFU never transcodes.
    pub codecs: Vec<String>,
}

impl SubscribeOptions {
    /// Audio and video of one stream, the common case.
    pub fn both(stream_id: &str) -> Self {
        SubscribeOptions {
            audio_from: Some(stream_id.to_string()),
            video_from: Some(stream_id.to_string()),
            ..Default::default()
        }
    }
}

/// Things that happen to one peer (publication or subscription).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerEvent {
    /// ICE and DTLS are up (OWT: `progress ready` for subscriptions).
    Connected,
    /// A publication's media is flowing on every track its SDP announced (OWT:
    /// `progress ready` for publications; Galène: offer it to receivers).
    Ready,
    /// The peer failed and was removed (ICE timeout, DTLS failure, source gone).
    Failed(String),
    /// The peer ended normally ([`Sfu::close`], the source stream ended, shutdown).
    Closed(String),
}

/// Receiver of one peer's [`PeerEvent`]s; ends after `Failed` or `Closed`.
pub type PeerEvents = mpsc::UnboundedReceiver<PeerEvent>;

/// Room-level happenings, for every front end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SfuEvent {
    /// A publication is ready (media arrived on all its tracks).
    StreamAdded {
        room: String,
        stream: StreamInfo,
    },
    /// A publication changed (pause/resume of a kind, simulcast rids appeared).
    StreamUpdated {
        room: String,
        stream: StreamInfo,
    },
    /// A publication ended; its subscriptions are closed with
    /// `PeerEvent::Failed("source stream loss")`.
    StreamRemoved {
        room: String,
        id: String,
    },
    PeerConnected {
        room: String,
        id: String,
    },
    PeerFailed {
        room: String,
        id: String,
        reason: String,
    },
}

/// A publication accepted by the SFU.
#[derive(Debug)]
pub struct Publication {
    /// Stream id (given or generated).
    pub id: String,
    /// The SDP answer, with the server's host candidates inside.
    pub answer_sdp: String,
    pub events: PeerEvents,
}

/// A subscription created by the SFU.
#[derive(Debug)]
pub struct Subscription {
    /// Subscription id (generated, `[0-9A-Za-z]`).
    pub id: String,
    /// [`Sfu::subscribe`]: the server's offer (answer with [`Sfu::remote_answer`]);
    /// [`Sfu::subscribe_with_offer`]: the server's answer. Candidates are inside.
    pub sdp: String,
    /// The `a=msid` stream id used in `sdp` (the publication id).
    pub msid: String,
    pub events: PeerEvents,
}

/// Per-peer statistics, refreshed about once a second by the worker.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PeerStats {
    /// Media bits per second received from (publication) or sent to (subscription)
    /// the peer over the last interval.
    pub bitrate_in: u64,
    pub bitrate_out: u64,
    /// Fraction of packets lost, 0.0..=1.0 (ingress for publications, as reported by
    /// the receiver for subscriptions).
    pub loss: f32,
    /// Round-trip time in milliseconds, if known.
    pub rtt_ms: Option<f32>,
    /// Current bandwidth estimate toward the peer (subscriptions), bits per second.
    pub bwe: Option<u64>,
    /// NACKs received from / sent to the peer, total.
    pub nacks: u64,
    /// Keyframe requests (PLI/FIR) relayed for this peer, total.
    pub keyframe_requests: u64,
    /// The rid being forwarded (subscriptions with simulcast).
    pub layer: Option<String>,
    /// The REMB last sent to the peer (publications that negotiated
    /// `goog-remb`), bits per second: what its receivers can take.
    pub upstream_remb: Option<u64>,
}

/// One encoded frame handed to a recording tap: a whole frame as the publisher
/// sent it (no decoding), with its timing.
#[derive(Debug, Clone)]
pub struct TapFrame {
    pub kind: Kind,
    pub codec: String,
    /// The simulcast rid it came from, if any.
    pub rid: Option<String>,
    /// RTP timestamp extended to 64 bits, in `clock_rate` units.
    pub rtp_time: u64,
    pub clock_rate: u32,
    /// Video keyframe (always false for audio).
    pub keyframe: bool,
    pub payload: bytes::Bytes,
}

/// A handle on the running media plane. Cheap to clone; every front end gets one.
#[derive(Clone)]
pub struct Sfu {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    workers: Vec<worker::Handle>,
    directory: Arc<worker::Directory>,
    events: broadcast::Sender<SfuEvent>,
    local_addrs: Vec<SocketAddr>,
}

impl Sfu {
    /// Binds the UDP sockets and starts the workers. They stop when `shutdown` is
    /// cancelled (peers are closed with `PeerEvent::Closed("shutdown")`).
    pub fn start(config: Config, shutdown: CancellationToken) -> Result<Sfu, Error> {
        let (events, _) = broadcast::channel(1024);
        let directory = Arc::new(worker::Directory::default());
        let count = if config.workers == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            config.workers
        };
        let hosts = if config.host_addresses.is_empty() {
            addresses::detect()
        } else {
            config.host_addresses.clone()
        };
        let mut workers = Vec::with_capacity(count);
        let mut local_addrs = Vec::new();
        for index in 0..count {
            let port = if config.port_base == 0 {
                0
            } else {
                // Wrapping would silently collide with another service: refuse instead.
                let p = u32::from(config.port_base) + index as u32;
                u16::try_from(p).map_err(|_| Error::Bind {
                    addr: SocketAddr::new(IpAddr::from([0, 0, 0, 0]), 0),
                    source: std::io::Error::other("port range exceeds 65535"),
                })?
            };
            let handle = worker::spawn(
                index,
                &hosts,
                port,
                &config,
                directory.clone(),
                events.clone(),
                shutdown.clone(),
            )?;
            local_addrs.extend(handle.local_addrs.iter().copied());
            workers.push(handle);
        }
        Ok(Sfu {
            inner: Arc::new(Inner {
                config,
                workers,
                directory,
                events,
                local_addrs,
            }),
        })
    }

    /// How long forwarded video frames spent in the SFU, from the arrival of a
    /// frame's last packet to the send of its packets to each subscriber,
    /// counted since start; subtract two snapshots for a window.
    pub fn forward_delays(&self) -> DelaySnapshot {
        self.inner.directory.forward_delay.snapshot()
    }

    /// The bound UDP addresses (host candidates), e.g. for tests and logs.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.inner.local_addrs
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Accepts a publisher's offer. The stream becomes visible in [`Sfu::streams`]
    /// and as [`SfuEvent::StreamAdded`] once media arrives on its tracks.
    pub async fn publish(
        &self,
        room: &str,
        owner: ParticipantRef,
        offer_sdp: String,
        opts: PublishOptions,
    ) -> Result<Publication, Error> {
        let id = match opts.id.clone() {
            Some(id) if !id.is_empty() => id,
            _ => ids::generate(),
        };
        let w = self.claim(room, &id)?;
        let (tx, rx) = oneshot::channel();
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let cmd = worker::Command::Publish {
            room: room.to_string(),
            id: id.clone(),
            owner,
            offer_sdp,
            opts,
            events: ev_tx,
            reply: tx,
        };
        match self.call(w, cmd, rx).await {
            Ok(answer_sdp) => Ok(Publication {
                id,
                answer_sdp,
                events: ev_rx,
            }),
            Err(e) => {
                self.release(&id);
                Err(e)
            }
        }
    }

    /// Creates a subscription for which the server offers (Galène down streams).
    /// Relay the client's answer with [`Sfu::remote_answer`].
    pub async fn subscribe(
        &self,
        room: &str,
        subscriber: ParticipantRef,
        opts: SubscribeOptions,
    ) -> Result<Subscription, Error> {
        self.subscribe_inner(room, subscriber, None, opts).await
    }

    /// Creates a subscription from the client's offer (OWT); returns the answer.
    pub async fn subscribe_with_offer(
        &self,
        room: &str,
        subscriber: ParticipantRef,
        offer_sdp: String,
        opts: SubscribeOptions,
    ) -> Result<Subscription, Error> {
        self.subscribe_inner(room, subscriber, Some(offer_sdp), opts)
            .await
    }

    async fn subscribe_inner(
        &self,
        room: &str,
        subscriber: ParticipantRef,
        offer_sdp: Option<String>,
        opts: SubscribeOptions,
    ) -> Result<Subscription, Error> {
        let id = ids::generate();
        let w = self.claim(room, &id)?;
        let (tx, rx) = oneshot::channel();
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let cmd = worker::Command::Subscribe {
            room: room.to_string(),
            id: id.clone(),
            subscriber,
            offer_sdp,
            opts,
            events: ev_tx,
            reply: tx,
        };
        match self.call(w, cmd, rx).await {
            Ok((sdp, msid)) => Ok(Subscription {
                id,
                sdp,
                msid,
                events: ev_rx,
            }),
            Err(e) => {
                self.release(&id);
                Err(e)
            }
        }
    }

    /// Applies the client's answer to a server offer ([`Sfu::subscribe`] or
    /// [`Sfu::ice_restart`]).
    pub async fn remote_answer(&self, id: &str, answer_sdp: String) -> Result<(), Error> {
        let w = self.worker_of(id)?;
        let (tx, rx) = oneshot::channel();
        let cmd = worker::Command::Answer {
            id: id.to_string(),
            sdp: answer_sdp,
            reply: tx,
        };
        self.call(w, cmd, rx).await
    }

    /// Applies a new offer from the client on an existing peer (renegotiation, ICE
    /// restart of a publication); returns the answer.
    pub async fn remote_offer(&self, id: &str, offer_sdp: String) -> Result<String, Error> {
        let w = self.worker_of(id)?;
        let (tx, rx) = oneshot::channel();
        let cmd = worker::Command::Offer {
            id: id.to_string(),
            sdp: offer_sdp,
            reply: tx,
        };
        self.call(w, cmd, rx).await
    }

    /// Adds a trickled remote candidate. Accepts the W3C JSON object
    /// (`{"candidate":"candidate:…","sdpMid":"0",…}`), a bare `candidate:…` string,
    /// or OWT's `a=candidate:…` form. An empty candidate (end of candidates) is
    /// ignored.
    pub async fn add_ice_candidate(&self, id: &str, candidate: &str) -> Result<(), Error> {
        let w = self.worker_of(id)?;
        let line = worker::parse_candidate_text(candidate)?;
        let Some(line) = line else {
            return Ok(());
        };
        let (tx, rx) = oneshot::channel();
        let cmd = worker::Command::Candidate {
            id: id.to_string(),
            line,
            reply: tx,
        };
        self.call(w, cmd, rx).await
    }

    /// Produces a new server offer with ICE restart (Galène `renegotiate` for a
    /// down stream). Answer it with [`Sfu::remote_answer`].
    pub async fn ice_restart(&self, id: &str) -> Result<String, Error> {
        let w = self.worker_of(id)?;
        let (tx, rx) = oneshot::channel();
        let cmd = worker::Command::IceRestart {
            id: id.to_string(),
            reply: tx,
        };
        self.call(w, cmd, rx).await
    }

    /// Ends a publication (its subscriptions fail with "source stream loss") or a
    /// subscription. Unknown ids are ignored.
    pub async fn close(&self, id: &str) {
        let Ok(w) = self.worker_of(id) else {
            return;
        };
        let (tx, rx) = oneshot::channel();
        let cmd = worker::Command::Close {
            id: id.to_string(),
            reply: tx,
        };
        let _ = self.call(w, cmd, rx).await;
        self.release(id);
    }

    /// Changes the simulcast layer of a subscription (Galène `requestStream`
    /// switching between `video` and `video-low`; OWT `simulcastRid` update).
    pub async fn set_layer(&self, id: &str, layer: Layer) -> Result<(), Error> {
        let w = self.worker_of(id)?;
        let (tx, rx) = oneshot::channel();
        let cmd = worker::Command::SetLayer {
            id: id.to_string(),
            layer,
            reply: tx,
        };
        self.call(w, cmd, rx).await
    }

    /// Stops (`paused = true`) or resumes forwarding one kind. On a publication it
    /// affects every subscriber (OWT `stream-control`); on a subscription only that
    /// one (`subscription-control`). Resuming video asks for a keyframe.
    pub async fn set_paused(&self, id: &str, kind: Kind, paused: bool) -> Result<(), Error> {
        let w = self.worker_of(id)?;
        let (tx, rx) = oneshot::channel();
        let cmd = worker::Command::Pause {
            id: id.to_string(),
            kind,
            paused,
            reply: tx,
        };
        self.call(w, cmd, rx).await
    }

    /// Makes a subscription's `kind` track forward another stream of the same
    /// room with the same codec (OWT `subscription-control` update with
    /// `from`); the switch happens at that stream's next keyframe, which is
    /// asked for.
    pub async fn switch_source(&self, id: &str, kind: Kind, from: &str) -> Result<(), Error> {
        let w = self.worker_of(id)?;
        let (tx, rx) = oneshot::channel();
        let cmd = worker::Command::SwitchSource {
            id: id.to_string(),
            kind,
            from: from.to_string(),
            reply: tx,
        };
        self.call(w, cmd, rx).await
    }

    /// Ready publications of a room.
    pub fn streams(&self, room: &str) -> Vec<StreamInfo> {
        self.inner.directory.streams(room)
    }

    /// One ready publication.
    pub fn stream(&self, room: &str, id: &str) -> Option<StreamInfo> {
        self.inner
            .directory
            .streams(room)
            .into_iter()
            .find(|s| s.id == id)
    }

    /// Room-level events. A receiver that lags loses the oldest events
    /// (`RecvError::Lagged`); re-read [`Sfu::streams`] then.
    pub fn events(&self) -> broadcast::Receiver<SfuEvent> {
        self.inner.events.subscribe()
    }

    /// Latest statistics of a publication or subscription.
    pub fn stats(&self, id: &str) -> Option<PeerStats> {
        self.inner.directory.stats(id)
    }

    /// Taps a publication: every frame of its tracks (the high simulcast layer only)
    /// is copied into the returned bounded channel; frames that do not fit are
    /// dropped and counted (`switchyard_rtc_tap_dropped_total`). Asks the publisher
    /// for a keyframe so a recording starts clean. For the recorder (issue 8).
    pub async fn tap(
        &self,
        stream_id: &str,
        capacity: usize,
    ) -> Result<mpsc::Receiver<TapFrame>, Error> {
        let w = self.worker_of(stream_id)?;
        let (tx, rx) = oneshot::channel();
        let (ftx, frx) = mpsc::channel(capacity.max(1));
        let cmd = worker::Command::Tap {
            id: stream_id.to_string(),
            sink: ftx,
            reply: tx,
        };
        self.call(w, cmd, rx).await?;
        Ok(frx)
    }

    fn claim(&self, room: &str, id: &str) -> Result<usize, Error> {
        let loads: Vec<usize> = self.inner.workers.iter().map(|w| w.load()).collect();
        self.inner.directory.claim(room, id, &loads)
    }

    fn release(&self, id: &str) {
        self.inner.directory.release(id);
    }

    fn worker_of(&self, id: &str) -> Result<usize, Error> {
        self.inner
            .directory
            .worker_of(id)
            .ok_or_else(|| Error::NoSuchPeer(id.to_string()))
    }

    async fn call<T>(
        &self,
        w: usize,
        cmd: worker::Command,
        rx: oneshot::Receiver<Result<T, Error>>,
    ) -> Result<T, Error> {
        let handle = self.inner.workers.get(w).ok_or(Error::Closed)?;
        handle.send(cmd)?;
        rx.await.map_err(|_| Error::Closed)?
    }
}
