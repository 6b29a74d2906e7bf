//! `fanout`: one ~5 Mbit/s channel to N HTTP readers of
//! `/stream/channel/{id}` on loopback. A fresh server per N; each reader is
//! a tokio task with a minimal HTTP/1.0 client (1.0 so the body is the bare
//! TS, not chunked), counting body bytes.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::load::{Counter, FanoutRun, client_runtime, measure};
use crate::output::{Plot, Report, Series, Table, Verdict};
use crate::server::ServerProcess;

pub struct FanoutOptions {
    pub readers: Vec<usize>,
    pub seconds: u64,
}

/// Core's drop counters (`crates/core/src/fanout.rs`).
pub const DROP_METRICS: &[&str] = &[
    "switchyard_fanout_dropped_frames_total",
    "switchyard_fanout_dropped_bytes_total",
];

async fn http_reader(addr: SocketAddr, path: String, c: Arc<Counter>) {
    let end = |c: &Counter| c.ended.store(true, Ordering::Relaxed);
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return end(&c);
    };
    let req =
        format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: switchyard-bench\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return end(&c);
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut head: Vec<u8> = Vec::new();
    // Headers first (bounded to 16 KiB), then everything is TS.
    loop {
        let n = match s.read(&mut buf).await {
            Ok(0) | Err(_) => return end(&c),
            Ok(n) => n,
        };
        head.extend_from_slice(&buf[..n]);
        if let Some(pos) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            if !head.starts_with(b"HTTP/1.0 200") && !head.starts_with(b"HTTP/1.1 200") {
                return end(&c);
            }
            c.add(head.len() - pos - 4);
            break;
        }
        if head.len() > 16 * 1024 {
            return end(&c);
        }
    }
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return end(&c),
            Ok(n) => c.add(n),
        }
    }
}

/// The id of the server's first channel, from `/api/channels`.
pub fn first_channel(server: &ServerProcess) -> anyhow::Result<u64> {
    let body = server.get("/api/channels")?;
    let v: serde_json::Value = serde_json::from_str(&body).context("parsing /api/channels")?;
    v.as_array()
        .and_then(|a| a.first())
        .and_then(|c| c["id"].as_u64())
        .context("the server lists no channel")
}

pub fn run(bin: &Path, opts: &FanoutOptions, command: String) -> anyhow::Result<Report> {
    let ts = super::test_channel_5m()?;
    let bitrate = super::file_bitrate(&ts, 10.0);
    let rt = client_runtime()?;
    let window = Duration::from_secs(opts.seconds);
    let mut runs: Vec<FanoutRun> = Vec::new();
    let mut warnings = 0;
    for &n in &opts.readers {
        println!("fanout: {n} readers for {} s", opts.seconds);
        let server = ServerProcess::start(bin, super::tv_config(&ts))?;
        let id = first_channel(&server)?;
        let addr = server.web;
        let path = format!("/stream/channel/{id}");
        let run = measure(&rt, &server, n, window, DROP_METRICS, |c| {
            http_reader(addr, path.clone(), c)
        })?;
        warnings += server.log_warnings();
        runs.push(run);
    }
    Ok(fanout_report(
        "fanout",
        "HTTP TV fan-out: one 5 Mbit/s channel to N readers",
        "readers",
        &runs,
        bitrate,
        command,
        &format!(
            "input {:.2} Mbit/s (testsrc2 1280×720 H.264 + AAC, CBR), window {} s per size, fresh server per size; {} warning lines in the server logs",
            bitrate / 1e6,
            opts.seconds,
            warnings
        ),
        false,
    ))
}

/// The table, plot and verdict all TS fan-out scenarios share. Target: 500
/// clients without drops on under one core (and, for HTTP, < 100 KB each).
#[allow(clippy::too_many_arguments)]
pub fn fanout_report(
    scenario: &'static str,
    title: &str,
    unit: &str,
    runs: &[FanoutRun],
    bitrate: f64,
    command: String,
    note: &str,
    client_drops_column: bool,
) -> Report {
    let mut cols = vec![
        unit.to_string(),
        "server CPU % of a core".into(),
        "CPU per client (ms/s)".into(),
        "server drops (frames)".into(),
    ];
    if client_drops_column {
        cols.push("client-reported drops".into());
    }
    cols.extend([
        "ended streams".into(),
        "clients < 90 % of bytes".into(),
        "min / mean bytes vs expected".into(),
        "RSS per client (KB)".into(),
        "bench CPU %".into(),
        "server waiting for a CPU %".into(),
        "load average".into(),
    ]);
    let mut table = Table {
        columns: cols,
        rows: Vec::new(),
    };
    let mut cpu = Vec::new();
    let mut verdict = Verdict::NotMeasured;
    for r in runs {
        let expected = bitrate / 8.0 * r.window.as_secs_f64();
        let frames = r
            .server_drops
            .iter()
            .find(|(n, _)| n.contains("frames"))
            .map_or(0.0, |(_, v)| *v);
        let mut row = vec![
            r.n.to_string(),
            format!("{:.1}", r.server_cpu_pct),
            format!("{:.3}", r.server_cpu_pct * 10.0 / r.n.max(1) as f64),
            if r.server_drops.len() > 1 && frames == 0.0 && r.server_drop_total() > 0.0 {
                format!("0 ({:.0} B)", r.server_drop_total())
            } else {
                format!("{frames:.0}")
            },
        ];
        if client_drops_column {
            row.push(r.client_drops.to_string());
        }
        row.extend([
            r.ended.to_string(),
            r.short_clients(expected, 0.9).to_string(),
            format!(
                "{:.0} % / {:.0} %",
                r.min_bytes() as f64 / expected * 100.0,
                r.mean_bytes() / expected * 100.0
            ),
            format!("{:.1}", r.rss_per_client() / 1000.0),
            format!("{:.0}", r.bench_cpu_pct),
            format!("{:.0}", r.server_wait_pct),
            format!("{:.1}", r.load_average),
        ]);
        table.push(row);
        cpu.push((r.n as f64, r.server_cpu_pct));
        if r.n == 500 {
            let clean = r.server_drop_total() == 0.0
                && r.client_drops == 0
                && r.ended == 0
                && r.short_clients(expected, 0.9) == 0;
            let mem_ok = scenario != "fanout" || r.rss_per_client() < 100_000.0;
            verdict = Verdict::from_bool(clean && r.server_cpu_pct < 100.0 && mem_ok);
        }
    }
    let target = if scenario == "fanout" {
        "500 readers without drops on under one core; < 100 KB memory per reader"
    } else if scenario == "htsp-fanout" {
        "500 subscribers without drops on under one core"
    } else {
        "500 data channels without drops on under one core"
    };
    Report {
        scenario,
        title: title.into(),
        command,
        table,
        plot: Some(Plot {
            title: format!("{title}: server CPU"),
            x_label: unit.into(),
            y_label: "server CPU, % of one core".into(),
            log_x: true,
            series: vec![Series::new("server CPU (%)", cpu)],
            target: Some(("one core".into(), 100.0)),
            categories: Vec::new(),
        }),
        target: target.into(),
        verdict,
        notes: vec![note.to_string()],
    }
}
