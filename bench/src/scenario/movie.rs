//! `movie`: the movie protocol's load generator, `movie::loadgen::run_local`:
//! an in-process server on one thread (so "one core" is built in) and S
//! sessions of M members receiving at a fixed rate over loopback UDP.

use std::time::Duration;

use crate::output::{Plot, Report, Series, Table, Verdict};

pub fn run(
    sizes: &[(usize, usize)],
    rate_bps: u64,
    seconds: u64,
    command: String,
) -> anyhow::Result<Report> {
    let mut table = Table::new(&[
        "sessions × members",
        "members streamed",
        "chunks received",
        "lost",
        "loss %",
        "jitter p50 (ms)",
        "jitter p99 (ms)",
        "jitter max (ms)",
        "server CPU % of a core",
        "whole process CPU %",
        "process waiting for a CPU %",
        "load average",
    ]);
    let mut cpu = Vec::new();
    let mut verdict = Verdict::NotMeasured;
    let mut notes = vec![format!(
        "each member receives {:.1} Mbit/s for {seconds} s; the server runs on one thread (current-thread runtime) in the bench process, its CPU from /proc/self/task/<tid>/stat; jitter is arrival minus ideal send time, less each member's smallest offset",
        rate_bps as f64 / 1e6
    )];
    for &(s, m) in sizes {
        println!("movie: {s} sessions × {m} members at {rate_bps} bit/s for {seconds} s");
        let sampler = crate::machine::WaitSampler::start(std::process::id());
        let r = movie::loadgen::run_local(s, m, rate_bps, Duration::from_secs(seconds))?;
        let waited = sampler.finish();
        let wall = r.wall.as_secs_f64().max(1e-9);
        let server_pct = r.server_cpu.map(|c| c.as_secs_f64() / wall * 100.0);
        let ms = |us: u64| format!("{:.2}", us as f64 / 1000.0);
        table.push(vec![
            format!("{s} × {m}"),
            format!("{} / {}", r.members_streamed, s * m),
            r.received.to_string(),
            r.lost.to_string(),
            format!("{:.4}", r.loss * 100.0),
            ms(r.jitter_p50_us),
            ms(r.jitter_p99_us),
            ms(r.jitter_max_us),
            server_pct.map_or("-".into(), |p| format!("{p:.1}")),
            format!("{:.1}", r.process_cpu.as_secs_f64() / wall * 100.0),
            format!("{:.0}", waited.as_secs_f64() / wall * 100.0),
            format!("{:.1}", crate::machine::load_average()),
        ]);
        if let Some(p) = server_pct {
            cpu.push(((s * m) as f64, p));
        }
        if r.duplicates > 0 || r.out_of_order > 0 {
            notes.push(format!(
                "{s}×{m}: {} duplicates, {} out of order",
                r.duplicates, r.out_of_order
            ));
        }
        if (s, m) == (50, 10) {
            let streamed_all = r.members_streamed == s * m;
            verdict = Verdict::from_bool(
                streamed_all && r.loss < 0.001 && server_pct.is_some_and(|p| p < 100.0),
            );
        }
    }
    notes.push("server CPU % is over the whole run's wall time, set-up and registration windows included, so it understates the steady-state load a little".into());
    Ok(Report {
        scenario: "movie",
        title: "Movie protocol: S sessions × M members".into(),
        command,
        table,
        plot: Some(Plot {
            title: "Movie protocol: server CPU vs members".into(),
            x_label: "members (sessions × members per session)".into(),
            y_label: "server CPU, % of one core".into(),
            series: vec![Series::new("server thread CPU (%)", cpu)],
            target: Some(("one core".into(), 100.0)),
            ..Plot::default()
        }),
        target: "50 × 10 under 0.1 % loss on one core".into(),
        verdict,
        notes,
    })
}
