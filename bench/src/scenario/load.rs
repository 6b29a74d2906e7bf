//! The measuring loop every TS fan-out scenario shares (HTTP, HTSP,
//! HeliosTv): start one anchor client so the channel's source is running,
//! take the server's baseline memory, connect N clients in batches, let
//! them settle, then measure over a fixed window: server CPU from
//! `/proc/<pid>/stat`, RSS growth, bytes each client received, drops
//! counted by the server's metrics and reported by the clients.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::machine::self_cpu;
use crate::server::ServerProcess;

/// What one client reports, updated as it reads.
#[derive(Debug, Default)]
pub struct Counter {
    /// Media bytes received (TS bytes, or muxpkt payload bytes).
    pub bytes: AtomicU64,
    /// Set once the first media bytes arrived.
    pub ready: AtomicBool,
    /// Set when the server ended the stream or the connection failed.
    pub ended: AtomicBool,
    /// Drops the protocol reports to the client (cumulative), if it does.
    pub drops: AtomicU64,
}

impl Counter {
    pub fn add(&self, n: usize) {
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
        if n > 0 && !self.ready.load(Ordering::Relaxed) {
            self.ready.store(true, Ordering::Relaxed);
        }
    }
}

/// Figures of one fan-out size.
#[derive(Debug, Clone)]
pub struct FanoutRun {
    pub n: usize,
    pub window: Duration,
    /// Server CPU over the window, in % of one core.
    pub server_cpu_pct: f64,
    /// Time the server's threads waited for a CPU, % of the window (summed
    /// over threads, so it can pass 100).
    pub server_wait_pct: f64,
    /// The machine's 1-minute load average at the end of the window.
    pub load_average: f64,
    /// This process's CPU over the window (the clients), % of one core.
    pub bench_cpu_pct: f64,
    pub rss_baseline: u64,
    pub rss_loaded: u64,
    /// Bytes each of the N clients received in the window.
    pub bytes: Vec<u64>,
    /// Clients whose stream ended during the run.
    pub ended: usize,
    /// Client-reported drops in the window (summed over clients).
    pub client_drops: u64,
    /// Server metric deltas over the window, by metric name.
    pub server_drops: Vec<(String, f64)>,
}

impl FanoutRun {
    /// RSS growth per client, bytes.
    pub fn rss_per_client(&self) -> f64 {
        (self.rss_loaded as f64 - self.rss_baseline as f64) / self.n.max(1) as f64
    }

    pub fn server_drop_total(&self) -> f64 {
        self.server_drops.iter().map(|(_, v)| v).sum()
    }

    /// Clients that got less than `fraction` of `expected` bytes.
    pub fn short_clients(&self, expected: f64, fraction: f64) -> usize {
        self.bytes
            .iter()
            .filter(|b| (**b as f64) < expected * fraction)
            .count()
    }

    pub fn min_bytes(&self) -> u64 {
        self.bytes.iter().copied().min().unwrap_or(0)
    }

    pub fn mean_bytes(&self) -> f64 {
        self.bytes.iter().sum::<u64>() as f64 / self.bytes.len().max(1) as f64
    }
}

fn snapshot(counters: &[Arc<Counter>]) -> (Vec<u64>, u64) {
    let bytes = counters
        .iter()
        .map(|c| c.bytes.load(Ordering::Relaxed))
        .collect();
    let drops = counters
        .iter()
        .map(|c| c.drops.load(Ordering::Relaxed))
        .sum();
    (bytes, drops)
}

fn metrics(server: &ServerProcess, names: &[&str]) -> Vec<(String, f64)> {
    let text = server.get("/metrics").unwrap_or_default();
    names
        .iter()
        .map(|n| (n.to_string(), crate::server::metric_sum(&text, n)))
        .collect()
}

/// Runs one fan-out size against `server`. `spawn_client(counter)` must
/// return a future that connects, reads until the connection ends, and
/// updates the counter; it is aborted at the end.
pub fn measure<F, Fut>(
    rt: &tokio::runtime::Runtime,
    server: &ServerProcess,
    n: usize,
    window: Duration,
    drop_metrics: &[&str],
    spawn_client: F,
) -> anyhow::Result<FanoutRun>
where
    F: Fn(Arc<Counter>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut tasks = tokio::task::JoinSet::new();
    let _guard = rt.enter();

    // The anchor keeps the source running, so the baseline includes it.
    let anchor = Arc::new(Counter::default());
    tasks.spawn(spawn_client(anchor.clone()));
    wait_until(Duration::from_secs(20), || {
        anchor.ready.load(Ordering::Relaxed)
    });
    if !anchor.ready.load(Ordering::Relaxed) {
        tasks.abort_all();
        bail!(
            "the first client got no media within 20 s:\n{}",
            server.log_tail()
        );
    }
    std::thread::sleep(Duration::from_secs(2));
    let rss_baseline = server.rss();

    let counters: Vec<Arc<Counter>> = (0..n).map(|_| Arc::new(Counter::default())).collect();
    // Batches keep the accept backlog from overflowing (a lost SYN costs 1 s).
    for batch in counters.chunks(50) {
        for c in batch {
            tasks.spawn(spawn_client(c.clone()));
        }
        wait_until(Duration::from_secs(10), || {
            batch
                .iter()
                .all(|c| c.ready.load(Ordering::Relaxed) || c.ended.load(Ordering::Relaxed))
        });
    }
    wait_until(Duration::from_secs(10), || {
        counters
            .iter()
            .all(|c| c.ready.load(Ordering::Relaxed) || c.ended.load(Ordering::Relaxed))
    });
    std::thread::sleep(Duration::from_secs(2));

    let t0 = Instant::now();
    let cpu0 = server.cpu();
    let wait0 = server.waited();
    let bench0 = self_cpu();
    let (bytes0, drops0) = snapshot(&counters);
    let m0 = metrics(server, drop_metrics);
    let mut rss_loaded = 0;
    // Sample memory through the window; report the peak.
    while t0.elapsed() < window {
        std::thread::sleep(Duration::from_millis(250).min(window.saturating_sub(t0.elapsed())));
        rss_loaded = rss_loaded.max(server.rss());
    }
    let cpu1 = server.cpu();
    let wait1 = server.waited();
    let bench1 = self_cpu();
    let (bytes1, drops1) = snapshot(&counters);
    let elapsed = t0.elapsed();
    let m1 = metrics(server, drop_metrics);
    tasks.abort_all();

    let secs = elapsed.as_secs_f64();
    Ok(FanoutRun {
        n,
        window: elapsed,
        server_cpu_pct: (cpu1.saturating_sub(cpu0)).as_secs_f64() / secs * 100.0,
        server_wait_pct: (wait1.saturating_sub(wait0)).as_secs_f64() / secs * 100.0,
        load_average: crate::machine::load_average(),
        bench_cpu_pct: (bench1.saturating_sub(bench0)).as_secs_f64() / secs * 100.0,
        rss_baseline,
        rss_loaded,
        bytes: bytes1.iter().zip(&bytes0).map(|(a, b)| a - b).collect(),
        ended: counters
            .iter()
            .filter(|c| c.ended.load(Ordering::Relaxed))
            .count(),
        client_drops: drops1.saturating_sub(drops0),
        server_drops: m1
            .iter()
            .zip(&m0)
            .map(|((name, a), (_, b))| (name.clone(), a - b))
            .collect(),
    })
}

/// Polls `done` every 50 ms until it holds or `limit` passes.
pub fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A runtime for the clients: as many workers as cores.
pub fn client_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
