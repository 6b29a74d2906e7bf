//! Rough demux/remux throughput on the demo channel (not a benchmark
//! harness; the lead's bench/ owns those):
//! `cargo run --release -p switchyard-media --example demux_speed`

use std::time::Instant;

use media::remux::{RemuxOutput, SptsRemuxer};
use media::ts::{Packet, TsAligner};
use media::{DemuxEvent, Demuxer};

const CH1: &[u8] = include_bytes!("../../../demo/channel-1.ts");

fn main() {
    let only = std::env::args().nth(1);
    let rounds = 200;
    let mut events: Vec<DemuxEvent> = Vec::with_capacity(4096);
    let mut frames = 0usize;
    let t = Instant::now();
    for _ in 0..rounds {
        let mut d = Demuxer::new();
        for chunk in CH1.chunks(64 * 1024) {
            d.push(chunk, &mut events);
            frames += events.len();
            events.clear();
        }
        d.flush(&mut events);
        events.clear();
    }
    let secs = t.elapsed().as_secs_f64();
    let bytes = (CH1.len() * rounds) as f64;
    println!("demux: {:.2} GB/s ({frames} events)", bytes / secs / 1e9);
    if only.as_deref() == Some("demux") {
        return;
    }

    let t = Instant::now();
    let mut out = RemuxOutput::new();
    let mut total = 0usize;
    for _ in 0..rounds {
        let mut r = SptsRemuxer::new(1);
        let mut a = TsAligner::new();
        for chunk in CH1.chunks(64 * 1024) {
            a.push(chunk, &mut |p: &Packet| r.push(p, &mut out));
            total += out.data.len();
            out.clear();
        }
    }
    let secs = t.elapsed().as_secs_f64();
    println!("remux: {:.2} GB/s ({total} bytes out)", bytes / secs / 1e9);
}
