//! Load generation for `switchyard-bench movie`: S sessions of M members
//! each, every member receiving the movie at a given rate, measuring loss
//! and pacing jitter as the clients see them and the CPU the server used.
//!
//! [`run`] drives clients against any server; [`run_local`] also starts an
//! in-process server on its own thread with a current-thread runtime, so
//! that the server's CPU time is one thread's, i.e. one core at most.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::client::{self, Command};
use crate::client_session::{
    ClientEvent, ClientParams, ClientSession, ClientTimers, MovieSelector, Role,
};
use crate::config::Config;
use crate::library::MovieLibrary;
use crate::server;

#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// The server's P0.
    pub server: SocketAddr,
    pub sessions: usize,
    /// Members per session, the leader included.
    pub members: usize,
    /// Rate each member receives, in bit/s: members ask for the interval
    /// `chunk_size × 8 / rate`. The server's `default_interval_us` must not
    /// be above it (the interval rule takes the largest).
    pub rate_bps: u64,
    /// How long each member watches after its Stream Start.
    pub duration: Duration,
    pub movie: MovieSelector,
    /// The server's chunk size, to turn the rate into an interval.
    pub chunk_size: u16,
}

/// What the clients saw. Jitter is each chunk's arrival time minus its
/// ideal time `T0 + (k − 1) × interval`, less the smallest such offset of
/// the member, over all members.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadReport {
    pub sessions: usize,
    pub members: usize,
    /// Members that got a Stream Start.
    pub members_streamed: usize,
    pub interval_us: u32,
    pub received: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    /// lost / (received + lost).
    pub loss: f64,
    pub jitter_p50_us: u64,
    pub jitter_p99_us: u64,
    pub jitter_max_us: u64,
    pub wall: Duration,
    /// CPU time of this whole process (clients, and the server if local).
    pub process_cpu: Duration,
    /// CPU time of the server's thread ([`run_local`] only).
    pub server_cpu: Option<Duration>,
}

impl std::fmt::Display for LoadReport {
    /// One line per figure, for the bench to print as is.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "sessions × members   {} × {} ({} streamed)",
            self.sessions,
            self.members / self.sessions.max(1),
            self.members_streamed
        )?;
        writeln!(f, "interval             {} µs", self.interval_us)?;
        writeln!(
            f,
            "received / lost      {} / {} ({:.4} % loss)",
            self.received,
            self.lost,
            self.loss * 100.0
        )?;
        writeln!(
            f,
            "duplicates / reorder {} / {}",
            self.duplicates, self.out_of_order
        )?;
        writeln!(
            f,
            "jitter p50/p99/max   {} / {} / {} µs",
            self.jitter_p50_us, self.jitter_p99_us, self.jitter_max_us
        )?;
        writeln!(f, "wall                 {:.2} s", self.wall.as_secs_f64())?;
        writeln!(
            f,
            "process CPU          {:.2} s",
            self.process_cpu.as_secs_f64()
        )?;
        match self.server_cpu {
            Some(cpu) => writeln!(
                f,
                "server CPU           {:.2} s (one thread)",
                cpu.as_secs_f64()
            ),
            None => writeln!(f, "server CPU           not measured (remote server)"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("load generator I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Server(#[from] server::Error),
    #[error("no session could be created")]
    NoSession,
}

#[derive(Debug, Default)]
struct Tally {
    members_streamed: usize,
    interval_us: u32,
    received: u64,
    lost: u64,
    duplicates: u64,
    out_of_order: u64,
    jitter_us: Vec<u64>,
}

/// Runs the load against `cfg.server` and reports.
pub async fn run(cfg: LoadConfig) -> Result<LoadReport, LoadError> {
    let started = Instant::now();
    let cpu_before = process_cpu();
    let interval_us =
        u32::try_from(u64::from(cfg.chunk_size) * 8 * 1_000_000 / cfg.rate_bps.max(1))
            .unwrap_or(u32::MAX);
    let tally: Arc<Mutex<Tally>> = Arc::default();
    let mut tasks = tokio::task::JoinSet::new();
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<Option<SocketAddr>>();
    for _ in 0..cfg.sessions {
        let role = Role::Leader {
            server: cfg.server,
            requested_port: 0,
            movie: cfg.movie.clone(),
        };
        let sock = client::bind_client(cfg.server)?;
        tasks.spawn(watch(
            sock,
            role,
            interval_us,
            cfg.duration,
            tally.clone(),
            Some(ready_tx.clone()),
        ));
    }
    drop(ready_tx);
    let mut created = 0;
    while let Some(ready) = ready_rx.recv().await {
        let Some(session) = ready else { continue };
        created += 1;
        for _ in 1..cfg.members {
            let sock = client::bind_client(session)?;
            tasks.spawn(watch(
                sock,
                Role::Member { session },
                interval_us,
                cfg.duration,
                tally.clone(),
                None,
            ));
        }
    }
    while tasks.join_next().await.is_some() {}
    if created == 0 {
        return Err(LoadError::NoSession);
    }
    let mut t = std::mem::take(&mut *tally.lock().map_err(|_| LoadError::NoSession)?);
    t.jitter_us.sort_unstable();
    let pick = |q: f64| -> u64 {
        let n = t.jitter_us.len();
        if n == 0 {
            return 0;
        }
        t.jitter_us[((n as f64 - 1.0) * q).round() as usize]
    };
    let total = t.received + t.lost;
    Ok(LoadReport {
        sessions: cfg.sessions,
        members: cfg.sessions * cfg.members,
        members_streamed: t.members_streamed,
        interval_us: t.interval_us,
        received: t.received,
        lost: t.lost,
        duplicates: t.duplicates,
        out_of_order: t.out_of_order,
        loss: if total == 0 {
            0.0
        } else {
            t.lost as f64 / total as f64
        },
        jitter_p50_us: pick(0.5),
        jitter_p99_us: pick(0.99),
        jitter_max_us: t.jitter_us.last().copied().unwrap_or(0),
        wall: started.elapsed(),
        process_cpu: process_cpu().saturating_sub(cpu_before),
        server_cpu: None,
    })
}

/// One client: registers, watches for `duration` after its Stream Start,
/// quits, and adds its numbers to the tally.
async fn watch(
    sock: tokio::net::UdpSocket,
    role: Role,
    interval_us: u32,
    duration: Duration,
    tally: Arc<Mutex<Tally>>,
    ready: Option<mpsc::UnboundedSender<Option<SocketAddr>>>,
) {
    let params = ClientParams {
        role,
        interval_us,
        timers: ClientTimers::default(),
    };
    let session = ClientSession::new(params, tokio::time::Instant::now().into_std());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let epoch = Instant::now();
    let mut offsets: Vec<i64> = Vec::new();
    let mut interval = 0u64;
    let mut streamed = false;
    let mut ready = ready;
    let session = client::drive(&sock, session, &mut rx, |_, event| match event {
        ClientEvent::SessionReady(addr) => {
            if let Some(r) = ready.take() {
                let _ = r.send(Some(addr));
            }
        }
        ClientEvent::StreamStarted(s) => {
            streamed = true;
            interval = u64::from(s.interval_us);
            let quit = tx.clone();
            tokio::spawn(async move {
                tokio::time::sleep(duration).await;
                let _ = quit.send(Command::Quit);
            });
        }
        ClientEvent::Data { seq, .. } => {
            let arrival = i64::try_from(epoch.elapsed().as_micros()).unwrap_or(i64::MAX);
            let ideal =
                i64::try_from(seq.saturating_sub(1).saturating_mul(interval)).unwrap_or(i64::MAX);
            offsets.push(arrival.saturating_sub(ideal));
        }
        ClientEvent::Finished(_) => {
            if let Some(r) = ready.take() {
                let _ = r.send(None);
            }
        }
        _ => {}
    })
    .await;
    let st = session.stats();
    let min = offsets.iter().copied().min().unwrap_or(0);
    if let Ok(mut t) = tally.lock() {
        t.members_streamed += usize::from(streamed);
        if t.interval_us == 0 {
            t.interval_us = u32::try_from(interval).unwrap_or(u32::MAX);
        }
        t.received += st.received;
        t.lost += st.lost();
        t.duplicates += st.duplicates;
        t.out_of_order += st.out_of_order;
        t.jitter_us
            .extend(offsets.iter().map(|o| o.saturating_sub(min).unsigned_abs()));
    }
}

/// Starts a server in this process (one thread, current-thread runtime)
/// with a synthetic movie long enough for `duration`, runs the load against
/// it, and reports with the server thread's CPU time. Blocking: call it
/// outside any tokio runtime.
pub fn run_local(
    sessions: usize,
    members: usize,
    rate_bps: u64,
    duration: Duration,
) -> Result<LoadReport, LoadError> {
    let chunk_size: u16 = 1316;
    let seconds = duration.as_secs_f64() + 5.0;
    let movie_len = ((rate_bps as f64 / 8.0) * seconds) as usize;
    let movie = Bytes::from(
        (0..movie_len.max(1))
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>(),
    );
    let mut library = MovieLibrary::new();
    library.add_embedded("load.bin", movie);
    let config = Config {
        listen: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
        registration_window: Duration::from_millis(1_500),
        default_interval_us: 1_000,
        min_interval_us: 100,
        max_sessions: sessions.max(1),
        max_pending_per_ip: sessions.max(1),
        max_members: members.max(1),
        chunk_size,
        ..Config::default()
    };
    let sockets_std = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let addr = sockets_std.local_addr()?;
    sockets_std.set_nonblocking(true)?;
    let stop = CancellationToken::new();
    let server_stop = stop.clone();
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let server_thread = std::thread::Builder::new()
        .name("movie-server".into())
        .spawn(move || -> Result<(), LoadError> {
            let _ = tid_tx.send(thread_id());
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let socket = tokio::net::UdpSocket::from_std(sockets_std)?;
                server::serve_on(vec![socket], config, library, server_stop).await?;
                Ok(())
            })
        })?;
    let tid = tid_rx.recv().ok().flatten();
    let server_cpu_before = tid.and_then(thread_cpu);
    let clients = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let cfg = LoadConfig {
        server: addr,
        sessions,
        members,
        rate_bps,
        duration,
        movie: MovieSelector::First,
        chunk_size,
    };
    let result = clients.block_on(run(cfg));
    let server_cpu = tid
        .and_then(thread_cpu)
        .zip(server_cpu_before)
        .map(|(after, before)| after.saturating_sub(before));
    stop.cancel();
    let _ = server_thread.join();
    let mut report = result?;
    report.server_cpu = server_cpu;
    Ok(report)
}

/// The calling thread's kernel id, from `/proc/thread-self` (Linux).
fn thread_id() -> Option<u32> {
    let link = std::fs::read_link("/proc/thread-self").ok()?;
    link.file_name()?.to_str()?.parse().ok()
}

/// utime + stime of a `/proc/.../stat` file, at 100 ticks per second.
fn cpu_from_stat(path: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(path).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

fn thread_cpu(tid: u32) -> Option<Duration> {
    cpu_from_stat(&format!("/proc/self/task/{tid}/stat"))
}

fn process_cpu() -> Duration {
    cpu_from_stat("/proc/self/stat").unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_local_run_streams_to_every_member_and_reports() {
        let report = run_local(2, 3, 2_000_000, Duration::from_millis(800)).unwrap();
        assert_eq!(
            (report.sessions, report.members, report.members_streamed),
            (2, 6, 6)
        );
        assert_eq!(
            report.interval_us, 5_264,
            "2 Mbit/s in chunks of 1316 bytes"
        );
        assert!(report.received > 6 * 100, "{report:?}");
        assert!(
            report.jitter_p50_us <= report.jitter_p99_us
                && report.jitter_p99_us <= report.jitter_max_us
        );
    }
}

#[cfg(test)]
mod full_load {
    /// The benchmark's shape, for a manual look: `cargo test -p
    /// switchyard-movie --release full_load -- --ignored --nocapture`.
    #[test]
    #[ignore = "a benchmark, not a test"]
    fn fifty_sessions_of_ten_at_2_mbit() {
        let report =
            super::run_local(50, 10, 2_000_000, std::time::Duration::from_secs(5)).unwrap();
        println!("{report}");
    }
}
