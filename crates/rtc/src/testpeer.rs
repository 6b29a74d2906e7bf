//! A str0m WebRTC client for tests and the load generator: it publishes synthetic
//! VP8 + Opus (optionally rid simulcast), or receives and records what arrives.
//! It is a real peer (ICE, DTLS-SRTP, RTCP) on its own UDP socket, so it exercises
//! the SFU exactly as a browser would, minus the codecs.
//!
//! Synthetic frames carry, after a codec-shaped header, the encoding index, a frame
//! number and the send time, so a receiver can tell lost frames, the layer it
//! gets and the forwarding delay. Loss can be injected on either direction.
//! Not for production use.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::media::{Direction, MediaKind, MediaTime, Mid, Rid, Simulcast, SimulcastLayer};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Drops every `every`-th RTP packet (RTCP, STUN and DTLS pass), at most `max`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Loss {
    pub every: u32,
    pub max: u32,
}

#[derive(Debug, Clone)]
pub struct TestPeerConfig {
    pub audio: bool,
    pub video: bool,
    /// Bits per second of the first (highest) video encoding.
    pub video_bitrate: u64,
    pub fps: u32,
    /// A keyframe every this many frames (also on every PLI/FIR).
    pub keyframe_every: u32,
    /// rid simulcast encodings, highest first; each lower one is a quarter of the
    /// rate of the one before. Empty = no simulcast.
    pub simulcast: Vec<String>,
    pub drop_incoming: Loss,
    pub drop_outgoing: Loss,
    /// Publish H.264 (Annex B, constrained baseline) instead of VP8.
    pub h264: bool,
    /// Keyframe requests arriving this soon after the last one that was
    /// honoured are ignored, whatever encoding they name: libwebrtc drops them
    /// the same way (300 ms), so an SFU must repeat a request that mattered.
    pub keyframe_request_gap: Duration,
    /// A request makes a keyframe only on the encoding it names (as libwebrtc
    /// does with per-layer requests), instead of on every encoding.
    pub keyframe_per_encoding: bool,
}

impl Default for TestPeerConfig {
    fn default() -> Self {
        TestPeerConfig {
            audio: true,
            video: true,
            video_bitrate: 1_500_000,
            fps: 30,
            keyframe_every: 3000,
            simulcast: Vec::new(),
            drop_incoming: Loss::default(),
            drop_outgoing: Loss::default(),
            h264: false,
            keyframe_request_gap: Duration::ZERO,
            keyframe_per_encoding: false,
        }
    }
}

impl TestPeerConfig {
    /// Keyframe behaviour of a Chromium publisher: requests within 300 ms of the
    /// last honoured one are dropped, and each names one encoding.
    pub fn browser_keyframes(self) -> Self {
        TestPeerConfig {
            keyframe_request_gap: Duration::from_millis(300),
            keyframe_per_encoding: true,
            ..self
        }
    }
}

/// What a test peer observed so far.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub connected: bool,
    pub audio_frames: u64,
    pub video_frames: u64,
    pub video_keyframes: u64,
    /// Whether the first video frame received was a keyframe.
    pub first_video_keyframe: Option<bool>,
    /// Frames str0m flagged as not contiguous (a gap NACK did not repair).
    pub video_gaps: u64,
    /// Video frame numbers skipped between consecutive received frames (same
    /// encoding).
    pub video_frames_missing: u64,
    /// Encoding index of the last received video frame.
    pub video_encoding: Option<u8>,
    pub rtp_dropped: u64,
    /// NACKs this peer sent (receiver) or received (sender), per str0m's stats.
    pub nacks: u64,
    pub keyframe_requests_received: u64,
    /// Requests dropped because of `keyframe_request_gap`.
    pub keyframe_requests_ignored: u64,
    pub frames_sent: u64,
    pub bytes_received: u64,
    /// Forwarding delays (send to receive) in microseconds, at most 200 000 kept.
    pub delays_us: Vec<u64>,
    /// The last REMB the far end sent this peer (a publisher hears the SFU's).
    pub remb_received: Option<u64>,
}

enum Ctl {
    Answer(String, oneshot::Sender<Result<(), String>>),
    IceRestart(oneshot::Sender<Result<String, String>>),
    Pli(oneshot::Sender<Result<(), String>>),
    Remb(u64, oneshot::Sender<Result<(), String>>),
    IncomingLoss(Loss),
    Close,
}

/// A running test peer; dropping it stops the peer.
pub struct TestPeer {
    ctl: mpsc::UnboundedSender<Ctl>,
    report: Arc<Mutex<Report>>,
    pub local_addr: SocketAddr,
}

impl Drop for TestPeer {
    fn drop(&mut self) {
        let _ = self.ctl.send(Ctl::Close);
    }
}

struct Sender {
    audio: Option<Mid>,
    video: Option<Mid>,
    rids: Vec<Rid>,
    frame: u64,
    audio_frame: u64,
    next_video: Instant,
    next_audio: Instant,
    force_keyframe: bool,
    /// Encodings owed a keyframe (per-encoding requests).
    keyframe_for: Vec<Rid>,
    last_honoured: Option<Instant>,
}

impl TestPeer {
    async fn bind() -> std::io::Result<(UdpSocket, SocketAddr, Rtc)> {
        let sock = UdpSocket::bind("127.0.0.1:0").await?;
        let addr = sock.local_addr()?;
        let mut rtc = Rtc::builder()
            .set_stats_interval(Some(Duration::from_millis(500)))
            .build(Instant::now());
        if let Ok(c) = Candidate::host(addr, "udp") {
            rtc.add_local_candidate(c);
        }
        Ok((sock, addr, rtc))
    }

    /// A publisher: returns the peer and its offer; pass the SFU's answer to
    /// [`TestPeer::accept_answer`]. Media starts once connected.
    pub async fn publisher(cfg: TestPeerConfig) -> std::io::Result<(TestPeer, String)> {
        let (sock, addr, mut rtc) = Self::bind().await?;
        let mut api = rtc.sdp_api();
        let audio = cfg
            .audio
            .then(|| api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None));
        let simulcast = (!cfg.simulcast.is_empty()).then(|| {
            let mut s = Simulcast::new();
            for r in &cfg.simulcast {
                s.add_send_layer(SimulcastLayer::new(r));
            }
            s
        });
        let video = cfg
            .video
            .then(|| api.add_media(MediaKind::Video, Direction::SendOnly, None, None, simulcast));
        let Some((offer, pending)) = api.apply() else {
            return Err(std::io::Error::other("nothing to offer"));
        };
        let now = Instant::now();
        let sender = Sender {
            audio,
            video,
            rids: cfg
                .simulcast
                .iter()
                .map(|r| Rid::from(r.as_str()))
                .collect(),
            frame: 0,
            audio_frame: 0,
            next_video: now,
            next_audio: now,
            force_keyframe: true,
            keyframe_for: Vec::new(),
            last_honoured: None,
        };
        let peer = Self::spawn(sock, addr, rtc, cfg, Some(pending), Some(sender));
        Ok((peer, offer.to_sdp_string()))
    }

    /// A receiver that offers (OWT style): returns the peer and its offer.
    pub async fn receiver_offering(cfg: TestPeerConfig) -> std::io::Result<(TestPeer, String)> {
        let (sock, addr, mut rtc) = Self::bind().await?;
        let mut api = rtc.sdp_api();
        if cfg.audio {
            api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        }
        if cfg.video {
            api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
        }
        let Some((offer, pending)) = api.apply() else {
            return Err(std::io::Error::other("nothing to offer"));
        };
        let peer = Self::spawn(sock, addr, rtc, cfg, Some(pending), None);
        Ok((peer, offer.to_sdp_string()))
    }

    /// A receiver answering a server offer (Galène style): returns the peer and its
    /// answer.
    pub async fn receiver_answering(
        offer: &str,
        cfg: TestPeerConfig,
    ) -> std::io::Result<(TestPeer, String)> {
        let (sock, addr, mut rtc) = Self::bind().await?;
        let offer = SdpOffer::from_sdp_string(offer).map_err(std::io::Error::other)?;
        let answer = rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(std::io::Error::other)?;
        let peer = Self::spawn(sock, addr, rtc, cfg, None, None);
        Ok((peer, answer.to_sdp_string()))
    }

    /// Applies the SFU's answer to this peer's offer.
    pub async fn accept_answer(&self, answer: &str) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.ctl
            .send(Ctl::Answer(answer.to_string(), tx))
            .map_err(|_| "peer stopped".to_string())?;
        rx.await.map_err(|_| "peer stopped".to_string())?
    }

    /// Starts an ICE restart: returns the new offer; pass the answer to
    /// [`TestPeer::accept_answer`].
    pub async fn ice_restart(&self) -> Result<String, String> {
        let (tx, rx) = oneshot::channel();
        self.ctl
            .send(Ctl::IceRestart(tx))
            .map_err(|_| "peer stopped".to_string())?;
        rx.await.map_err(|_| "peer stopped".to_string())?
    }

    /// Sends a PLI for the received video, as a browser does when it can not
    /// decode.
    pub async fn request_keyframe(&self) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.ctl
            .send(Ctl::Pli(tx))
            .map_err(|_| "peer stopped".to_string())?;
        rx.await.map_err(|_| "peer stopped".to_string())?
    }

    /// Sends a REMB (receiver estimated maximum bitrate) for the received
    /// video, as a browser without transport-cc feedback does.
    pub async fn send_remb(&self, bps: u64) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.ctl
            .send(Ctl::Remb(bps, tx))
            .map_err(|_| "peer stopped".to_string())?;
        rx.await.map_err(|_| "peer stopped".to_string())?
    }

    /// Changes the loss injected on received RTP from now on.
    pub fn set_incoming_loss(&self, loss: Loss) {
        let _ = self.ctl.send(Ctl::IncomingLoss(loss));
    }

    pub fn report(&self) -> Report {
        self.report.lock().clone()
    }

    /// Polls `cond` on the report every 20 ms until it holds or `limit` passes.
    pub async fn wait_for(&self, limit: Duration, cond: impl Fn(&Report) -> bool) -> bool {
        let end = Instant::now() + limit;
        loop {
            if cond(&self.report.lock()) {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn spawn(
        sock: UdpSocket,
        addr: SocketAddr,
        rtc: Rtc,
        cfg: TestPeerConfig,
        pending: Option<SdpPendingOffer>,
        sender: Option<Sender>,
    ) -> TestPeer {
        let (ctl, rx) = mpsc::unbounded_channel();
        let report = Arc::new(Mutex::new(Report::default()));
        let r = report.clone();
        tokio::spawn(async move {
            run(sock, addr, rtc, cfg, pending, sender, rx, r).await;
        });
        TestPeer {
            ctl,
            report,
            local_addr: addr,
        }
    }
}

fn is_rtp(b: &[u8]) -> bool {
    match (b.first(), b.get(1)) {
        // RFC 7983 demultiplexing; RTCP packet types 192..=223 share the range.
        (Some(0x80..=0xbf), Some(pt)) => !(192..=223).contains(pt),
        _ => false,
    }
}

fn should_drop(loss: &Loss, counter: &mut u64, dropped: &mut u64) -> bool {
    if loss.every == 0 || *dropped >= u64::from(loss.max) {
        return false;
    }
    *counter += 1;
    if (*counter).is_multiple_of(u64::from(loss.every)) {
        *dropped += 1;
        return true;
    }
    false
}

struct Client {
    sock: UdpSocket,
    /// GRO receive state: one `recvmsg` may return a run of datagrams that the
    /// sender passed as one GSO send (the SFU sends each frame that way).
    /// Loopback then hands the run to this socket as one buffer instead of
    /// segmenting it on the SFU's thread, as a receiver on another host would
    /// cost the SFU nothing for it.
    udp: quinn_udp::UdpSocketState,
    addr: SocketAddr,
    rtc: Rtc,
    cfg: TestPeerConfig,
    report: Arc<Mutex<Report>>,
    in_count: u64,
    in_dropped: u64,
    out_count: u64,
    out_dropped: u64,
    last_frame: Option<(u8, u32)>,
    connected: bool,
    /// Keyframe requests received since the sender last looked: the rid
    /// named, if any.
    keyframe_asked: Vec<Option<Rid>>,
    /// The video m-line this peer receives on, once known.
    video_in: Option<Mid>,
    alive: bool,
}

impl Client {
    /// Drains str0m until it hands back its next timeout.
    fn drain(&mut self) -> Instant {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => return t,
                Ok(Output::Transmit(t)) => {
                    if is_rtp(&t.contents)
                        && should_drop(
                            &self.cfg.drop_outgoing,
                            &mut self.out_count,
                            &mut self.out_dropped,
                        )
                    {
                        self.report.lock().rtp_dropped += 1;
                        continue;
                    }
                    let _ = self.sock.try_send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(ev)) => {
                    let mut r = self.report.lock();
                    match ev {
                        Event::Connected => {
                            self.connected = true;
                            r.connected = true;
                        }
                        Event::KeyframeRequest(req) => {
                            r.keyframe_requests_received += 1;
                            self.keyframe_asked.push(req.rid);
                        }
                        Event::EgressBitrateEstimate(str0m::bwe::BweKind::Remb {
                            estimate,
                            ..
                        }) => {
                            r.remb_received = Some(estimate.as_u64());
                        }
                        Event::MediaIngressStats(s) => r.nacks = r.nacks.max(s.nacks),
                        Event::MediaEgressStats(s) => r.nacks = r.nacks.max(s.nacks),
                        Event::MediaData(d) => record(&mut r, &d, &mut self.last_frame),
                        Event::MediaAdded(m)
                            if m.kind == MediaKind::Video
                                && matches!(
                                    m.direction,
                                    Direction::RecvOnly | Direction::SendRecv
                                ) =>
                        {
                            self.video_in = Some(m.mid);
                        }
                        _ => {}
                    }
                }
                Err(_) => {
                    self.alive = false;
                    return Instant::now() + Duration::from_secs(3600);
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn run(
    sock: UdpSocket,
    addr: SocketAddr,
    rtc: Rtc,
    cfg: TestPeerConfig,
    mut pending: Option<SdpPendingOffer>,
    mut sender: Option<Sender>,
    mut ctl: mpsc::UnboundedReceiver<Ctl>,
    report: Arc<Mutex<Report>>,
) {
    let mut buf = vec![0u8; 65_536];
    let Ok(udp) = quinn_udp::UdpSocketState::new((&sock).into()) else {
        return;
    };
    let mut c = Client {
        sock,
        udp,
        addr,
        rtc,
        cfg,
        report,
        in_count: 0,
        in_dropped: 0,
        out_count: 0,
        out_dropped: 0,
        last_frame: None,
        connected: false,
        keyframe_asked: Vec::new(),
        video_in: None,
        alive: true,
    };
    loop {
        let timeout = c.drain();
        if !c.alive || !c.rtc.is_alive() {
            return;
        }
        let asked = std::mem::take(&mut c.keyframe_asked);
        if let Some(s) = sender.as_mut() {
            for rid in asked {
                let now = Instant::now();
                let gap = c.cfg.keyframe_request_gap;
                if s.last_honoured
                    .is_some_and(|t| now.saturating_duration_since(t) < gap)
                {
                    c.report.lock().keyframe_requests_ignored += 1;
                    continue;
                }
                s.last_honoured = Some(now);
                match rid {
                    Some(r) if c.cfg.keyframe_per_encoding => s.keyframe_for.push(r),
                    _ => s.force_keyframe = true,
                }
            }
        }
        let mut wake = timeout;
        if let (Some(s), true) = (sender.as_ref(), c.connected) {
            if s.video.is_some() {
                wake = wake.min(s.next_video);
            }
            if s.audio.is_some() {
                wake = wake.min(s.next_audio);
            }
        }
        tokio::select! {
            msg = ctl.recv() => match msg {
                Some(Ctl::Answer(sdp, reply)) => {
                    let r = match (pending.take(), SdpAnswer::from_sdp_string(&sdp)) {
                        (Some(p), Ok(a)) => c.rtc.sdp_api().accept_answer(p, a).map_err(|e| e.to_string()),
                        (None, _) => Err("no offer pending".to_string()),
                        (_, Err(e)) => Err(e.to_string()),
                    };
                    let _ = reply.send(r);
                }
                Some(Ctl::IceRestart(reply)) => {
                    let mut api = c.rtc.sdp_api();
                    api.ice_restart(true);
                    let r = match api.apply() {
                        Some((offer, p)) => {
                            pending = Some(p);
                            Ok(offer.to_sdp_string())
                        }
                        None => Err("nothing to offer".to_string()),
                    };
                    let _ = reply.send(r);
                }
                Some(Ctl::Pli(reply)) => {
                    let r = match c.video_in.and_then(|mid| c.rtc.writer(mid)) {
                        Some(mut w) => w
                            .request_keyframe(None, str0m::media::KeyframeRequestKind::Pli)
                            .map_err(|e| e.to_string()),
                        None => Err("no video received".to_string()),
                    };
                    let _ = reply.send(r);
                }
                Some(Ctl::Remb(bps, reply)) => {
                    let r = match c.video_in {
                        Some(mid) => {
                            let mut api = c.rtc.direct_api();
                            match api.stream_rx_by_mid(mid, None) {
                                Some(rx) => {
                                    rx.request_remb(str0m::bwe::Bitrate::bps(bps));
                                    Ok(())
                                }
                                None => Err("no video stream yet".to_string()),
                            }
                        }
                        None => Err("no video received".to_string()),
                    };
                    let _ = reply.send(r);
                }
                Some(Ctl::IncomingLoss(loss)) => {
                    c.cfg.drop_incoming = loss;
                    c.in_count = 0;
                    c.in_dropped = 0;
                }
                Some(Ctl::Close) | None => {
                    c.rtc.disconnect();
                    c.drain();
                    return;
                }
            },
            r = c.sock.readable() => {
                if r.is_err() {
                    continue;
                }
                let mut meta = [quinn_udp::RecvMeta::default()];
                let got = {
                    let mut bufs = [std::io::IoSliceMut::new(&mut buf)];
                    let (sock, udp) = (&c.sock, &c.udp);
                    sock.try_io(tokio::io::Interest::READABLE, || udp.recv(sock.into(), &mut bufs, &mut meta))
                };
                let Ok(n) = got else { continue };
                for m in meta.iter().take(n) {
                    let Some(run) = buf.get(..m.len) else { continue };
                    for data in run.chunks(m.stride.max(1)) {
                        if is_rtp(data) && should_drop(&c.cfg.drop_incoming, &mut c.in_count, &mut c.in_dropped) {
                            c.report.lock().rtp_dropped += 1;
                            continue;
                        }
                        let Ok(contents) = data.try_into() else { continue };
                        let input = Input::Receive(Instant::now(), Receive {
                            proto: Protocol::Udp, source: m.addr, destination: c.addr, contents,
                        });
                        if c.rtc.handle_input(input).is_err() {
                            return;
                        }
                        // str0m wants its output drained after every input.
                        c.drain();
                    }
                }
            }
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {
                let now = Instant::now();
                let mut wrote = false;
                if let (Some(s), true) = (sender.as_mut(), c.connected) {
                    if s.video.is_some() && now >= s.next_video {
                        send_video(&mut c, s, now);
                        wrote = true;
                    } else if s.audio.is_some() && now >= s.next_audio {
                        send_audio(&mut c, s, now);
                        wrote = true;
                    }
                }
                if !wrote && c.rtc.handle_input(Input::Timeout(now)).is_err() {
                    return;
                }
            }
        }
    }
}

fn record(r: &mut Report, d: &str0m::media::MediaData, last: &mut Option<(u8, u32)>) {
    r.bytes_received += d.data.len() as u64;
    let parsed = parse_tail(&d.data);
    if let Some((_, _, sent)) = parsed {
        let now = Instant::now()
            .saturating_duration_since(epoch())
            .as_micros() as u64;
        if r.delays_us.len() < 200_000 {
            r.delays_us.push(now.saturating_sub(sent));
        }
    }
    if d.params.spec().codec.is_audio() {
        r.audio_frames += 1;
        return;
    }
    r.video_frames += 1;
    let key = d.is_keyframe();
    if key {
        r.video_keyframes += 1;
    }
    r.first_video_keyframe.get_or_insert(key);
    if !d.contiguous {
        r.video_gaps += 1;
    }
    if let Some((enc, n, _)) = parsed {
        if let Some((le, ln)) = *last
            && le == enc
            && n > ln
        {
            r.video_frames_missing += u64::from(n - ln - 1);
        }
        *last = Some((enc, n));
        r.video_encoding = Some(enc);
    }
}

/// The synthetic fields, as ASCII hex at the end of every frame so that no codec
/// framing (H.264 start codes!) can be imitated: encoding (2), frame number (8),
/// send time in microseconds (16).
const TAIL: usize = 26;

fn parse_tail(data: &[u8]) -> Option<(u8, u32, u64)> {
    let start = data.len().checked_sub(TAIL)?;
    let tail = std::str::from_utf8(data.get(start..)?).ok()?;
    let enc = u8::from_str_radix(tail.get(0..2)?, 16).ok()?;
    let n = u32::from_str_radix(tail.get(2..10)?, 16).ok()?;
    let t = u64::from_str_radix(tail.get(10..26)?, 16).ok()?;
    Some((enc, n, t))
}

fn frame_bytes(len: usize, key: bool, media: Media, enc: u8, n: u64) -> Vec<u8> {
    let mut v: Vec<u8> = match (media, key) {
        (Media::Opus, _) => vec![0xfc],
        // VP8 frame tag: bit 0 clear = keyframe (what str0m's depacketizer reads),
        // then the keyframe start code and a 640x480 size.
        (Media::Vp8, true) => vec![0x10, 0, 0, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01],
        (Media::Vp8, false) => vec![0x11, 0, 0],
        // Annex B: SPS, PPS and an IDR slice; or a non-IDR slice.
        (Media::H264, true) => vec![
            0, 0, 0, 1, 0x67, 0x42, 0xe0, 0x1f, 0xaa, 0, 0, 0, 1, 0x68, 0xce, 0x3c, 0x80, 0, 0, 0,
            1, 0x65, 0x88,
        ],
        (Media::H264, false) => vec![0, 0, 0, 1, 0x41, 0x9a],
    };
    let fill = len.saturating_sub(v.len() + TAIL);
    v.extend(std::iter::repeat_n(0xaa, fill));
    let now = Instant::now()
        .saturating_duration_since(epoch())
        .as_micros() as u64;
    v.extend(format!("{enc:02x}{:08x}{now:016x}", n as u32).into_bytes());
    v
}

#[derive(Debug, Clone, Copy)]
enum Media {
    Opus,
    Vp8,
    H264,
}

fn send_video(c: &mut Client, s: &mut Sender, now: Instant) {
    let Some(mid) = s.video else { return };
    let fps = c.cfg.fps.max(1);
    s.next_video += Duration::from_secs(1) / fps;
    if s.next_video < now {
        s.next_video = now;
    }
    let periodic = s.force_keyframe
        || s.frame
            .is_multiple_of(u64::from(c.cfg.keyframe_every.max(1)));
    s.force_keyframe = false;
    let owed = std::mem::take(&mut s.keyframe_for);
    let time = MediaTime::from_90khz(s.frame * 90_000 / u64::from(fps));
    let encodings: Vec<Option<Rid>> = if s.rids.is_empty() {
        vec![None]
    } else {
        s.rids.iter().copied().map(Some).collect()
    };
    let mut size = (c.cfg.video_bitrate / 8 / u64::from(fps)) as usize;
    let want = if c.cfg.h264 {
        str0m::format::Codec::H264
    } else {
        str0m::format::Codec::Vp8
    };
    for (i, rid) in encodings.into_iter().enumerate() {
        let key = periodic || rid.is_some_and(|r| owed.contains(&r));
        let len = if key { size * 3 } else { size };
        let media = if c.cfg.h264 { Media::H264 } else { Media::Vp8 };
        let data = frame_bytes(len, key, media, i as u8, s.frame);
        let Some(w) = c.rtc.writer(mid) else { return };
        let pt = w
            .payload_params()
            .find(|p| p.spec().codec == want)
            .map(|p| p.pt());
        let Some(pt) = pt else { return };
        let w = match rid {
            Some(r) => w.rid(r),
            None => w,
        };
        let _ = w.write(pt, now, time, data);
        size /= 4;
        // Each write is a mutation: drain before the next one.
        c.drain();
    }
    s.frame += 1;
    c.report.lock().frames_sent += 1;
}

fn send_audio(c: &mut Client, s: &mut Sender, now: Instant) {
    let Some(mid) = s.audio else { return };
    s.next_audio += Duration::from_millis(20);
    if s.next_audio < now {
        s.next_audio = now;
    }
    let time = MediaTime::new(
        s.audio_frame * 960,
        str0m::media::Frequency::FORTY_EIGHT_KHZ,
    );
    let data = frame_bytes(80, false, Media::Opus, 0, s.audio_frame);
    s.audio_frame += 1;
    let Some(w) = c.rtc.writer(mid) else { return };
    let pt = w
        .payload_params()
        .find(|p| p.spec().codec == str0m::format::Codec::Opus)
        .map(|p| p.pt());
    let Some(pt) = pt else { return };
    let _ = w.write(pt, now, time, data);
    c.drain();
}
