//! `heliostv-fanout`: one ~5 Mbit/s service to N HeliosTv data channels.
//! Each client is what a set-top box does, with the crate's own client:
//! a control session (HELLO as `player`), NEW_SERVICE for the channel,
//! AUTHORIZE on the data port, then TS bytes counted until the end.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use heliostv::client::{Client, DataStream, service_uri};
use tokio::io::AsyncReadExt;

use super::fanout::{fanout_report, first_channel};
use super::load::{Counter, FanoutRun, client_runtime, measure};
use crate::output::Report;
use crate::server::ServerProcess;

pub struct HeliosOptions {
    pub channels: Vec<usize>,
    pub seconds: u64,
}

const DROP_METRICS: &[&str] = &[
    "switchyard_fanout_dropped_frames_total",
    "switchyard_heliostv_dropped_bytes_total",
    "switchyard_fanout_dropped_bytes_total",
];

async fn heliostv_player(control: SocketAddr, data: SocketAddr, uri: String, c: Arc<Counter>) {
    let end = |c: &Counter| c.ended.store(true, Ordering::Relaxed);
    let Ok(mut session) = Client::connect(control, &["player"]).await else {
        return end(&c);
    };
    let Ok(token) = session.new_service(&uri).await else {
        return end(&c);
    };
    let Ok(stream) = DataStream::authorize(data, token).await else {
        return end(&c);
    };
    let (mut socket, leftover) = stream.into_parts();
    c.add(leftover.len());
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return end(&c),
            Ok(n) => c.add(n),
        }
    }
    // `session` lives as long as the data channel: closing it would end the entry.
}

pub fn run(bin: &Path, opts: &HeliosOptions, command: String) -> anyhow::Result<Report> {
    let ts = super::test_channel_5m()?;
    let bitrate = super::file_bitrate(&ts, 10.0);
    let rt = client_runtime()?;
    let window = Duration::from_secs(opts.seconds);
    let max = opts.channels.iter().copied().max().unwrap_or(1) as i64 + 64;
    let mut runs: Vec<FanoutRun> = Vec::new();
    let mut warnings = 0;
    for &n in &opts.channels {
        println!("heliostv-fanout: {n} data channels for {} s", opts.seconds);
        let mut cfg = super::tv_config(&ts);
        let mut h = toml::Table::new();
        h.insert("max_sessions".into(), toml::Value::Integer(max));
        h.insert("max_data_connections".into(), toml::Value::Integer(max));
        cfg.insert("heliostv".into(), h.into());
        let server = ServerProcess::start(bin, cfg)?;
        let control = server
            .port("heliostv.control_listen")
            .context("the server has no HeliosTv control listener")?;
        let data = server
            .port("heliostv.data_listen")
            .context("the server has no HeliosTv data listener")?;
        let uri = service_uri(&format!("id:{}", first_channel(&server)?));
        let run = measure(&rt, &server, n, window, DROP_METRICS, |c| {
            heliostv_player(control, data, uri.clone(), c)
        })?;
        warnings += server.log_warnings();
        runs.push(run);
    }
    Ok(fanout_report(
        "heliostv-fanout",
        "HeliosTv fan-out: one 5 Mbit/s service to N data channels",
        "data channels",
        &runs,
        bitrate,
        command,
        &format!(
            "input {:.2} Mbit/s; each data channel has its own player control session; window {} s per size, fresh server per size; {} warning lines in the server logs",
            bitrate / 1e6,
            opts.seconds,
            warnings
        ),
        false,
    ))
}
