//! Inputs: where a channel's transport stream comes from, and the tasks that
//! read it. A file loops in real time (paced by its PCR, timestamps carried on
//! across the loop so players see one continuous stream); HTTP and UDP/RTP are
//! live and read as fast as they arrive.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio::io::AsyncReadExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Where bytes come from.
#[derive(Debug, Clone)]
pub enum Input {
    /// A TS file, looped in real time.
    File(PathBuf),
    /// A TS held in memory (the demo channels), looped in real time.
    Memory { name: String, data: Bytes },
    /// HTTP(S) URL of a live TS.
    Http(String),
    /// UDP (raw TS or RTP-wrapped), unicast or multicast.
    Udp { addr: SocketAddr, rtp: bool },
}

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("bad input address {0:?}: {1}")]
    BadAddress(String, String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("HTTP: {0}")]
    Http(String),
    #[error("no data for {0:?}")]
    Stalled(Duration),
    #[error("input ended")]
    Ended,
}

impl Input {
    /// Parse an input address: a path, `file://`, `http(s)://`, `udp://[@]host:port`, `rtp://[@]host:port`.
    pub fn parse(s: &str) -> Result<Input, InputError> {
        let bad = |why: &str| InputError::BadAddress(s.to_string(), why.to_string());
        if let Some(rest) = s.strip_prefix("file://") {
            return Ok(Input::File(PathBuf::from(rest)));
        }
        if s.starts_with("http://") || s.starts_with("https://") {
            return Ok(Input::Http(s.to_string()));
        }
        for (scheme, rtp) in [("udp://", false), ("rtp://", true)] {
            if let Some(rest) = s.strip_prefix(scheme) {
                let rest = rest.trim_start_matches('@');
                let rest = rest.split(['?', '/']).next().unwrap_or(rest);
                let addr: SocketAddr = rest
                    .parse()
                    .map_err(|_| bad("expected host:port with a numeric address"))?;
                return Ok(Input::Udp { addr, rtp });
            }
        }
        if s.contains("://") {
            return Err(bad("unknown scheme (use file, http, https, udp or rtp)"));
        }
        Ok(Input::File(PathBuf::from(s)))
    }

    pub fn describe(&self) -> String {
        match self {
            Input::File(p) => format!("file {}", p.display()),
            Input::Memory { name, .. } => format!("embedded {name}"),
            Input::Http(u) => u.clone(),
            Input::Udp { addr, rtp } => format!("{}://{addr}", if *rtp { "rtp" } else { "udp" }),
        }
    }

    pub fn is_looped_file(&self) -> bool {
        matches!(self, Input::File(_) | Input::Memory { .. })
    }
}

/// How long a live input may stay silent before it counts as lost.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Read the input until it fails or `stop` fires, handing each chunk to `sink`.
/// `on_data` is called on the first bytes (to tell readers the source is back).
pub async fn run_input(
    input: &Input,
    stop: &CancellationToken,
    sink: &mut (dyn FnMut(&[u8]) + Send),
) -> Result<(), InputError> {
    match input {
        Input::File(path) => {
            let mut f = tokio::fs::File::open(path).await?;
            let mut data = Vec::new();
            f.read_to_end(&mut data).await?;
            run_looped(Bytes::from(data), stop, sink).await
        }
        Input::Memory { data, .. } => run_looped(data.clone(), stop, sink).await,
        Input::Http(url) => run_http(url, stop, sink).await,
        Input::Udp { addr, rtp } => run_udp(*addr, *rtp, stop, sink).await,
    }
}

async fn run_http(
    url: &str,
    stop: &CancellationToken,
    sink: &mut (dyn FnMut(&[u8]) + Send),
) -> Result<(), InputError> {
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| InputError::Http(e.to_string()))?;
    let resp = tokio::select! {
        r = client.get(url).send() => r.map_err(|e| InputError::Http(e.to_string()))?,
        _ = stop.cancelled() => return Ok(()),
    };
    if !resp.status().is_success() {
        return Err(InputError::Http(format!("status {}", resp.status())));
    }
    let mut body = resp.bytes_stream();
    loop {
        tokio::select! {
            chunk = tokio::time::timeout(STALL_TIMEOUT, body.next()) => match chunk {
                Err(_) => return Err(InputError::Stalled(STALL_TIMEOUT)),
                Ok(None) => return Err(InputError::Ended),
                Ok(Some(Err(e))) => return Err(InputError::Http(e.to_string())),
                Ok(Some(Ok(b))) => sink(&b),
            },
            _ = stop.cancelled() => return Ok(()),
        }
    }
}

async fn run_udp(
    addr: SocketAddr,
    rtp: bool,
    stop: &CancellationToken,
    sink: &mut (dyn FnMut(&[u8]) + Send),
) -> Result<(), InputError> {
    let multicast = addr.ip().is_multicast();
    let bind: SocketAddr = if multicast {
        match addr.ip() {
            IpAddr::V4(_) => SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), addr.port()),
            IpAddr::V6(_) => SocketAddr::new(std::net::Ipv6Addr::UNSPECIFIED.into(), addr.port()),
        }
    } else {
        addr
    };
    let sock = tokio::net::UdpSocket::bind(bind).await?;
    if multicast {
        match addr.ip() {
            IpAddr::V4(g) => sock.join_multicast_v4(g, Ipv4Addr::UNSPECIFIED)?,
            IpAddr::V6(g) => sock.join_multicast_v6(&g, 0)?,
        }
    }
    let mut buf = vec![0u8; 65536];
    loop {
        tokio::select! {
            r = tokio::time::timeout(STALL_TIMEOUT, sock.recv_from(&mut buf)) => match r {
                Err(_) => return Err(InputError::Stalled(STALL_TIMEOUT)),
                Ok(Err(e)) => return Err(e.into()),
                Ok(Ok((n, _))) => {
                    let data = buf.get(..n).unwrap_or(&[]);
                    let payload = if rtp { rtp_payload(data) } else { Some(data) };
                    if let Some(p) = payload {
                        sink(p);
                    }
                }
            },
            _ = stop.cancelled() => return Ok(()),
        }
    }
}

/// The payload of an RTP packet (RFC 3550): past the fixed header, CSRCs and
/// extension, without padding. None when the packet is not RTP version 2.
pub fn rtp_payload(p: &[u8]) -> Option<&[u8]> {
    let first = *p.first()?;
    if first >> 6 != 2 {
        return None;
    }
    let csrc = usize::from(first & 0x0f);
    let mut off = 12 + 4 * csrc;
    if first & 0x10 != 0 {
        let ext_words = u16::from_be_bytes([*p.get(off + 2)?, *p.get(off + 3)?]);
        off += 4 + 4 * usize::from(ext_words);
    }
    let mut end = p.len();
    if first & 0x20 != 0 {
        end = end.checked_sub(usize::from(*p.last()?))?;
    }
    p.get(off..end)
}

/// Pace a TS in real time by its PCR, looping forever. Each loop's PCR/PTS/DTS
/// are shifted by the length of the stream and continuity counters carried on,
/// so a player sees one endless stream.
async fn run_looped(
    data: Bytes,
    stop: &CancellationToken,
    sink: &mut (dyn FnMut(&[u8]) + Send),
) -> Result<(), InputError> {
    const PACKET: usize = 188;
    let start = data.iter().position(|&b| b == 0x47).unwrap_or(0);
    let usable = (data.len() - start) / PACKET * PACKET;
    if usable == 0 {
        return Err(InputError::Ended);
    }
    let data = data.slice(start..start + usable);
    let mut retimer = Retimer::default();
    let mut clock: Option<(Instant, u64)> = None; // wall clock at a PCR (27 MHz)
    let mut out = Vec::with_capacity(PACKET * 64);
    loop {
        for pkt in data.chunks_exact(PACKET) {
            let mut p = [0u8; PACKET];
            p.copy_from_slice(pkt);
            if let Some(pcr) = retimer.rewrite(&mut p) {
                match clock {
                    None => clock = Some((Instant::now(), pcr)),
                    Some((t0, pcr0)) => {
                        let ahead = pcr.saturating_sub(pcr0);
                        let due = t0 + Duration::from_nanos(ahead.saturating_mul(1000) / 27);
                        let now = Instant::now();
                        if due > now {
                            if !out.is_empty() {
                                sink(&out);
                                out.clear();
                            }
                            tokio::select! {
                                _ = tokio::time::sleep_until(due) => {}
                                _ = stop.cancelled() => return Ok(()),
                            }
                        } else if now.duration_since(due) > Duration::from_secs(2) {
                            // We fell far behind (suspended process): restart the clock.
                            clock = Some((now, pcr));
                        }
                    }
                }
            }
            out.extend_from_slice(&p);
            if out.len() >= PACKET * 64 {
                sink(&out);
                out.clear();
            }
        }
        if stop.is_cancelled() {
            return Ok(());
        }
        retimer.next_loop();
    }
}

/// Shifts timestamps and continuity counters of a looped TS.
#[derive(Default)]
struct Retimer {
    /// Added to every PTS/DTS (90 kHz) of the current loop.
    offset: u64,
    /// Smallest and largest (end) timestamps seen in this loop, unshifted.
    first_ts: Option<u64>,
    last_end: u64,
    /// A video PES carries one picture, so its PTS plus the frame step is
    /// where video ends; an audio PES often bundles several frames and its
    /// step overstates the tail (a 200 ms hole at every loop of the demo).
    /// With video present the loop ends where video does, and no earlier
    /// than the last PTS of any stream.
    video_end: Option<u64>,
    last_pts: u64,
    /// Per-PID: last timestamp seen (for the frame duration estimate) and
    /// smallest positive step.
    steps: std::collections::HashMap<u16, (u64, u64)>,
    /// Per-PID continuity: last CC sent, and the shift applied this loop.
    cc: std::collections::HashMap<u16, (u8, u8)>,
    new_loop: bool,
}

const TS_WRAP: u64 = 1 << 33;

impl Retimer {
    fn next_loop(&mut self) {
        let first = self.first_ts.unwrap_or(0);
        let end = match self.video_end {
            Some(v) => v.max(self.last_pts),
            None => self.last_end,
        };
        let span = end.saturating_sub(first).max(90_000 / 25);
        self.offset = self.offset.wrapping_add(span) % TS_WRAP;
        self.first_ts = None;
        self.last_end = 0;
        self.video_end = None;
        self.last_pts = 0;
        self.new_loop = true;
        for v in self.cc.values_mut() {
            v.1 = u8::MAX; // recompute on the next packet of each PID
        }
    }

    fn note_ts(&mut self, pid: u16, ts: u64, video: bool) {
        self.first_ts = Some(self.first_ts.map_or(ts, |f| f.min(ts)));
        let step = match self.steps.get(&pid) {
            Some(&(last, step)) if ts > last => {
                let d = ts - last;
                if step == 0 { d } else { step.min(d) }
            }
            Some(&(_, step)) => step,
            None => 0,
        };
        self.steps.insert(pid, (ts, step));
        self.last_end = self.last_end.max(ts + step);
        self.last_pts = self.last_pts.max(ts);
        if video {
            self.video_end = Some(self.video_end.map_or(ts + step, |v| v.max(ts + step)));
        }
    }

    /// Rewrite one packet in place; returns its PCR (27 MHz, shifted) if it has one.
    fn rewrite(&mut self, p: &mut [u8; 188]) -> Option<u64> {
        let pid = (u16::from(p[1] & 0x1f) << 8) | u16::from(p[2]);
        let afc = (p[3] >> 4) & 0x3;
        let has_payload = afc & 1 == 1;
        if has_payload && pid != 0x1fff {
            let cc_in = p[3] & 0x0f;
            let entry = self
                .cc
                .entry(pid)
                .or_insert((cc_in.wrapping_sub(1) & 0x0f, 0));
            if entry.1 == u8::MAX {
                entry.1 = (entry.0 + 1).wrapping_sub(cc_in) & 0x0f;
            }
            let cc_out = (cc_in + entry.1) & 0x0f;
            entry.0 = cc_out;
            p[3] = (p[3] & 0xf0) | cc_out;
        }
        let mut pcr_out = None;
        let mut payload_start = 4;
        if afc & 2 != 0 {
            let af_len = usize::from(p[4]);
            payload_start = 5 + af_len;
            if af_len >= 7 && p[5] & 0x10 != 0 {
                let base = (u64::from(p[6]) << 25)
                    | (u64::from(p[7]) << 17)
                    | (u64::from(p[8]) << 9)
                    | (u64::from(p[9]) << 1)
                    | (u64::from(p[10]) >> 7);
                let ext = (u64::from(p[10] & 1) << 8) | u64::from(p[11]);
                let base = (base + self.offset) % TS_WRAP;
                p[6] = (base >> 25) as u8;
                p[7] = (base >> 17) as u8;
                p[8] = (base >> 9) as u8;
                p[9] = (base >> 1) as u8;
                p[10] = (((base & 1) as u8) << 7) | (p[10] & 0x7e) | ((ext >> 8) as u8 & 1);
                // Pace on the unwrapped line so a wrap does not stall pacing.
                let unwrapped = base
                    + if base < self.offset % TS_WRAP {
                        TS_WRAP
                    } else {
                        0
                    };
                pcr_out = Some(unwrapped * 300 + ext);
            }
        }
        let pusi = p[1] & 0x40 != 0;
        if pusi && has_payload && payload_start + 14 <= 188 {
            let s = payload_start;
            let is_pes = p[s] == 0 && p[s + 1] == 0 && p[s + 2] == 1;
            let sid = p[s + 3];
            // Stream ids without the optional PES header: padding, private 2, ECM, EMM, DSMCC...
            let has_header = !matches!(sid, 0xbc | 0xbe | 0xbf | 0xf0 | 0xf1 | 0xf2 | 0xf8 | 0xff);
            if is_pes && has_header && p[s + 6] & 0xc0 == 0x80 {
                let flags = p[s + 7] >> 6;
                if flags & 2 != 0 {
                    let pts = read_ts(&p[s + 9..s + 14]);
                    self.note_ts(pid, pts, (0xe0..=0xef).contains(&sid));
                    write_ts(&mut p[s + 9..s + 14], (pts + self.offset) % TS_WRAP);
                }
                if flags == 3 && s + 19 <= 188 {
                    let dts = read_ts(&p[s + 14..s + 19]);
                    write_ts(&mut p[s + 14..s + 19], (dts + self.offset) % TS_WRAP);
                }
            }
        }
        if self.new_loop && pcr_out.is_some() {
            self.new_loop = false;
        }
        pcr_out
    }
}

fn read_ts(b: &[u8]) -> u64 {
    (u64::from(b[0] >> 1 & 0x07) << 30)
        | (u64::from(b[1]) << 22)
        | (u64::from(b[2] >> 1) << 15)
        | (u64::from(b[3]) << 7)
        | u64::from(b[4] >> 1)
}

fn write_ts(b: &mut [u8], ts: u64) {
    b[0] = (b[0] & 0xf1) | (((ts >> 30) as u8 & 0x07) << 1);
    b[1] = (ts >> 22) as u8;
    b[2] = ((ts >> 14) as u8 & 0xfe) | 1;
    b[3] = (ts >> 7) as u8;
    b[4] = ((ts << 1) as u8 & 0xfe) | 1;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_input_addresses() {
        assert!(matches!(Input::parse("/tmp/a.ts").unwrap(), Input::File(_)));
        assert!(matches!(
            Input::parse("http://x/y").unwrap(),
            Input::Http(_)
        ));
        match Input::parse("udp://@239.1.2.3:1234").unwrap() {
            Input::Udp { addr, rtp } => {
                assert_eq!(addr.to_string(), "239.1.2.3:1234");
                assert!(!rtp);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            Input::parse("rtp://127.0.0.1:5000").unwrap(),
            Input::Udp { rtp: true, .. }
        ));
        let err = Input::parse("gopher://x").unwrap_err().to_string();
        assert!(err.contains("unknown scheme"), "{err}");
        let err = Input::parse("udp://nohost").unwrap_err().to_string();
        assert!(err.contains("host:port"), "{err}");
    }

    #[test]
    fn timestamp_roundtrip() {
        let mut b = [0x21u8, 0, 1, 0, 1];
        for ts in [0u64, 1, 90_000, TS_WRAP - 1, 123_456_789] {
            write_ts(&mut b, ts);
            assert_eq!(read_ts(&b), ts);
        }
    }

    #[test]
    fn rtp_payload_skips_header_csrc_and_extension() {
        let mut p = vec![0x80 | 0x10 | 1, 33, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0];
        p.extend_from_slice(&[0, 0, 0, 0]); // one CSRC
        p.extend_from_slice(&[0xbe, 0xde, 0, 1, 9, 9, 9, 9]); // extension of one word
        p.extend_from_slice(&[0x47, 1, 2]);
        assert_eq!(rtp_payload(&p), Some(&[0x47u8, 1, 2][..]));
        assert_eq!(rtp_payload(&[0x47, 0, 0]), None);
    }

    #[tokio::test(start_paused = true)]
    async fn looped_file_keeps_timestamps_and_continuity_going() {
        let data = Bytes::from_static(include_bytes!("../../../demo/channel-2.ts"));
        let stop = CancellationToken::new();
        let mut out: Vec<u8> = Vec::new();
        let len = data.len() / 188 * 188;
        let run = {
            let stop = stop.clone();
            async move {
                let mut sink = |b: &[u8]| {
                    out.extend_from_slice(b);
                    if out.len() > len * 2 + 188 * 100 {
                        stop.cancel();
                    }
                };
                run_looped(data, &stop, &mut sink).await.unwrap();
                out
            }
        };
        let out = run.await;
        // PCRs only ever increase across the loop, and CCs stay continuous.
        let mut last_pcr = 0;
        let mut cc: std::collections::HashMap<u16, u8> = Default::default();
        for p in out.chunks_exact(188) {
            let pid = (u16::from(p[1] & 0x1f) << 8) | u16::from(p[2]);
            if p[3] & 0x10 != 0
                && pid != 0x1fff
                && let Some(prev) = cc.insert(pid, p[3] & 0xf)
            {
                assert_eq!((prev + 1) & 0xf, p[3] & 0xf, "CC break on pid {pid}");
            }
            if p[3] & 0x20 != 0 && p[4] >= 7 && p[5] & 0x10 != 0 {
                let base = (u64::from(p[6]) << 25)
                    | (u64::from(p[7]) << 17)
                    | (u64::from(p[8]) << 9)
                    | (u64::from(p[9]) << 1)
                    | (u64::from(p[10]) >> 7);
                assert!(base > last_pcr, "PCR went back: {base} after {last_pcr}");
                last_pcr = base;
            }
        }
    }
}
