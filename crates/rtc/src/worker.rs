//! One media worker: a thread with its own current-thread runtime that owns a UDP
//! socket per host address, every str0m peer of the rooms pinned to it, and the
//! forwarding between them.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::RwLock;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::{
    Config, Error, Kind, Layer, ParticipantRef, PeerEvent, PeerStats, PublishOptions, SfuEvent,
    StreamInfo, SubscribeOptions, TapFrame,
};

pub(crate) type Reply<T> = oneshot::Sender<Result<T, Error>>;

pub(crate) enum Command {
    Publish {
        room: String,
        id: String,
        owner: ParticipantRef,
        offer_sdp: String,
        opts: PublishOptions,
        events: mpsc::UnboundedSender<PeerEvent>,
        reply: Reply<String>,
    },
    Subscribe {
        room: String,
        id: String,
        subscriber: ParticipantRef,
        offer_sdp: Option<String>,
        opts: SubscribeOptions,
        events: mpsc::UnboundedSender<PeerEvent>,
        reply: Reply<(String, String)>,
    },
    Answer {
        id: String,
        sdp: String,
        reply: Reply<()>,
    },
    Offer {
        id: String,
        sdp: String,
        reply: Reply<String>,
    },
    Candidate {
        id: String,
        line: String,
        reply: Reply<()>,
    },
    IceRestart {
        id: String,
        reply: Reply<String>,
    },
    Close {
        id: String,
        reply: Reply<()>,
    },
    SetLayer {
        id: String,
        layer: Layer,
        reply: Reply<()>,
    },
    Pause {
        id: String,
        kind: Kind,
        paused: bool,
        reply: Reply<()>,
    },
    SwitchSource {
        id: String,
        kind: Kind,
        from: String,
        reply: Reply<()>,
    },
    Tap {
        id: String,
        sink: mpsc::Sender<TapFrame>,
        reply: Reply<()>,
    },
}

/// What workers publish for synchronous readers: ready streams per room and
/// per-peer statistics.
#[derive(Default)]
pub(crate) struct Directory {
    /// Every worker's forwarding delays (video frames, per subscriber).
    pub(crate) forward_delay: crate::delay::DelayHistogram,
    streams: RwLock<HashMap<String, Vec<StreamInfo>>>,
    stats: RwLock<HashMap<String, PeerStats>>,
    placement: RwLock<Placement>,
}

/// Which worker hosts which room and peer. A room stays on its worker while it has
/// peers, so forwarding within a room never crosses threads.
#[derive(Default)]
struct Placement {
    rooms: HashMap<String, (usize, usize)>,
    peers: HashMap<String, (String, usize)>,
}

impl Directory {
    /// Reserves `id` in `room`, choosing the least-loaded worker for a new room.
    pub(crate) fn claim(&self, room: &str, id: &str, loads: &[usize]) -> Result<usize, Error> {
        let mut p = self.placement.write();
        if p.peers.contains_key(id) {
            return Err(Error::DuplicateId(id.to_string()));
        }
        let w = match p.rooms.get_mut(room) {
            Some((w, n)) => {
                *n += 1;
                *w
            }
            None => {
                let w = loads
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, l)| **l)
                    .map(|(i, _)| i)
                    .unwrap_or(0);
                p.rooms.insert(room.to_string(), (w, 1));
                w
            }
        };
        p.peers.insert(id.to_string(), (room.to_string(), w));
        Ok(w)
    }

    pub(crate) fn release(&self, id: &str) {
        let mut p = self.placement.write();
        if let Some((room, _)) = p.peers.remove(id) {
            let empty = match p.rooms.get_mut(&room) {
                Some((_, n)) => {
                    *n = n.saturating_sub(1);
                    *n == 0
                }
                None => false,
            };
            if empty {
                p.rooms.remove(&room);
            }
        }
        self.stats.write().remove(id);
    }

    /// Inserts or replaces a ready stream.
    pub(crate) fn put_stream(&self, info: StreamInfo) {
        let mut streams = self.streams.write();
        let list = streams.entry(info.room.clone()).or_default();
        match list.iter_mut().find(|s| s.id == info.id) {
            Some(s) => *s = info,
            None => list.push(info),
        }
    }

    pub(crate) fn remove_stream(&self, room: &str, id: &str) {
        let mut streams = self.streams.write();
        if let Some(list) = streams.get_mut(room) {
            list.retain(|s| s.id != id);
            if list.is_empty() {
                streams.remove(room);
            }
        }
    }

    pub(crate) fn put_stats(&self, id: &str, stats: PeerStats) {
        self.stats.write().insert(id.to_string(), stats);
    }

    pub(crate) fn worker_of(&self, id: &str) -> Option<usize> {
        self.placement.read().peers.get(id).map(|(_, w)| *w)
    }

    pub(crate) fn streams(&self, room: &str) -> Vec<StreamInfo> {
        self.streams.read().get(room).cloned().unwrap_or_default()
    }

    pub(crate) fn stats(&self, id: &str) -> Option<PeerStats> {
        self.stats.read().get(id).cloned()
    }
}

pub(crate) struct Handle {
    pub(crate) local_addrs: Vec<SocketAddr>,
    commands: mpsc::UnboundedSender<Command>,
    load: Arc<AtomicUsize>,
}

impl Handle {
    pub(crate) fn send(&self, cmd: Command) -> Result<(), Error> {
        self.commands.send(cmd).map_err(|_| Error::Closed)
    }

    /// Number of peers on this worker, for room placement.
    pub(crate) fn load(&self) -> usize {
        self.load.load(Ordering::Relaxed)
    }
}

pub(crate) fn spawn(
    index: usize,
    hosts: &[IpAddr],
    port: u16,
    config: &Config,
    directory: Arc<Directory>,
    events: broadcast::Sender<SfuEvent>,
    shutdown: CancellationToken,
) -> Result<Handle, Error> {
    let mut sockets = Vec::new();
    let mut local_addrs = Vec::new();
    for host in hosts {
        let addr = SocketAddr::new(*host, port);
        let s = std::net::UdpSocket::bind(addr).map_err(|source| Error::Bind { addr, source })?;
        enlarge_buffers(&s);
        s.set_nonblocking(true)
            .map_err(|source| Error::Bind { addr, source })?;
        local_addrs.push(
            s.local_addr()
                .map_err(|source| Error::Bind { addr, source })?,
        );
        sockets.push(s);
    }
    let (tx, rx) = mpsc::unbounded_channel::<Command>();
    let load = Arc::new(AtomicUsize::new(0));
    let engine_load = load.clone();
    let config = config.clone();
    let addrs = local_addrs.clone();
    std::thread::Builder::new()
        .name(format!("rtc-worker-{index}"))
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            let rt = match rt {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(worker = index, "cannot build worker runtime: {e}");
                    return;
                }
            };
            rt.block_on(async move {
                let mut socks = Vec::new();
                for s in sockets {
                    match tokio::net::UdpSocket::from_std(s) {
                        Ok(s) => socks.push(Arc::new(s)),
                        Err(e) => {
                            tracing::error!(worker = index, "cannot register socket: {e}");
                            return;
                        }
                    }
                }
                let engine = crate::engine::Engine::new(
                    index,
                    config,
                    socks,
                    addrs,
                    directory,
                    events,
                    engine_load,
                );
                engine.run(rx, shutdown).await;
            });
        })
        .map_err(Error::Spawn)?;
    Ok(Handle {
        local_addrs,
        commands: tx,
        load,
    })
}

/// One socket carries every peer of a worker, so a burst (a keyframe to fifty
/// subscribers) must fit in the kernel's buffers; the defaults (~200 KiB) do not.
/// The kernel may cap the request (net.core.wmem_max / rmem_max); that is logged
/// and tolerated.
fn enlarge_buffers(s: &std::net::UdpSocket) {
    const WANT: usize = 4 << 20;
    let sock = socket2::SockRef::from(s);
    if let Err(e) = sock.set_send_buffer_size(WANT) {
        tracing::debug!("cannot enlarge UDP send buffer: {e}");
    }
    if let Err(e) = sock.set_recv_buffer_size(WANT) {
        tracing::debug!("cannot enlarge UDP receive buffer: {e}");
    }
}

/// Turns a trickled candidate (W3C JSON, bare `candidate:` line, or OWT's
/// `a=candidate:` form) into the bare `candidate:…` text; `None` for the empty
/// end-of-candidates marker.
pub(crate) fn parse_candidate_text(text: &str) -> Result<Option<String>, Error> {
    let text = text.trim();
    let inner = if text.starts_with('{') {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| Error::Candidate(e.to_string()))?;
        match v.get("candidate") {
            Some(serde_json::Value::String(s)) => s.trim().to_string(),
            Some(serde_json::Value::Null) | None => return Ok(None),
            Some(_) => return Err(Error::Candidate("candidate is not a string".into())),
        }
    } else {
        text.to_string()
    };
    let inner = inner.strip_prefix("a=").unwrap_or(&inner).trim();
    if inner.is_empty() {
        return Ok(None);
    }
    if !inner.starts_with("candidate:") {
        return Err(Error::Candidate(format!("not a candidate line: {inner}")));
    }
    Ok(Some(inner.to_string()))
}

#[cfg(test)]
mod tests {
    use super::parse_candidate_text;
    use proptest::prelude::*;

    #[test]
    fn candidate_forms() {
        let line = "candidate:1 1 udp 2122260223 192.0.2.10 54321 typ host";
        let json = format!(r#"{{"candidate":"{line}","sdpMid":"0","sdpMLineIndex":0}}"#);
        assert_eq!(parse_candidate_text(&json).unwrap().as_deref(), Some(line));
        assert_eq!(parse_candidate_text(line).unwrap().as_deref(), Some(line));
        let owt = format!("a={line}");
        assert_eq!(parse_candidate_text(&owt).unwrap().as_deref(), Some(line));
        assert_eq!(parse_candidate_text(r#"{"candidate":""}"#).unwrap(), None);
        assert_eq!(parse_candidate_text(r#"{"candidate":null}"#).unwrap(), None);
        assert_eq!(parse_candidate_text("").unwrap(), None);
        let err = parse_candidate_text("hello").unwrap_err();
        assert_eq!(
            err.to_string(),
            "bad ICE candidate: not a candidate line: hello"
        );
        assert!(parse_candidate_text(r#"{"candidate":5}"#).is_err());
    }

    proptest! {
        #[test]
        fn any_text_never_panics(s in ".*") {
            let _ = parse_candidate_text(&s);
        }

        #[test]
        fn any_json_object_never_panics(c in ".*", mid in ".*") {
            let v = serde_json::json!({"candidate": c, "sdpMid": mid});
            let _ = parse_candidate_text(&v.to_string());
        }
    }
}
