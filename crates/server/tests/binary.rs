//! The `switchyard` binary as users run it: `--http --data DIR --config FILE`
//! on a loopback port, exercised with an HTTP client. TV over HTTP, the
//! playlist and guide, the JSON API, health and metrics, configuration
//! errors, and shutdown on SIGTERM.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use tokio::time::{Instant, timeout_at};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// Everything but the web port off, so parallel tests (and other helpers'
/// servers) do not fight over the default ports.
fn config_text(port: u16, extra_tv: &str) -> String {
    format!(
        "[web]\nlisten = \"127.0.0.1:{port}\"\n\n\
         [tv]\ngrace_secs = 0.3\n{extra_tv}\n\
         [access]\nanonymous = true\n\n\
         [htsp]\nenabled = false\n\n\
         [heliostv]\nenabled = false\n\n\
         [movie]\nenabled = false\n\n\
         [galene]\nenabled = false\n\n\
         [owt]\nenabled = false\n"
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Server {
    child: Child,
    base: String,
    dir: tempfile::TempDir,
    client: reqwest::Client,
}

impl Server {
    async fn start() -> Server {
        Server::launch(tempfile::tempdir().unwrap(), false).await
    }

    /// Start in `dir` (its config and data folder), with `--http` unless
    /// `https`, in which case the client accepts the self-signed certificate.
    async fn launch(dir: tempfile::TempDir, https: bool) -> Server {
        let port = free_port();
        let config = dir.path().join("switchyard.toml");
        std::fs::write(&config, config_text(port, "")).unwrap();
        // Logs go to stdout with the banner; both into one file.
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        let mut command = Command::new(BIN);
        if !https {
            command.arg("--http");
        }
        let child = command
            .arg("--data")
            .arg(dir.path().join("data"))
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let scheme = if https { "https" } else { "http" };
        let server = Server {
            child,
            base: format!("{scheme}://127.0.0.1:{port}"),
            dir,
            client: reqwest::Client::builder()
                .danger_accept_invalid_certs(https)
                .build()
                .unwrap(),
        };
        // Up when /healthz answers (bounded: 20 s for a debug build on a busy machine).
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = server.client.get(server.url("/healthz")).send().await
                && r.status() == 200
            {
                return server;
            }
            assert!(
                Instant::now() < deadline,
                "server did not come up; its log:\n{}",
                server.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    async fn get(&self, path: &str) -> (u16, String, String) {
        let r = self.client.get(self.url(path)).send().await.unwrap();
        let status = r.status().as_u16();
        let ctype = r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        (status, ctype, r.text().await.unwrap())
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait (bounded) for the process to exit.
    async fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Read a stream for `within` (or until `enough` bytes).
async fn read_stream(resp: &mut reqwest::Response, within: Duration, enough: usize) -> Vec<u8> {
    let deadline = Instant::now() + within;
    let mut data = Vec::new();
    while data.len() < enough {
        match timeout_at(deadline, resp.chunk()).await {
            Ok(Ok(Some(b))) => data.extend_from_slice(&b),
            Ok(Ok(None)) | Ok(Err(_)) | Err(_) => break,
        }
    }
    data
}

fn pid_of(p: &[u8]) -> u16 {
    (u16::from(p[1] & 0x1f) << 8) | u16::from(p[2])
}

/// The programme numbers listed by the first PAT of a TS.
fn pat_programs(ts: &[u8]) -> Vec<u16> {
    let pkt = ts
        .chunks_exact(188)
        .find(|p| p[0] == 0x47 && pid_of(p) == 0 && p[1] & 0x40 != 0)
        .expect("a PAT");
    let payload = &pkt[4..];
    let section = &payload[1 + payload[0] as usize..];
    let len = 3 + ((usize::from(section[1] & 0x0f) << 8) | usize::from(section[2]));
    let pat = media::psi::Pat::parse(&section[..len]).expect("a valid PAT");
    pat.programs.iter().map(|(n, _)| *n).collect()
}

/// NAL unit types of an Annex-B buffer, in order.
fn nal_types(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i + 3 < data.len() {
        if data[i..i + 3] == [0, 0, 1] {
            out.push(data[i + 3] & 0x1f);
            i += 3;
        } else {
            i += 1;
        }
    }
    out
}

/// What a player would see in a TS: the programmes and the first video frame.
fn demux(ts: &[u8]) -> (Vec<media::Program>, Option<media::Frame>) {
    let mut d = media::Demuxer::new();
    let mut events = Vec::new();
    d.push(ts, &mut events);
    d.flush(&mut events);
    let mut first_video = None;
    for e in events {
        if let media::DemuxEvent::Frame { frame, .. } = e
            && first_video.is_none()
            && d.programs()
                .iter()
                .any(|p| p.track(frame.pid).is_some_and(|t| t.codec.is_video()))
        {
            first_video = Some(frame);
        }
    }
    (d.programs().to_vec(), first_video)
}

/// Connect to a stream and check what a player needs within 2 s: one
/// programme in the PAT, and video that starts on an IDR after SPS and PPS.
async fn check_stream(server: &Server, path: &str, program_number: u16) {
    let t0 = Instant::now();
    let mut resp = reqwest::get(server.url(path)).await.unwrap();
    assert_eq!(resp.status(), 200, "{path}");
    assert_eq!(resp.headers()["content-type"], "video/mp2t");
    let ts = read_stream(
        &mut resp,
        Duration::from_secs(2).saturating_sub(t0.elapsed()),
        usize::MAX,
    )
    .await;
    assert!(
        ts.len() > 188 * 100,
        "{path}: only {} bytes in 2 s",
        ts.len()
    );
    assert_eq!(ts[0], 0x47, "{path}: starts on a packet boundary");
    assert_eq!(pid_of(&ts), 0, "{path}: starts with the PAT");
    assert_eq!(
        pat_programs(&ts),
        vec![program_number],
        "{path}: exactly one programme"
    );
    let (programs, first_video) = demux(&ts);
    assert_eq!(programs.len(), 1);
    assert!(programs[0].is_ready(), "{path}: {programs:?}");
    let v = first_video.unwrap_or_else(|| panic!("{path}: no video in 2 s"));
    assert!(v.is_key(), "{path}: video starts on a keyframe");
    let nals = nal_types(&v.data);
    let idr = nals
        .iter()
        .position(|&t| t == 5)
        .unwrap_or_else(|| panic!("{path}: no IDR in {nals:?}"));
    let first_slice = nals.iter().position(|&t| t == 1 || t == 5).unwrap();
    assert_eq!(
        first_slice, idr,
        "{path}: the first picture is the IDR ({nals:?})"
    );
    assert!(
        nals[..idr].contains(&7) && nals[..idr].contains(&8),
        "{path}: SPS and PPS first ({nals:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_by_id_number_and_name_start_with_one_programme_and_an_idr() {
    let server = Server::start().await;
    check_stream(&server, "/stream/channel/1", 1).await;
    check_stream(&server, "/stream/channelnumber/2", 2).await;
    check_stream(&server, "/stream/channelname/Switchyard%20Two", 2).await;

    for (path, named) in [
        ("/stream/channel/99", "99"),
        ("/stream/channelnumber/42", "42"),
        ("/stream/channelname/Nowhere%20TV", "Nowhere TV"),
    ] {
        let (status, _, body) = server.get(path).await;
        assert_eq!(status, 404, "{path}");
        assert!(
            body.contains(named),
            "{path}: the 404 names the channel: {body:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn playlist_guide_api_health_and_metrics() {
    let server = Server::start().await;

    let (status, ctype, body) = server.get("/playlist").await;
    assert_eq!(status, 200);
    assert!(ctype.contains("mpegurl"), "{ctype}");
    let pl = media::m3u::parse_m3u(body.as_bytes());
    assert!(pl.warnings.is_empty(), "{:?}", pl.warnings);
    assert_eq!(pl.entries.len(), 2, "{body}");
    let one = &pl.entries[0];
    assert_eq!(one.name, "Switchyard One");
    assert_eq!(
        one.url,
        server.url("/stream/channelid/1"),
        "URLs use the address the client used"
    );
    // tvg-id is the channel's uuid, as in Tvheadend's playlists (HTSP §10.3).
    let tvg_ids: Vec<String> = pl
        .entries
        .iter()
        .map(|e| e.tvg_id.clone().unwrap_or_default())
        .collect();
    assert!(
        tvg_ids
            .iter()
            .all(|t| t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit())),
        "{tvg_ids:?}"
    );
    assert_eq!(one.tvg_chno.as_deref(), Some("1"));
    assert!(
        one.group_title.as_deref().unwrap_or("").contains("Demo"),
        "{one:?}"
    );
    assert_eq!(pl.entries[1].url, server.url("/stream/channelid/2"));

    let now = chrono::Utc::now().timestamp();
    let (status, ctype, body) = server.get("/xmltv").await;
    assert_eq!(status, 200);
    assert!(ctype.contains("xml"), "{ctype}");
    let guide = media::xmltv::parse_xmltv(body.as_bytes());
    assert!(guide.warnings.is_empty(), "{:?}", guide.warnings);
    let ids: Vec<&str> = guide.channels.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(
        ids, tvg_ids,
        "the guide's channel ids are the playlist's tvg-ids"
    );
    for id in ids {
        assert!(
            guide
                .programmes
                .iter()
                .any(|p| p.channel == id && p.start <= now && p.stop.is_some_and(|s| s > now)),
            "{id} has a programme on now"
        );
    }

    let (status, ctype, body) = server.get("/api/channels").await;
    assert_eq!(status, 200);
    assert!(ctype.contains("json"), "{ctype}");
    let chans: serde_json::Value = serde_json::from_str(&body).unwrap();
    let chans = chans.as_array().expect("an array");
    assert_eq!(chans.len(), 2);
    assert_eq!(chans[0]["name"], "Switchyard One");
    assert_eq!(chans[0]["number"], 1);
    assert_eq!(chans[0]["stream"], "/stream/channel/1");
    assert!(chans[0]["now"]["title"].is_string(), "{}", chans[0]);
    assert!(chans[1]["next"]["start"].as_i64().unwrap() > now);

    let (status, _, body) = server.get("/api/epg?channel=1").await;
    assert_eq!(status, 200);
    let events: serde_json::Value = serde_json::from_str(&body).unwrap();
    let events = events.as_array().unwrap();
    assert!(events.len() >= 40, "a day of half hours: {}", events.len());
    assert!(events.iter().all(|e| e["channel_id"] == 1));
    let starts: Vec<i64> = events
        .iter()
        .map(|e| e["start"].as_i64().unwrap())
        .collect();
    assert!(starts.windows(2).all(|w| w[0] < w[1]), "sorted by start");
    assert!(
        starts[0] <= now && events[0]["stop"].as_i64().unwrap() > now,
        "starts with what is on now"
    );
    let (status, _, body) = server.get("/api/epg?channel=99").await;
    assert_eq!(status, 404);
    assert!(body.contains("99"), "{body}");

    let (status, _, body) = server.get("/healthz").await;
    assert_eq!((status, body.trim()), (200, "ok"));

    // A stream counts in the metrics.
    let mut resp = reqwest::get(server.url("/stream/channel/2")).await.unwrap();
    assert!(
        !read_stream(&mut resp, Duration::from_secs(5), 188 * 50)
            .await
            .is_empty()
    );
    let (status, ctype, metrics) = server.get("/metrics").await;
    assert_eq!(status, 200);
    assert!(ctype.starts_with("text/plain"), "{ctype}");
    assert_eq!(
        gauge(&metrics, "switchyard_source_running"),
        Some(1.0),
        "{metrics}"
    );
    assert!(
        gauge(&metrics, "switchyard_http_streams_total").is_some_and(|v| v >= 1.0),
        "{metrics}"
    );
}

/// The value of an unlabelled sample in Prometheus text.
fn gauge(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_run_while_watched_and_stop_after_the_grace_period() {
    let server = Server::start().await;
    let srv = &server;
    let running = move || async move {
        let (_, _, m) = srv.get("/metrics").await;
        gauge(&m, "switchyard_source_running").unwrap_or(0.0)
    };
    assert_eq!(running().await, 0.0, "nothing watched, nothing running");
    let mut a = reqwest::get(server.url("/stream/channel/1")).await.unwrap();
    let mut b = reqwest::get(server.url("/stream/channel/2")).await.unwrap();
    assert!(
        !read_stream(&mut a, Duration::from_secs(5), 188 * 10)
            .await
            .is_empty()
    );
    assert!(
        !read_stream(&mut b, Duration::from_secs(5), 188 * 10)
            .await
            .is_empty()
    );
    assert_eq!(running().await, 2.0);
    drop(a);
    // grace_secs = 0.3: channel 1 stops, channel 2 keeps running.
    let deadline = Instant::now() + Duration::from_secs(5);
    while running().await != 1.0 {
        assert!(Instant::now() < deadline, "channel 1's source did not stop");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !read_stream(&mut b, Duration::from_secs(5), 188 * 10)
            .await
            .is_empty(),
        "channel 2 unaffected"
    );
    drop(b);
    let deadline = Instant::now() + Duration::from_secs(5);
    while running().await != 0.0 {
        assert!(Instant::now() < deadline, "channel 2's source did not stop");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_open_streams_and_exits_cleanly() {
    let mut server = Server::start().await;
    let mut resp = reqwest::get(server.url("/stream/channel/1")).await.unwrap();
    assert!(
        read_stream(&mut resp, Duration::from_secs(5), 188 * 100)
            .await
            .len()
            >= 188 * 100
    );

    let t0 = Instant::now();
    let kill = Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    // The open stream ends (rather than hanging)...
    let rest = read_stream(&mut resp, Duration::from_secs(5), usize::MAX).await;
    let stream_end = t0.elapsed();
    assert!(
        stream_end < Duration::from_secs(5),
        "stream still open after {stream_end:?} ({} bytes)",
        rest.len()
    );
    // ...and the process exits with 0 within a few seconds.
    let status = server.wait_exit(Duration::from_secs(8)).await;
    let status =
        status.unwrap_or_else(|| panic!("still running 8 s after SIGTERM; log:\n{}", server.log()));
    assert_eq!(status.code(), Some(0), "log:\n{}", server.log());
    assert!(
        t0.elapsed() < Duration::from_secs(6),
        "took {:?}",
        t0.elapsed()
    );
    assert!(server.log().contains("shutting down"));
}

fn run(args: &[&str], dir: &Path) -> (Option<i32>, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn config_errors_name_file_line_and_key_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let unknown = write(
        dir.path(),
        "unknown.toml",
        "[web]\nplain_http = true\n\n[tv]\ndemo = true\nfrobnicate = 1\n",
    );
    let (code, _, err) = run(&["--config", unknown.to_str().unwrap()], dir.path());
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(&format!("{}:6:", unknown.display())),
        "file and line: {err}"
    );
    assert!(err.contains("frobnicate"), "the key: {err}");

    let bad = write(
        dir.path(),
        "bad.toml",
        "[tv]\ndemo = true\ngrace_secs = \"soon\"\n",
    );
    let (code, _, err) = run(&["--config", bad.to_str().unwrap()], dir.path());
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(&format!("{}:3:", bad.display())),
        "file and line: {err}"
    );
    assert!(err.contains("grace_secs"), "the key: {err}");

    let addr = write(dir.path(), "addr.toml", "\n[web]\nlisten = \"nowhere\"\n");
    let (code, _, err) = run(&["--config", addr.to_str().unwrap()], dir.path());
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(&format!("{}:3:", addr.display())),
        "file and line: {err}"
    );
    assert!(err.contains("listen"), "the key: {err}");

    let (code, _, err) = run(&["--config", "/nonexistent/switchyard.toml"], dir.path());
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("/nonexistent/switchyard.toml"), "{err}");
}

#[test]
fn printed_config_parses_back_to_the_same_config() {
    let dir = tempfile::tempdir().unwrap();
    let port = 18_443;
    let cfg = write(
        dir.path(),
        "in.toml",
        &config_text(
            port,
            "demo = false\n[[tv.inputs]]\nurl = \"udp://127.0.0.1:5000\"\nname = \"Studio\"\ntags = [\"Live\"]\n",
        )
        .replace(
            "[movie]\n",
            "[movie]\nsession_ports = \"40000-40099\"\n",
        ),
    );
    let (code, printed, err) = run(
        &["--config", cfg.to_str().unwrap(), "--print-config"],
        dir.path(),
    );
    assert_eq!(code, Some(0), "{err}");
    let value: toml::Value = toml::from_str(&printed).unwrap_or_else(|e| panic!("{e}\n{printed}"));
    assert_eq!(value["web"]["listen"].as_str(), Some("127.0.0.1:18443"));
    assert_eq!(value["tv"]["inputs"][0]["name"].as_str(), Some("Studio"));
    assert_eq!(value["htsp"]["enabled"].as_bool(), Some(false));
    // The movie keys in the notation of the reference's §13.
    assert_eq!(
        value["movie"]["session_ports"].as_str(),
        Some("40000-40099")
    );
    assert_eq!(value["movie"]["registration_window"].as_str(), Some("30 s"));
    assert_eq!(value["movie"]["pause_max"].as_str(), Some("600 s"));
    // Fed back as a configuration, it prints the same again.
    let again = write(dir.path(), "printed.toml", &printed);
    let (code, printed2, err) = run(
        &["--config", again.to_str().unwrap(), "--print-config"],
        dir.path(),
    );
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(printed2, printed);

    // Without a file: the demo defaults, also valid TOML.
    let (code, printed, _) = run(&["--print-config"], dir.path());
    assert_eq!(code, Some(0));
    let value: toml::Value = toml::from_str(&printed).unwrap();
    assert_eq!(value["tv"]["demo"].as_bool(), Some(true));
}

#[test]
fn help_shows_examples() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = run(&["--help"], dir.path());
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("Examples:"), "{out}");
    assert!(out.contains("switchyard --config"), "{out}");
    assert!(out.contains("--print-config"), "{out}");
    assert!(out.contains("/stream/channel/1"), "{out}");
}

#[tokio::test]
async fn https_uses_a_self_signed_certificate_made_once_and_the_banner_names_the_urls() {
    let mut server = Server::launch(tempfile::tempdir().unwrap(), true).await;
    let cert_path = server.dir.path().join("data").join("cert.pem");
    let cert = std::fs::read_to_string(&cert_path).expect("cert.pem in the data folder");
    assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"), "{cert}");

    // TV over HTTPS, not only the health check.
    let (status, ctype, playlist) = server.get("/playlist").await;
    assert_eq!(status, 200, "{playlist}");
    assert!(ctype.contains("mpegurl"), "{ctype}");
    assert!(
        playlist.contains(&server.url("/stream/channelid/")),
        "{playlist}"
    );

    // The banner names each listener with its URL and every channel's stream.
    let log = server.log();
    for line in [
        format!("web        {}/", server.base),
        format!("TV (HTTP)  {}/playlist", server.base),
        format!("{}/stream/channel/1", server.base),
        format!("{}/stream/channel/2", server.base),
    ] {
        assert!(log.contains(&line), "banner lacks {line:?}:\n{log}");
    }

    // Plain HTTP on the TLS port is not served.
    let plain = server.url("/healthz").replacen("https://", "http://", 1);
    assert!(
        reqwest::get(&plain).await.is_err(),
        "plain HTTP answered on the HTTPS port"
    );

    // A second start in the same data folder keeps the certificate.
    let _ = server.child.kill();
    let _ = server.child.wait();
    let dir = std::mem::replace(&mut server.dir, tempfile::tempdir().unwrap());
    drop(server);
    let again = Server::launch(dir, true).await;
    let (status, _, _) = again.get("/healthz").await;
    assert_eq!(status, 200);
    assert_eq!(
        std::fs::read_to_string(&cert_path).unwrap(),
        cert,
        "certificate regenerated"
    );
}

#[test]
fn the_readme_configuration_example_is_accepted() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let section = readme
        .split("## Configuration")
        .nth(1)
        .expect("a Configuration section");
    let example = section
        .split("```toml")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a toml example");
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "example.toml", example);
    let (code, out, err) = run(&["--config", "example.toml", "--print-config"], dir.path());
    assert_eq!(code, Some(0), "{err}");
    for line in [
        "library = \"/srv/movies\"",
        "cidr = \"192.168.1.0/24\"",
        "anonymous = false",
    ] {
        assert!(out.contains(line), "printed config lacks {line}:\n{out}");
    }
}
