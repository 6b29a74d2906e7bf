//! One module per scenario, plus what several share: the 5 Mbit/s test
//! channel and the BENCHMARKS.md writer.

pub mod demux;
pub mod fanout;
pub mod heliostv;
pub mod htsp_fanout;
pub mod load;
pub mod movie;
pub mod owt;
pub mod sfu;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

use crate::machine::Machine;

/// Scenario order in BENCHMARKS.md.
pub const ORDER: &[&str] = &[
    "demux",
    "fanout",
    "htsp-fanout",
    "movie",
    "sfu",
    "heliostv-fanout",
    "owt-signaling",
];

/// A 10 s, ~5 Mbit/s H.264 + AAC transport stream (testsrc2, 1280×720),
/// made once with ffmpeg and kept in the system temp folder. CBR with
/// filler data, so the rate holds even though the test picture compresses
/// well.
pub fn test_channel_5m() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join("switchyard-bench-media");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("testsrc2-720p-5M.ts");
    if path
        .metadata()
        .map(|m| m.len() > 5_000_000)
        .unwrap_or(false)
    {
        return Ok(path);
    }
    println!(
        "making the 5 Mbit/s test channel with ffmpeg (once): {}",
        path.display()
    );
    let partial = dir.join("testsrc2-720p-5M.partial.ts");
    let status = Command::new("ffmpeg")
        .args(["-y", "-v", "error", "-nostdin"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=48000"])
        .args(["-t", "10", "-map", "0:v", "-map", "1:a"])
        .args([
            "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-g", "50",
        ])
        .args([
            "-b:v",
            "5M",
            "-minrate",
            "5M",
            "-maxrate",
            "5M",
            "-bufsize",
            "2M",
            "-x264-params",
            "nal-hrd=cbr",
        ])
        .args(["-c:a", "aac", "-b:a", "128k", "-ac", "2"])
        .args(["-f", "mpegts", "-mpegts_service_id", "1"])
        .arg(&partial)
        .stdin(Stdio::null())
        .status()
        .context("running ffmpeg")?;
    if !status.success() {
        bail!("ffmpeg could not make the test channel");
    }
    std::fs::rename(&partial, &path)?;
    Ok(path)
}

/// Bit rate of a looped TS file that lasts `seconds`.
pub fn file_bitrate(path: &Path, seconds: f64) -> f64 {
    path.metadata()
        .map_or(0.0, |m| m.len() as f64 * 8.0 / seconds)
}

/// The server configuration with one channel: the 5 Mbit/s test file.
pub fn tv_config(input: &Path) -> toml::Table {
    let mut tv = toml::Table::new();
    tv.insert("demo".into(), false.into());
    let mut input_t = toml::Table::new();
    input_t.insert("url".into(), input.display().to_string().into());
    input_t.insert("name".into(), "Bench 5M".into());
    tv.insert("inputs".into(), toml::Value::Array(vec![input_t.into()]));
    let mut cfg = toml::Table::new();
    cfg.insert("tv".into(), tv.into());
    // Without the demo nobody may stream unless allowed.
    let mut access = toml::Table::new();
    access.insert("anonymous".into(), true.into());
    cfg.insert("access".into(), access.into());
    cfg
}

/// Share of a TS file's bytes that are elementary-stream payload (what
/// HTSP's muxpkt carries), by running our demuxer over it.
pub fn payload_fraction(path: &Path) -> anyhow::Result<f64> {
    let data = std::fs::read(path)?;
    let mut events = Vec::new();
    let mut d = media::Demuxer::new();
    let mut payload = 0usize;
    for piece in data.chunks(64 * 1024) {
        d.push(piece, &mut events);
        for e in events.drain(..) {
            if let media::DemuxEvent::Frame { frame, .. } = e {
                payload += frame.data.len();
            }
        }
    }
    d.flush(&mut events);
    for e in events.drain(..) {
        if let media::DemuxEvent::Frame { frame, .. } = e {
            payload += frame.data.len();
        }
    }
    Ok(payload as f64 / data.len().max(1) as f64)
}

/// BENCHMARKS.md: a header, then per scenario its latest results fragment
/// and the hand-written analysis in bench/notes/<scenario>.md.
pub fn write_benchmarks_md(results: &Path, out: &Path, machine: &Machine) -> anyhow::Result<()> {
    let notes = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("notes");
    let mut md = std::fs::read_to_string(notes.join("header.md"))
        .unwrap_or_else(|_| "# Benchmarks\n".into());
    md.push_str(&format!(
        "\nThis machine when the report was gathered: {}.\n",
        machine.one_line()
    ));
    for name in ORDER {
        md.push_str(&format!("\n## {name}\n\n"));
        match std::fs::read_to_string(results.join(format!("{name}.md"))) {
            Ok(text) => md.push_str(&text),
            Err(_) => md.push_str(&format!(
                "Not run yet: `cargo run --release -p switchyard-bench -- {name}`.\n"
            )),
        }
        if let Ok(text) = std::fs::read_to_string(notes.join(format!("{name}.md"))) {
            md.push('\n');
            md.push_str(&text);
        }
    }
    std::fs::write(out, md).with_context(|| format!("writing {}", out.display()))
}
