//! `htsp-fanout`: one ~5 Mbit/s channel to N HTSP subscribers, each a tokio
//! task speaking HTSP with the public codec `htsp::wire`: `hello`,
//! `subscribe`, then counting `muxpkt` payload bytes and the drops each
//! `queueStatus` reports (cumulative B+P+I per subscription).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use bytes::BytesMut;
use htsp::wire::{Msg, encode_frame, split_outbound_frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::fanout::{fanout_report, first_channel};
use super::load::{Counter, FanoutRun, client_runtime, measure};
use crate::output::Report;
use crate::server::ServerProcess;

pub struct HtspOptions {
    pub subscribers: Vec<usize>,
    pub seconds: u64,
}

const DROP_METRICS: &[&str] = &[
    "switchyard_htsp_dropped_frames_total",
    "switchyard_fanout_dropped_frames_total",
];

async fn htsp_subscriber(addr: SocketAddr, channel: u32, c: Arc<Counter>) {
    let end = |c: &Counter| c.ended.store(true, Ordering::Relaxed);
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return end(&c);
    };
    let hello = Msg::new()
        .with("method", "hello")
        .with("htspversion", 35u32)
        .with("clientname", "switchyard-bench")
        .with("clientversion", "1")
        .with("seq", 1u32);
    let subscribe = Msg::new()
        .with("method", "subscribe")
        .with("channelId", channel)
        .with("subscriptionId", 1u32)
        .with("seq", 2u32);
    for m in [hello, subscribe] {
        if s.write_all(&encode_frame(&m)).await.is_err() {
            return end(&c);
        }
    }
    let mut buf = BytesMut::with_capacity(256 * 1024);
    loop {
        match s.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return end(&c),
            Ok(_) => {}
        }
        loop {
            let msg = match split_outbound_frame(&mut buf) {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(_) => return end(&c),
            };
            match msg.get_str("method").as_deref() {
                Some("muxpkt") => c.add(msg.get_bin("payload").map_or(0, |p| p.len())),
                Some("queueStatus") => {
                    let d = ["Bdrops", "Pdrops", "Idrops"]
                        .iter()
                        .filter_map(|k| msg.get_s64(k))
                        .sum::<i64>();
                    c.drops
                        .fetch_max(u64::try_from(d).unwrap_or(0), Ordering::Relaxed);
                }
                Some("subscriptionStop") => return end(&c),
                _ => {}
            }
        }
        if buf.capacity() - buf.len() < 64 * 1024 {
            buf.reserve(256 * 1024);
        }
    }
}

pub fn run(bin: &Path, opts: &HtspOptions, command: String) -> anyhow::Result<Report> {
    let ts = super::test_channel_5m()?;
    let bitrate = super::file_bitrate(&ts, 10.0);
    let rt = client_runtime()?;
    let window = Duration::from_secs(opts.seconds);
    let mut runs: Vec<FanoutRun> = Vec::new();
    let mut warnings = 0;
    let max = opts.subscribers.iter().copied().max().unwrap_or(1);
    for &n in &opts.subscribers {
        println!("htsp-fanout: {n} subscribers for {} s", opts.seconds);
        let mut cfg = super::tv_config(&ts);
        let mut htsp_t = toml::Table::new();
        htsp_t.insert(
            "max_connections".into(),
            toml::Value::Integer((max + 64) as i64),
        );
        cfg.insert("htsp".into(), htsp_t.into());
        let server = ServerProcess::start(bin, cfg)?;
        let addr = server
            .port("htsp")
            .context("the server has no HTSP listener")?;
        let id = u32::try_from(first_channel(&server)?)?;
        let run = measure(&rt, &server, n, window, DROP_METRICS, |c| {
            htsp_subscriber(addr, id, c)
        })?;
        warnings += server.log_warnings();
        runs.push(run);
    }
    // HTSP counts payload bytes only; TS and PES headers are not in it.
    let fraction = super::payload_fraction(&ts)?;
    let payload_rate = bitrate * fraction;
    Ok(fanout_report(
        "htsp-fanout",
        "HTSP fan-out: one 5 Mbit/s channel to N subscribers",
        "subscribers",
        &runs,
        payload_rate,
        command,
        &format!(
            "input {:.2} Mbit/s TS; expected bytes = {:.1} % of it (muxpkt payload only, TS/PES headers excluded); window {} s per size, fresh server per size; {} warning lines in the server logs",
            bitrate / 1e6,
            fraction * 100.0,
            opts.seconds,
            warnings
        ),
        true,
    ))
}
