//! The `switchyard` server as a child process: built with
//! `cargo build --release -p switchyard`, started on free loopback ports with
//! a temporary data folder and configuration, watched through
//! `/proc/<pid>`, and killed when dropped.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::machine::{proc_cpu, proc_rss};

/// The binary at `given`, or the one `cargo build --release -p switchyard` makes.
pub fn locate_or_build(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = given {
        if !p.is_file() {
            bail!("no server binary at {}", p.display());
        }
        return Ok(p.to_path_buf());
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    println!("building the server: cargo build --release -p switchyard");
    let out = Command::new(cargo)
        .current_dir(&workspace)
        .args([
            "build",
            "--release",
            "-p",
            "switchyard",
            "--message-format=json-render-diagnostics",
        ])
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo")?;
    if !out.status.success() {
        bail!("cargo build --release -p switchyard failed");
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    for line in stdout.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v["reason"] == "compiler-artifact"
            && v["target"]["name"] == "switchyard"
            && let Some(exe) = v["executable"].as_str()
        {
            return Ok(PathBuf::from(exe));
        }
    }
    bail!("cargo built no `switchyard` executable")
}

/// A free TCP port on 127.0.0.1 (free when asked; the server binds it soon after).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A free UDP port on 127.0.0.1.
pub fn free_udp_port() -> anyhow::Result<u16> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// `switchyard --print-config`, parsed: which sections this build knows.
pub fn printed_config(bin: &Path) -> anyhow::Result<toml::Table> {
    let out = Command::new(bin)
        .arg("--print-config")
        .output()
        .context("switchyard --print-config")?;
    let text = String::from_utf8_lossy(&out.stdout);
    toml::from_str(&text).context("parsing switchyard --print-config")
}

pub struct ServerProcess {
    child: Child,
    pub pid: u32,
    pub web: SocketAddr,
    pub dir: tempfile::TempDir,
    /// Every listener moved to a free loopback port, by `section.key`.
    pub listeners: BTreeMap<String, SocketAddr>,
}

/// Sections whose listeners are UDP.
const UDP_SECTIONS: &[&str] = &["movie", "rtc"];

/// Moves every `*listen*` key of every section the server knows to a free
/// 127.0.0.1 port, so the bench never binds a public address nor collides
/// with another server on this machine.
fn loopback_listeners(
    printed: &toml::Table,
    listeners: &mut BTreeMap<String, SocketAddr>,
) -> anyhow::Result<toml::Table> {
    let mut out = toml::Table::new();
    for (section, value) in printed {
        let Some(table) = value.as_table() else {
            continue;
        };
        if section == "web" {
            continue;
        }
        let mut moved = toml::Table::new();
        for (key, v) in table {
            if !key.contains("listen") {
                continue;
            }
            let port = if UDP_SECTIONS.contains(&section.as_str()) {
                free_udp_port()?
            } else {
                free_port()?
            };
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let new = match v {
                toml::Value::String(_) => toml::Value::String(addr.to_string()),
                toml::Value::Array(_) => {
                    toml::Value::Array(vec![toml::Value::String(addr.to_string())])
                }
                _ => continue,
            };
            listeners.insert(format!("{section}.{key}"), addr);
            moved.insert(key.clone(), new);
        }
        if section == "rtc" {
            // Media ports: ephemeral, loopback candidates only.
            moved.insert("port_base".into(), toml::Value::Integer(0));
            moved.insert(
                "host_addresses".into(),
                toml::Value::Array(vec!["127.0.0.1".into()]),
            );
        }
        if !moved.is_empty() {
            out.insert(section.clone(), moved.into());
        }
    }
    Ok(out)
}

/// `over` merged into `base`, tables key by key.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

impl ServerProcess {
    /// Starts `bin` with `config` (its `[web]` listen address is set here)
    /// and waits until `/healthz` answers.
    pub fn start(bin: &Path, scenario_config: toml::Table) -> anyhow::Result<ServerProcess> {
        let dir = tempfile::Builder::new()
            .prefix("switchyard-bench-")
            .tempdir()?;
        let web = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let mut listeners = BTreeMap::new();
        let mut config = loopback_listeners(&printed_config(bin)?, &mut listeners)?;
        let mut web_table = toml::Table::new();
        web_table.insert("listen".into(), web.to_string().into());
        web_table.insert("plain_http".into(), true.into());
        config.insert("web".into(), web_table.into());
        merge(&mut config, scenario_config);
        let cfg_path = dir.path().join("switchyard.toml");
        std::fs::write(&cfg_path, toml::to_string(&config)?)?;
        let log = std::fs::File::create(dir.path().join("server.log"))?;
        let child = Command::new(bin)
            .arg("--http")
            .arg("--data")
            .arg(dir.path().join("data"))
            .arg("--config")
            .arg(&cfg_path)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id();
        let mut server = ServerProcess {
            child,
            pid,
            web,
            dir,
            listeners,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = server.child.try_wait()? {
                bail!(
                    "switchyard exited at start ({status}):\n{}",
                    server.log_tail()
                );
            }
            if matches!(http_get(web, "/healthz"), Ok((200, _))) {
                return Ok(server);
            }
            if Instant::now() > deadline {
                bail!(
                    "switchyard did not answer /healthz within 30 s:\n{}",
                    server.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The loopback address of a section's first listener (`htsp`,
    /// `heliostv.control_listen`, ...).
    pub fn port(&self, key: &str) -> Option<SocketAddr> {
        self.listeners
            .get(key)
            .or_else(|| {
                self.listeners
                    .iter()
                    .find(|(k, _)| k.split('.').next() == Some(key))
                    .map(|(_, v)| v)
            })
            .copied()
    }

    pub fn cpu(&self) -> Duration {
        proc_cpu(self.pid).unwrap_or_default()
    }

    /// Run-queue wait of all the server's threads so far.
    pub fn waited(&self) -> Duration {
        crate::machine::proc_runqueue_wait(self.pid)
    }

    pub fn rss(&self) -> u64 {
        proc_rss(self.pid).unwrap_or(0)
    }

    pub fn get(&self, path: &str) -> anyhow::Result<String> {
        let (status, body) = http_get(self.web, path)?;
        if status != 200 {
            bail!("GET {path}: status {status}: {body}");
        }
        Ok(body)
    }

    /// The last lines of the server's log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Whether the log has lines at WARN or above (worth a note in the report).
    pub fn log_warnings(&self) -> usize {
        let text = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        text.lines()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .count()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sum of the samples of metric `name` in Prometheus text format.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            if !(rest.starts_with('{') || rest.starts_with(' ')) {
                return None;
            }
            l.rsplit(' ').next()?.parse::<f64>().ok()
        })
        .sum()
}

/// A plain HTTP/1.0 GET on loopback: status and body.
pub fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut buf = Vec::new();
    s.take(64 << 20).read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .context("no HTTP status")?;
    Ok((status, body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_sum_adds_label_sets_and_skips_longer_names() {
        let text = "# TYPE a counter\na{x=\"1\"} 2\na{x=\"2\"} 3\na_total 100\na 1\n";
        assert_eq!(metric_sum(text, "a"), 6.0);
    }
}
