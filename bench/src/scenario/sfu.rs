//! `sfu`: the SFU's load generator, `rtc::loadtest` (feature `loadtest`):
//! an `rtc::Sfu` with its worker threads and str0m test peers, all in this
//! process on 127.0.0.1. Fan-out (one publisher, N subscribers) and rooms
//! of four (R rooms, everyone receiving the other three).

use std::time::Duration;

use rtc::loadtest::{LoadConfig, LoadReport};

use crate::output::{Plot, Report, Series, Table, Verdict};

pub struct SfuOptions {
    pub fan_out: Vec<usize>,
    pub rooms: Vec<usize>,
    pub seconds: u64,
    /// Let the SFU workers and the test peers share every CPU (no pinning).
    pub shared_cpus: bool,
}

/// Video down-tracks one core of SFU workers would carry at this run's cost
/// (all worker CPU, audio included, charged to the video tracks).
fn video_tracks_per_core(r: &LoadReport) -> f64 {
    let video_tracks = r.down_tracks as f64 / 2.0;
    let cores = r.sfu_cpu_seconds / r.seconds.max(1e-9);
    if cores <= 0.0 {
        0.0
    } else {
        video_tracks / cores
    }
}

pub fn run(opts: &SfuOptions, command: String) -> anyhow::Result<Report> {
    // With two or more CPUs the SFU gets the last one to itself (one worker)
    // and the load generator (every test peer, this thread) the others, so
    // the workers' CPU time and delay are not the test peers' contention.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (sfu_cpus, harness_cpus): (Vec<usize>, Vec<usize>) = if cpus >= 2 && !opts.shared_cpus {
        (vec![cpus - 1], (0..cpus - 1).collect())
    } else {
        (Vec::new(), Vec::new())
    };
    let pin = harness_cpus.clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        // One runtime thread per CPU it may use: more would only queue for it.
        .worker_threads(if harness_cpus.is_empty() {
            cpus
        } else {
            harness_cpus.len()
        })
        .enable_all()
        .on_thread_start(move || {
            if !pin.is_empty() {
                rtc::loadtest::pin_current_thread(&pin);
            }
        })
        .build()?;
    if !harness_cpus.is_empty() {
        rtc::loadtest::pin_current_thread(&harness_cpus);
    }
    let cfg = LoadConfig {
        duration: Duration::from_secs(opts.seconds),
        workers: if sfu_cpus.is_empty() {
            0
        } else {
            sfu_cpus.len()
        },
        sfu_cpus: sfu_cpus.clone(),
        ..LoadConfig::default()
    };
    let mut table = Table::new(&[
        "scenario",
        "size",
        "video down-tracks",
        "failed set-ups",
        "video loss %",
        "publishers' frame rate %",
        "in SFU p50 (ms)",
        "in SFU p99 (ms)",
        "end to end p50 (ms)",
        "end to end p99 (ms)",
        "SFU CPU % of a core",
        "CPU µs per down-track·s",
        "video down-tracks per core",
        "memory per peer (KB)",
        "process waiting for a CPU %",
        "load average",
    ]);
    let mut fan_delay = Vec::new();
    let mut room_delay = Vec::new();
    let mut best: Vec<String> = Vec::new();
    let mut capacity_ok = false;
    let mut any = false;
    let jobs: Vec<(&str, usize)> = opts
        .fan_out
        .iter()
        .map(|n| ("fan-out", *n))
        .chain(opts.rooms.iter().map(|r| ("rooms", *r)))
        .collect();
    let mut largest: [Option<usize>; 2] = [None, None];
    for (kind, n) in jobs {
        println!("sfu: {kind} {n} for {} s", opts.seconds);
        let sampler = crate::machine::WaitSampler::start(std::process::id());
        let t0 = std::time::Instant::now();
        let result = rt.block_on(async {
            if kind == "fan-out" {
                rtc::loadtest::fan_out(n, &cfg).await
            } else {
                rtc::loadtest::rooms(n, &cfg).await
            }
        });
        let r = match result {
            Ok(r) => r,
            Err(e) => {
                let mut row = vec![
                    kind.to_string(),
                    n.to_string(),
                    "-".into(),
                    format!("error: {e}"),
                ];
                row.resize(16, "-".into());
                table.push(row);
                continue;
            }
        };
        any = true;
        let waited = sampler.finish();
        let wait_pct = waited.as_secs_f64() / t0.elapsed().as_secs_f64().max(1e-9) * 100.0;
        let video = r.down_tracks / 2;
        let per_core = video_tracks_per_core(&r);
        // Frames the publishers sent in the window / what their frame rate asks.
        let paced = r.video_frames_sent as f64
            / (r.publishers as f64 * f64::from(cfg.fps) * r.seconds).max(1e-9);
        table.push(vec![
            kind.into(),
            if kind == "fan-out" {
                format!("1 → {n}")
            } else {
                format!("{n} × 4")
            },
            video.to_string(),
            r.failed_setups.to_string(),
            format!("{:.3}", r.video_loss * 100.0),
            format!("{:.0}", paced * 100.0),
            format!("{:.2}", r.sfu_delay_p50_ms),
            format!("{:.2}", r.sfu_delay_p99_ms),
            format!("{:.2}", r.delay_p50_ms),
            format!("{:.2}", r.delay_p99_ms),
            format!("{:.1}", r.sfu_cpu_seconds / r.seconds.max(1e-9) * 100.0),
            format!("{:.1}", r.cpu_us_per_down_track_second),
            format!("{per_core:.0}"),
            format!("{:.0}", r.memory_per_peer_bytes as f64 / 1000.0),
            format!("{wait_pct:.0}"),
            format!("{:.1}", crate::machine::load_average()),
        ]);
        // A load generator that cannot keep its publishers at their frame
        // rate hands the SFU less work than the row's size says, and
        // receivers seconds behind (their sockets overflowing, their reports
        // late) are not the subscribers a deployment has: such a run shows
        // where the generator ends, not what a core carries.
        let good =
            r.video_loss < 0.01 && r.failed_setups == 0 && paced >= 0.95 && r.delay_p99_ms < 100.0;
        let slot = if kind == "fan-out" { 0 } else { 1 };
        if good {
            largest[slot] = Some(largest[slot].map_or(n, |m: usize| m.max(n)));
            // The target is one core carrying 500 video down-tracks with a
            // p99 under 5 ms: both in the same run.
            capacity_ok |= per_core >= 500.0 && r.sfu_delay_p99_ms < 5.0;
        }
        // Overloaded runs (loss, failed set-ups) say nothing about capacity.
        if good {
            if kind == "fan-out" {
                fan_delay.push((video as f64, per_core));
            } else {
                room_delay.push((video as f64, per_core));
            }
        }
    }
    best.push(format!(
        "largest size with < 1 % video loss, every peer connected, the publishers at ≥ 95 % of their frame rate and the receiving test peers keeping up (end-to-end p99 < 100 ms): fan-out N = {}, rooms R = {}",
        largest[0].map_or("none".into(), |n| n.to_string()),
        largest[1].map_or("none".into(), |n| n.to_string())
    ));
    best.push(format!(
        "each publisher sends {:.1} Mbit/s video at {} fps plus Opus; SFU CPU is the `rtc-worker-*` threads only (scheduler run time); \"in SFU\" delay is from the arrival of a video frame's last packet to the send of its packets to each subscriber (the forwarding delay proper, measured by the SFU); \"end to end\" is the publishing test peer's clock to the receiving test peer's depacketised frame, so it adds both test peers' work and their wait for a CPU; memory per peer is RSS growth over every str0m instance (SFU and test-peer sides), so it over-states the SFU's share; {}",
        cfg.video_bitrate as f64 / 1e6,
        cfg.fps,
        if sfu_cpus.is_empty() {
            "the test peers share the machine's cores with the SFU".to_string()
        } else {
            format!(
                "one SFU worker pinned to CPU {:?}, the test peers and the harness pinned to CPUs {:?}",
                sfu_cpus, harness_cpus
            )
        }
    ));
    best.push("Janus comparison: not done. Debian's `janus` 1.1.2 is installable, but a comparison needs a VideoRoom load client (Janus's own HTTP/WebSocket signalling driving the same str0m peers), which is not trivial".into());
    let mut series = vec![Series::new("fan-out", fan_delay)];
    if !room_delay.is_empty() {
        series.push(Series::new("rooms of 4", room_delay));
    }
    Ok(Report {
        scenario: "sfu",
        title: "SFU forwarding: fan-out and rooms of four".into(),
        command,
        table,
        plot: Some(Plot {
            title: "SFU: video down-tracks one core carries (runs with < 1 % loss)".into(),
            x_label: "video down-tracks forwarded in the run".into(),
            y_label: "video down-tracks per core".into(),
            log_x: true,
            series,
            target: Some(("target 500 per core".into(), 500.0)),
            categories: Vec::new(),
        }),
        target: "≥ 500 video down-tracks per core, p99 forwarding delay < 5 ms (at < 1 % loss)"
            .into(),
        verdict: if any {
            Verdict::from_bool(capacity_ok)
        } else {
            Verdict::NotMeasured
        },
        notes: best,
    })
}
