//! `switchyard-bench`: the load generators and benchmark harness of
//! Switchyard. Each scenario measures one issue target, prints a table, and
//! writes `bench/results/<scenario>.csv`, `.svg` and a Markdown fragment that
//! `switchyard-bench report` gathers into BENCHMARKS.md.
//!
//! It must never talk to anything but 127.0.0.1, and every load loop is
//! bounded in count and time. Servers it needs are started as child
//! processes (or in this process, for the library-level load generators) on
//! free ports with a temporary data folder, and are killed at the end.

mod machine;
mod output;
mod scenario;
mod server;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::machine::Machine;
use crate::output::default_results_dir;

#[derive(Parser, Debug)]
#[command(name = "switchyard-bench", about = "Switchyard's benchmark scenarios")]
struct Cli {
    /// A short smoke run: fewer sizes, shorter windows.
    #[arg(long, global = true)]
    quick: bool,
    /// Where CSV, SVG and Markdown results go.
    #[arg(long, global = true, value_name = "DIR")]
    results: Option<PathBuf>,
    /// Use this `switchyard` binary instead of building it with
    /// `cargo build --release -p switchyard`.
    #[arg(long, global = true, value_name = "FILE")]
    server_bin: Option<PathBuf>,
    #[command(subcommand)]
    command: Scenario,
}

fn list(s: &str) -> Result<Vec<usize>, String> {
    s.split(',')
        .map(|v| v.trim().parse::<usize>().map_err(|e| format!("{v:?}: {e}")))
        .collect()
}

fn sizes(s: &str) -> Result<Vec<(usize, usize)>, String> {
    s.split(',')
        .map(|v| {
            let (a, b) = v
                .trim()
                .split_once(['x', '×'])
                .ok_or_else(|| format!("{v:?}: expected SxM"))?;
            Ok((
                a.parse().map_err(|e| format!("{v:?}: {e}"))?,
                b.parse().map_err(|e| format!("{v:?}: {e}"))?,
            ))
        })
        .collect()
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// TS demuxer MB/s per core, next to ffmpeg -c copy.
    Demux {
        /// Input files (default: demo/channel-1.ts and demo/channel-2.ts).
        files: Vec<PathBuf>,
        /// Size of the in-memory input per file, MB (default 500, --quick 50).
        #[arg(long)]
        megabytes: Option<usize>,
        /// Skip the ffmpeg comparison.
        #[arg(long)]
        no_ffmpeg: bool,
    },
    /// One 5 Mbit/s channel to N HTTP readers of /stream/channel/ID.
    Fanout {
        /// Reader counts (default 1,10,100,500; --quick 1,10).
        #[arg(long, value_parser = list)]
        readers: Option<std::vec::Vec<usize>>,
        /// Measurement window per count, seconds (default 10, --quick 3).
        #[arg(long)]
        seconds: Option<u64>,
    },
    /// One 5 Mbit/s channel to N HTSP subscribers.
    HtspFanout {
        /// Subscriber counts (default 1,10,100,500,1000; --quick 1,10).
        #[arg(long, value_parser = list)]
        subscribers: Option<std::vec::Vec<usize>>,
        /// Measurement window per count, seconds (default 10, --quick 3).
        #[arg(long)]
        seconds: Option<u64>,
    },
    /// Movie protocol: S sessions × M members at a rate (in-process server).
    Movie {
        /// Sessions × members (default 10x10,50x10; --quick 2x5).
        #[arg(long, value_parser = sizes)]
        sizes: Option<std::vec::Vec<(usize, usize)>>,
        /// Rate each member receives, bit/s.
        #[arg(long, default_value_t = 2_000_000)]
        rate_bps: u64,
        /// Watching time per member, seconds (default 10, --quick 3).
        #[arg(long)]
        seconds: Option<u64>,
    },
    /// SFU: one publisher to N subscribers, and R rooms of four.
    Sfu {
        /// Subscriber counts (default 10,50,100,200; --quick 10).
        #[arg(long, value_parser = list)]
        fan_out: Option<std::vec::Vec<usize>>,
        /// Room counts (default 5,10,15,20,25; --quick 2).
        #[arg(long, value_parser = list)]
        rooms: Option<std::vec::Vec<usize>>,
        /// Measurement window per size, seconds (default 5, --quick 3).
        #[arg(long)]
        seconds: Option<u64>,
        /// Do not pin the SFU worker and the test peers to separate CPUs.
        #[arg(long)]
        shared_cpus: bool,
    },
    /// One 5 Mbit/s service to N HeliosTv data channels.
    HeliostvFanout {
        /// Data channel counts (default 1,10,100,500,1000; --quick 1,10).
        #[arg(long, value_parser = list)]
        channels: Option<std::vec::Vec<usize>>,
        /// Measurement window per count, seconds (default 10, --quick 3).
        #[arg(long)]
        seconds: Option<u64>,
    },
    /// OWT portal signalling rates over Socket.IO.
    OwtSignaling,
    /// Gather bench/results/*.md and bench/notes/*.md into BENCHMARKS.md.
    Report,
}

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchyard-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The command line to rerun what was just run, as BENCHMARKS.md shows it.
fn rerun_command() -> String {
    portable_command(std::env::args().skip(1))
}

/// `args` as a `cargo run` line anyone can paste: the options naming files
/// of this machine (`--server-bin`, `--results`, with their values) are left
/// out, since the defaults build and use the same things in any checkout.
fn portable_command(args: impl Iterator<Item = String>) -> String {
    const LOCAL: &[&str] = &["--server-bin", "--results"];
    let mut kept = Vec::new();
    let mut skip_value = false;
    for a in args {
        if std::mem::take(&mut skip_value) {
            continue;
        }
        if LOCAL.contains(&a.as_str()) {
            skip_value = true;
            continue;
        }
        if LOCAL
            .iter()
            .any(|o| a.strip_prefix(o).is_some_and(|rest| rest.starts_with('=')))
        {
            continue;
        }
        kept.push(a);
    }
    format!(
        "cargo run --release -p switchyard-bench -- {}",
        kept.join(" ")
    )
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let results = cli.results.clone().unwrap_or_else(default_results_dir);
    let machine = Machine::probe();
    let quick = cli.quick;
    let command = rerun_command();
    let pick = |given: Option<Vec<usize>>, full: &[usize], smoke: &[usize]| {
        given.unwrap_or_else(|| if quick { smoke.to_vec() } else { full.to_vec() })
    };
    let secs = |given: Option<u64>, full: u64, smoke: u64| {
        given.unwrap_or(if quick { smoke } else { full })
    };
    let server_bin = || server::locate_or_build(cli.server_bin.as_deref());
    let report = match cli.command {
        Scenario::Demux {
            files,
            megabytes,
            no_ffmpeg,
        } => {
            let files = if files.is_empty() {
                let demo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../demo");
                vec![demo.join("channel-1.ts"), demo.join("channel-2.ts")]
            } else {
                files
            };
            let opts = scenario::demux::DemuxOptions {
                files,
                megabytes: megabytes.unwrap_or(if quick { 50 } else { 500 }),
                with_ffmpeg: !no_ffmpeg,
            };
            scenario::demux::run(&opts, command)?
        }
        Scenario::Fanout { readers, seconds } => {
            let opts = scenario::fanout::FanoutOptions {
                readers: pick(readers, &[1, 10, 100, 500], &[1, 10]),
                seconds: secs(seconds, 10, 3),
            };
            scenario::fanout::run(&server_bin()?, &opts, command)?
        }
        Scenario::HtspFanout {
            subscribers,
            seconds,
        } => {
            let opts = scenario::htsp_fanout::HtspOptions {
                subscribers: pick(subscribers, &[1, 10, 100, 500, 1000], &[1, 10]),
                seconds: secs(seconds, 10, 3),
            };
            scenario::htsp_fanout::run(&server_bin()?, &opts, command)?
        }
        Scenario::Movie {
            sizes,
            rate_bps,
            seconds,
        } => {
            let sizes = sizes.unwrap_or_else(|| {
                if quick {
                    vec![(2, 5)]
                } else {
                    vec![(10, 10), (50, 10)]
                }
            });
            scenario::movie::run(&sizes, rate_bps, secs(seconds, 10, 3), command)?
        }
        Scenario::Sfu {
            fan_out,
            rooms,
            seconds,
            shared_cpus,
        } => {
            let opts = scenario::sfu::SfuOptions {
                fan_out: pick(fan_out, &[10, 50, 100, 200], &[10]),
                rooms: pick(rooms, &[5, 10, 15, 20, 25], &[2]),
                seconds: secs(seconds, 5, 3),
                shared_cpus,
            };
            scenario::sfu::run(&opts, command)?
        }
        Scenario::HeliostvFanout { channels, seconds } => {
            let opts = scenario::heliostv::HeliosOptions {
                channels: pick(channels, &[1, 10, 100, 500, 1000], &[1, 10]),
                seconds: secs(seconds, 10, 3),
            };
            scenario::heliostv::run(&server_bin()?, &opts, command)?
        }
        Scenario::OwtSignaling => scenario::owt::run(&server_bin()?, quick, command)?,
        Scenario::Report => {
            let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../BENCHMARKS.md");
            scenario::write_benchmarks_md(&results, &out, &machine)?;
            println!("wrote {}", out.display());
            return Ok(());
        }
    };
    report.publish(&results, &machine)
}

#[cfg(test)]
mod tests {
    use super::portable_command;

    fn args(line: &str) -> impl Iterator<Item = String> {
        line.split(' ')
            .map(str::to_string)
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn recorded_command_names_no_local_path() {
        assert_eq!(
            portable_command(args(
                "--server-bin /srv/t/release/switchyard fanout --readers 1,10"
            )),
            "cargo run --release -p switchyard-bench -- fanout --readers 1,10"
        );
        assert_eq!(
            portable_command(args(
                "htsp-fanout --server-bin=/x/switchyard --results /tmp/r --seconds 5"
            )),
            "cargo run --release -p switchyard-bench -- htsp-fanout --seconds 5"
        );
        assert_eq!(
            portable_command(args("--quick owt-signaling --results=/tmp/r")),
            "cargo run --release -p switchyard-bench -- --quick owt-signaling"
        );
    }
}
