//! Load generator for the SFU (feature `loadtest`), driven by the benchmark harness
//! in `bench/`. Everything runs on 127.0.0.1 in this process: an [`Sfu`] with its
//! own worker threads, and str0m [`TestPeer`]s on the caller's tokio runtime.
//!
//! Two scenarios:
//! * [`fan_out`]: one publisher (video at `video_bitrate` + Opus) to N subscribers;
//! * [`rooms`]: R rooms of 4 participants, each publishing and receiving the
//!   other three.
//!
//! Figures: frame loss seen by subscribers, SFU CPU time (only the `rtc-worker-*`
//! threads, from `/proc/self/task`) per forwarded down-track and second,
//! forwarding delay percentiles (sender's clock to receiver's, same process), and
//! resident memory growth per peer. The memory figure covers both ends of each
//! connection (the test peers live in this process too), so it over-states the
//! SFU's share; it is reported per str0m instance (SFU side + client side).

use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::testpeer::{Report, TestPeer, TestPeerConfig};
use crate::{Config, Error, ParticipantRef, PublishOptions, Sfu, SubscribeOptions};

#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// How long media is measured once every peer is connected.
    pub duration: Duration,
    pub video_bitrate: u64,
    pub fps: u32,
    /// SFU media workers (0 = one per core).
    pub workers: usize,
    /// Connection set-up limit.
    pub setup_timeout: Duration,
    /// CPUs for the SFU's worker threads (empty: no pinning). The caller
    /// pins its own threads (the test peers) to the other CPUs, so that the
    /// load generator does not steal the workers' core and the workers'
    /// CPU time is theirs alone.
    pub sfu_cpus: Vec<usize>,
}

impl Default for LoadConfig {
    fn default() -> Self {
        LoadConfig {
            duration: Duration::from_secs(10),
            video_bitrate: 1_500_000,
            fps: 30,
            workers: 0,
            setup_timeout: Duration::from_secs(30),
            sfu_cpus: Vec::new(),
        }
    }
}

/// The figures of one run; serialisable for the harness's JSON output.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub scenario: String,
    pub publishers: usize,
    pub subscriptions: usize,
    /// Video + audio down-tracks being forwarded.
    pub down_tracks: usize,
    pub seconds: f64,
    pub video_frames_sent: u64,
    pub video_frames_received: u64,
    pub audio_frames_received: u64,
    /// Video frames missing at receivers / frames expected.
    pub video_loss: f64,
    /// End to end: publisher's send to receiver's depacketised frame, both
    /// test peers' work and scheduling included.
    pub delay_p50_ms: f64,
    pub delay_p99_ms: f64,
    /// Inside the SFU: a frame's last packet in to its packets out, per
    /// subscriber ([`Sfu::forward_delays`]).
    pub sfu_delay_p50_ms: f64,
    pub sfu_delay_p99_ms: f64,
    /// SFU worker CPU seconds over the measurement window.
    pub sfu_cpu_seconds: f64,
    /// SFU CPU microseconds per forwarded down-track per second of media.
    pub cpu_us_per_down_track_second: f64,
    pub rss_before_bytes: u64,
    pub rss_after_bytes: u64,
    /// RSS growth / number of str0m instances (SFU side and client side).
    pub memory_per_peer_bytes: u64,
    /// Subscriptions that never connected within the set-up limit.
    pub failed_setups: usize,
}

/// One publisher to `subscribers` receivers in one room.
pub async fn fan_out(subscribers: usize, cfg: &LoadConfig) -> Result<LoadReport, Error> {
    let stop = CancellationToken::new();
    let sfu = start(cfg, &stop)?;
    let rss_before = rss_bytes();
    let publisher = publish(&sfu, "load", "p0", cfg).await?;
    let mut receivers = Vec::with_capacity(subscribers);
    for i in 0..subscribers {
        receivers.push(subscribe(&sfu, "load", &format!("s{i}"), &publisher.1).await?);
    }
    let failed = wait_connected(&receivers, cfg.setup_timeout).await;
    let peers = 2 * (1 + subscribers);
    let r = measure(
        &sfu,
        "fan-out",
        &[publisher.0],
        &receivers,
        2 * subscribers,
        peers,
        rss_before,
        failed,
        cfg,
    )
    .await;
    stop.cancel();
    Ok(r)
}

/// `count` rooms of four participants, everyone receiving everyone else.
pub async fn rooms(count: usize, cfg: &LoadConfig) -> Result<LoadReport, Error> {
    let stop = CancellationToken::new();
    let sfu = start(cfg, &stop)?;
    let rss_before = rss_bytes();
    let mut publishers = Vec::new();
    let mut receivers = Vec::new();
    for room in 0..count {
        let name = format!("room-{room}");
        let mut ids = Vec::new();
        for p in 0..4 {
            let (peer, id) = publish(&sfu, &name, &format!("r{room}p{p}"), cfg).await?;
            publishers.push(peer);
            ids.push(id);
        }
        for p in 0..4 {
            for (q, id) in ids.iter().enumerate() {
                if p != q {
                    receivers.push(subscribe(&sfu, &name, &format!("r{room}p{p}"), id).await?);
                }
            }
        }
    }
    let failed = wait_connected(&receivers, cfg.setup_timeout).await;
    let peers = 2 * (publishers.len() + receivers.len());
    let down = 2 * receivers.len();
    let r = measure(
        &sfu,
        "rooms-of-4",
        &publishers,
        &receivers,
        down,
        peers,
        rss_before,
        failed,
        cfg,
    )
    .await;
    stop.cancel();
    Ok(r)
}

fn start(cfg: &LoadConfig, stop: &CancellationToken) -> Result<Sfu, Error> {
    let config = Config {
        port_base: 0,
        workers: cfg.workers,
        host_addresses: vec![std::net::IpAddr::from([127, 0, 0, 1])],
        ..Config::default()
    };
    let sfu = Sfu::start(config, stop.clone())?;
    if !cfg.sfu_cpus.is_empty() {
        pin_workers(&cfg.sfu_cpus);
    }
    Ok(sfu)
}

/// Restricts the calling thread to `cpus` (Linux; ignored elsewhere or when
/// the CPUs do not exist). For the harness's own threads.
pub fn pin_current_thread(cpus: &[usize]) {
    pin(nix::unistd::Pid::from_raw(0), cpus);
}

fn pin(tid: nix::unistd::Pid, cpus: &[usize]) {
    let mut set = nix::sched::CpuSet::new();
    for c in cpus {
        if set.set(*c).is_err() {
            return;
        }
    }
    if let Err(e) = nix::sched::sched_setaffinity(tid, &set) {
        tracing::warn!("cannot pin thread {tid} to CPUs {cpus:?}: {e}");
    }
}

/// Pins every `rtc-worker-*` thread of this process to `cpus`.
fn pin_workers(cpus: &[usize]) {
    for (tid, comm) in threads() {
        if comm.starts_with("rtc-worker-") {
            pin(nix::unistd::Pid::from_raw(tid), cpus);
        }
    }
}

/// (thread id, name) of this process's threads (Linux; none elsewhere).
fn threads() -> Vec<(i32, String)> {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let tid = e.file_name().to_str()?.parse().ok()?;
            let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
            Some((tid, comm.trim().to_string()))
        })
        .collect()
}

fn peer_config(cfg: &LoadConfig) -> TestPeerConfig {
    TestPeerConfig {
        video_bitrate: cfg.video_bitrate,
        fps: cfg.fps,
        // Every 2 s, like a real encoder; joins ask for extra ones.
        keyframe_every: cfg.fps.saturating_mul(2).max(1),
        ..TestPeerConfig::default()
    }
}

async fn publish(
    sfu: &Sfu,
    room: &str,
    who: &str,
    cfg: &LoadConfig,
) -> Result<(TestPeer, String), Error> {
    let (peer, offer) = TestPeer::publisher(peer_config(cfg))
        .await
        .map_err(|e| Error::Sdp(e.to_string()))?;
    let owner = ParticipantRef {
        id: who.to_string(),
        username: who.to_string(),
    };
    let mut p = sfu
        .publish(room, owner, offer, PublishOptions::default())
        .await?;
    peer.accept_answer(&p.answer_sdp)
        .await
        .map_err(Error::Sdp)?;
    let limit = tokio::time::timeout(cfg.setup_timeout, async {
        while let Some(ev) = p.events.recv().await {
            match ev {
                crate::PeerEvent::Ready => return Ok(()),
                crate::PeerEvent::Failed(r) | crate::PeerEvent::Closed(r) => return Err(r),
                _ => {}
            }
        }
        Err("publication ended".to_string())
    })
    .await;
    match limit {
        Ok(Ok(())) => Ok((peer, p.id)),
        Ok(Err(r)) => Err(Error::Sdp(r)),
        Err(_) => Err(Error::Sdp("publication did not become ready".into())),
    }
}

async fn subscribe(sfu: &Sfu, room: &str, who: &str, stream: &str) -> Result<TestPeer, Error> {
    let me = ParticipantRef {
        id: who.to_string(),
        username: who.to_string(),
    };
    let sub = sfu
        .subscribe(room, me, SubscribeOptions::both(stream))
        .await?;
    let (peer, answer) = TestPeer::receiver_answering(&sub.sdp, TestPeerConfig::default())
        .await
        .map_err(|e| Error::Sdp(e.to_string()))?;
    sfu.remote_answer(&sub.id, answer).await?;
    Ok(peer)
}

async fn wait_connected(receivers: &[TestPeer], limit: Duration) -> usize {
    let end = Instant::now() + limit;
    for r in receivers {
        let left = end.saturating_duration_since(Instant::now());
        r.wait_for(left, |x| x.video_frames > 0).await;
    }
    receivers
        .iter()
        .filter(|r| r.report().video_frames == 0)
        .count()
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    sfu: &Sfu,
    scenario: &str,
    publishers: &[TestPeer],
    receivers: &[TestPeer],
    down_tracks: usize,
    peers: usize,
    rss_before: u64,
    failed: usize,
    cfg: &LoadConfig,
) -> LoadReport {
    let sent0: u64 = publishers.iter().map(|p| p.report().frames_sent).sum();
    let before: Vec<Report> = receivers.iter().map(|r| r.report()).collect();
    let cpu0 = worker_cpu_seconds();
    let inside0 = sfu.forward_delays();
    let t0 = Instant::now();
    tokio::time::sleep(cfg.duration).await;
    let secs = t0.elapsed().as_secs_f64();
    let cpu = worker_cpu_seconds() - cpu0;
    let inside = sfu.forward_delays().since(&inside0);
    let inside_ms = |q: f64| {
        inside
            .percentile(q)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    let sent1: u64 = publishers.iter().map(|p| p.report().frames_sent).sum();
    let after: Vec<Report> = receivers.iter().map(|r| r.report()).collect();
    let rss_after = rss_bytes();

    let mut video = 0u64;
    let mut audio = 0u64;
    let mut missing = 0u64;
    let mut delays = Vec::new();
    for (b, a) in before.iter().zip(&after) {
        video += a.video_frames.saturating_sub(b.video_frames);
        audio += a.audio_frames.saturating_sub(b.audio_frames);
        missing += a
            .video_frames_missing
            .saturating_sub(b.video_frames_missing);
        delays.extend(a.delays_us.iter().skip(b.delays_us.len()).copied());
    }
    delays.sort_unstable();
    let pct = |q: f64| -> f64 {
        if delays.is_empty() {
            return 0.0;
        }
        let i = ((delays.len() as f64 - 1.0) * q).round() as usize;
        delays.get(i).copied().unwrap_or(0) as f64 / 1000.0
    };
    let expected = video + missing;
    LoadReport {
        scenario: scenario.to_string(),
        publishers: publishers.len(),
        subscriptions: receivers.len(),
        down_tracks,
        seconds: secs,
        video_frames_sent: sent1.saturating_sub(sent0),
        video_frames_received: video,
        audio_frames_received: audio,
        video_loss: if expected == 0 {
            0.0
        } else {
            missing as f64 / expected as f64
        },
        delay_p50_ms: pct(0.5),
        delay_p99_ms: pct(0.99),
        sfu_delay_p50_ms: inside_ms(0.5),
        sfu_delay_p99_ms: inside_ms(0.99),
        sfu_cpu_seconds: cpu,
        cpu_us_per_down_track_second: if down_tracks == 0 || secs <= 0.0 {
            0.0
        } else {
            cpu * 1e6 / (down_tracks as f64 * secs)
        },
        rss_before_bytes: rss_before,
        rss_after_bytes: rss_after,
        memory_per_peer_bytes: rss_after.saturating_sub(rss_before) / peers.max(1) as u64,
        failed_setups: failed,
    }
}

/// Resident set size of this process, from `/proc/self/status` (0 elsewhere).
fn rss_bytes() -> u64 {
    let Ok(s) = std::fs::read_to_string("/proc/self/status") else {
        return 0;
    };
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// CPU seconds used so far by the SFU's worker threads (Linux; 0 elsewhere),
/// from the scheduler's nanosecond run-time account (`schedstat`), not the
/// 10 ms ticks of `stat`: a worker at 20 % of a core over 5 s is only 100
/// ticks.
fn worker_cpu_seconds() -> f64 {
    let mut ns = 0u64;
    for (tid, comm) in threads() {
        if !comm.starts_with("rtc-worker-") {
            continue;
        }
        let stat =
            std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).unwrap_or_default();
        ns += stat
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    ns as f64 / 1e9
}

#[cfg(test)]
mod tests {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn small_fan_out_reports_figures() {
        let cfg = super::LoadConfig {
            duration: std::time::Duration::from_secs(2),
            video_bitrate: 300_000,
            workers: 1,
            ..Default::default()
        };
        let r = super::fan_out(3, &cfg).await.unwrap();
        assert_eq!(r.failed_setups, 0, "{r:?}");
        assert!(r.video_frames_received > 0, "{r:?}");
        assert!(r.delay_p99_ms >= r.delay_p50_ms);
    }

    /// Manual run: `cargo test -p switchyard-rtc --features loadtest -- --ignored --nocapture`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore]
    async fn print_figures() {
        let cfg = super::LoadConfig {
            duration: std::time::Duration::from_secs(5),
            workers: 1,
            ..Default::default()
        };
        // LOADTEST_FAN_OUT=N picks the fan-out size (default 20).
        let n = std::env::var("LOADTEST_FAN_OUT")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(20);
        let r = super::fan_out(n, &cfg).await.unwrap();
        println!("{}", serde_json::to_string_pretty(&r).unwrap());
        let r = super::rooms(3, &cfg).await.unwrap();
        println!("{}", serde_json::to_string_pretty(&r).unwrap());
    }
}
