//! `owt-signaling`: the OWT portal's signalling rates over Socket.IO
//! (Engine.IO 4 over WebSocket, frames from `owt::client`), against the
//! server child process:
//!
//! 1. login tokens per second from the REST API (`POST /v1/rooms/public/tokens`, MAuth);
//! 2. logins per second: WebSocket connect, Socket.IO connect, `login`, `logout`;
//! 3. publish negotiations per second: `publish`, `soac` offer, the answer in
//!    a `progress` notification, `unpublish` (the offer is one str0m offer,
//!    reused; no media flows);
//! 4. subscribe negotiations per second against one real, ready publication:
//!    `subscribe`, a recvonly str0m offer in `soac` (OWT subscribers offer,
//!    the portal answers), the answer in a `progress` notification,
//!    `unsubscribe` (the offer is reused, as for publishing);
//! 5. server CPU and memory per idle participant with many logged in, over
//!    a window longer than the Engine.IO ping interval so heartbeats count.
//!
//! Issue #7's targets: 1000 idle connected participants under 5 % of a
//! core, and 200 publish and subscribe negotiations per second.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use futures::{SinkExt, StreamExt};
use owt::client::{CONNECT, Frame, PONG, decode_frame, encode_request};
use owt::wire::{Ack, LoginRequest, Notification, ProgressStatus, Request};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use super::load::wait_until;
use crate::machine::self_cpu;
use crate::output::{Plot, Report, Series, Table, Verdict};
use crate::server::ServerProcess;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

const SERVICE_ID: &str = "switchyard-bench";
const SERVICE_KEY: &str = "switchyard-bench-key";
/// Every step of a client waits at most this long.
const STEP: Duration = Duration::from_secs(20);
const TARGET: &str = "1000 idle connected participants under 5 % of a core; 200 publish and 200 subscribe negotiations per second (logins per second recorded)";
/// Negotiations in flight at once, each on its own logged-in client.
const NEGOTIATORS: usize = 16;

struct Client {
    ws: Ws,
    next_ack: u64,
}

impl Client {
    async fn connect(web: SocketAddr) -> anyhow::Result<Client> {
        let url = format!("ws://{web}/socket.io/?EIO=4&transport=websocket");
        let (ws, _) = tokio::time::timeout(STEP, tokio_tungstenite::connect_async(url)).await??;
        let mut c = Client { ws, next_ack: 0 };
        if !matches!(c.frame().await?, Frame::Open { .. }) {
            bail!("no Engine.IO open");
        }
        c.ws.send(Message::text(CONNECT)).await?;
        if !matches!(c.frame().await?, Frame::Connected { .. }) {
            bail!("no Socket.IO connect");
        }
        Ok(c)
    }

    /// The next frame that is not a heartbeat (pings are answered here).
    async fn frame(&mut self) -> anyhow::Result<Frame> {
        loop {
            let msg = tokio::time::timeout(STEP, self.ws.next())
                .await
                .map_err(|_| anyhow!("no frame within {STEP:?}"))?
                .ok_or_else(|| anyhow!("connection closed"))??;
            if let Message::Text(t) = msg {
                let f = decode_frame(t.as_str());
                if f == Frame::Ping {
                    self.ws.send(Message::text(PONG)).await?;
                    continue;
                }
                return Ok(f);
            }
        }
    }

    async fn req(&mut self, r: &Request) -> anyhow::Result<Ack> {
        self.next_ack += 1;
        let id = self.next_ack;
        self.ws.send(Message::text(encode_request(id, r))).await?;
        loop {
            if let Frame::Ack { id: got, ack, args } = self.frame().await?
                && got == id
            {
                return ack.ok_or_else(|| anyhow!("unreadable ack {args:?}"));
            }
        }
    }

    async fn req_ok(&mut self, r: &Request) -> anyhow::Result<Option<Value>> {
        match self.req(r).await? {
            Ack::Ok(v) => Ok(v),
            Ack::Error(e) => bail!("{} refused: {e}", r.event()),
        }
    }

    /// Waits for the `progress` notification of `id` with a `soac` payload.
    async fn soac_of(&mut self, id: &str) -> anyhow::Result<Value> {
        loop {
            if let Frame::Notification(Notification::Progress { id: got, status }) =
                self.frame().await?
                && got == id
            {
                match status {
                    ProgressStatus::Soac(v) => return Ok(v),
                    ProgressStatus::Error(e) => bail!("progress error: {e}"),
                    ProgressStatus::Ready => {}
                }
            }
        }
    }

    async fn ready_of(&mut self, id: &str) -> anyhow::Result<()> {
        loop {
            if let Frame::Notification(Notification::Progress { id: got, status }) =
                self.frame().await?
                && got == id
            {
                match status {
                    ProgressStatus::Ready => return Ok(()),
                    ProgressStatus::Error(e) => bail!("progress error: {e}"),
                    ProgressStatus::Soac(_) => {}
                }
            }
        }
    }

    async fn login(&mut self, token: String) -> anyhow::Result<Value> {
        let ua = serde_json::from_value(json!({"sdk": {"type": "C++", "version": "4.3"},
            "runtime": {"name": "switchyard-bench", "version": "1"}, "os": {"name": "Linux", "version": "6"}}))?;
        let login = Request::Login(LoginRequest {
            token,
            user_agent: Some(ua),
            protocol: Some("1.1".into()),
        });
        self.req_ok(&login)
            .await?
            .ok_or_else(|| anyhow!("login without a result"))
    }

    /// Reads (and answers heartbeats) until the connection ends.
    async fn idle(mut self) {
        // No step timeout here: an idle connection may hear nothing but pings.
        while let Some(Ok(msg)) = self.ws.next().await {
            if let Message::Text(t) = msg
                && decode_frame(t.as_str()) == Frame::Ping
                && self.ws.send(Message::text(PONG)).await.is_err()
            {
                break;
            }
        }
    }
}

/// A login token from the management API.
async fn token(web: SocketAddr, user: &str, role: &str) -> anyhow::Result<String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64;
    let cnonce = format!("{:016x}", rand_u64());
    let auth = owt::rest::MAuth::header(SERVICE_ID, SERVICE_KEY, now, &cnonce, None);
    let body = json!({"user": user, "role": role}).to_string();
    let req = format!(
        "POST /v1/rooms/public/tokens HTTP/1.1\r\nHost: {web}\r\nConnection: close\r\nAuthorization: {auth}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut s = tokio::time::timeout(STEP, TcpStream::connect(web)).await??;
    s.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(STEP, (&mut s).take(1 << 20).read_to_end(&mut raw)).await??;
    let text = String::from_utf8_lossy(&raw);
    let (head, rest) = text.split_once("\r\n\r\n").context("no HTTP head")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("token request: {}", head.lines().next().unwrap_or(""));
    }
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        // One chunk carries the token.
        rest.split("\r\n").nth(1).unwrap_or("").to_string()
    } else {
        rest.to_string()
    };
    Ok(body.trim().trim_matches('"').to_string())
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish()
}

struct Rate {
    what: &'static str,
    count: usize,
    failed: usize,
    wall: Duration,
    /// Server CPU over the phase.
    cpu: Duration,
    /// This process's CPU (the clients) over the phase.
    bench_cpu: Duration,
    /// Time the server's threads were runnable but waiting for a CPU.
    waited: Duration,
    load_average: f64,
}

/// Counters at the start of a phase.
#[derive(Clone, Copy)]
struct Mark {
    t0: Instant,
    cpu: Duration,
    bench_cpu: Duration,
    waited: Duration,
}

impl Mark {
    fn take(server: &ServerProcess) -> Mark {
        Mark {
            t0: Instant::now(),
            cpu: server.cpu(),
            bench_cpu: self_cpu(),
            waited: server.waited(),
        }
    }
}

/// Runs `op(i)` for i in 0..count with `concurrency` workers; counts successes.
async fn run_ops<F, Fut>(count: usize, concurrency: usize, op: F) -> (usize, Vec<String>)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let op = Arc::new(op);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let next = next.clone();
        let op = op.clone();
        tasks.spawn(async move {
            let mut ok = 0;
            let mut errors = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                match op(i).await {
                    Ok(()) => ok += 1,
                    Err(e) => errors.push(format!("{e:#}")),
                }
            }
            (ok, errors)
        });
    }
    let mut ok = 0;
    let mut errors = Vec::new();
    while let Some(r) = tasks.join_next().await {
        if let Ok((o, e)) = r {
            ok += o;
            errors.extend(e);
        }
    }
    (ok, errors)
}

pub fn run(bin: &Path, quick: bool, command: String) -> anyhow::Result<Report> {
    let printed = crate::server::printed_config(bin)?;
    if !printed.contains_key("owt") {
        return Ok(pending(
            command,
            "the server does not serve OWT yet (`[owt]` missing from --print-config)",
        ));
    }
    // Phases are sized to last a few seconds each, so the 10 ms clock
    // ticks of /proc CPU times are small next to what is measured; the idle
    // window spans more than one 25 s ping interval.
    let (ops, neg_ops, idle_n, window): (usize, usize, usize, u64) = if quick {
        (40, 40, 100, 3)
    } else {
        (2000, 1000, 1000, 30)
    };
    let mut cfg = toml::Table::new();
    let mut o = toml::Table::new();
    o.insert("service_id".into(), SERVICE_ID.into());
    o.insert("service_key".into(), SERVICE_KEY.into());
    o.insert("secure".into(), false.into());
    o.insert("persist".into(), false.into());
    o.insert("mauth_failure_delay_ms".into(), toml::Value::Integer(0));
    cfg.insert("owt".into(), o.into());
    let mut tv = toml::Table::new();
    tv.insert("demo".into(), false.into());
    cfg.insert("tv".into(), tv.into());
    let server = ServerProcess::start(bin, cfg)?;
    let web = server.web;
    let rt = super::load::client_runtime()?;
    let mut rates: Vec<Rate> = Vec::new();
    let mut notes = Vec::new();
    let mut record =
        |what, count, ok: usize, errors: Vec<String>, mark: Mark, server: &ServerProcess| {
            let r = Rate {
                what,
                count,
                failed: count - ok,
                wall: mark.t0.elapsed(),
                cpu: server.cpu().saturating_sub(mark.cpu),
                bench_cpu: self_cpu().saturating_sub(mark.bench_cpu),
                waited: server.waited().saturating_sub(mark.waited),
                load_average: crate::machine::load_average(),
            };
            if let Some(e) = errors.first() {
                notes.push(format!("{what}: {} failed, first error: {e}", errors.len()));
            }
            rates.push(r);
        };

    // 1. Tokens.
    println!("owt-signaling: {ops} tokens");
    let mark = Mark::take(&server);
    let tokens = Arc::new(parking_lot_free::Slots::new(ops));
    let slots = tokens.clone();
    let (ok, errors) = rt.block_on(run_ops(ops, 16, move |i| {
        let slots = slots.clone();
        async move {
            let t = token(web, &format!("u{i}"), "presenter").await?;
            slots.put(i, t);
            Ok(())
        }
    }));
    record("REST login tokens", ops, ok, errors, mark, &server);

    // 2. Logins.
    println!("owt-signaling: {ops} logins");
    let mark = Mark::take(&server);
    let slots = tokens.clone();
    let (ok, errors) = rt.block_on(run_ops(ops, 16, move |i| {
        let slots = slots.clone();
        async move {
            let t = slots.take(i).context("no token")?;
            let mut c = Client::connect(web).await?;
            c.login(t).await?;
            c.req_ok(&Request::Logout).await?;
            let _ = c.ws.close(None).await;
            Ok(())
        }
    }));
    record(
        "logins (connect + login + logout)",
        ops,
        ok,
        errors,
        mark,
        &server,
    );

    // 3. Publish negotiations, with one str0m offer reused.
    println!("owt-signaling: {neg_ops} publish negotiations");
    let offer = rt.block_on(async {
        let (_peer, offer) =
            rtc::testpeer::TestPeer::publisher(rtc::testpeer::TestPeerConfig::default())
                .await
                .map_err(|e| anyhow!("test peer: {e}"))?;
        anyhow::Ok(offer)
    })?;
    let publishers = rt.block_on(async {
        let mut v = Vec::new();
        for i in 0..NEGOTIATORS {
            let mut c = Client::connect(web).await?;
            c.login(token(web, &format!("pub{i}"), "presenter").await?)
                .await?;
            v.push(tokio::sync::Mutex::new(c));
        }
        anyhow::Ok(Arc::new(v))
    })?;
    let mark = Mark::take(&server);
    let pubs = publishers.clone();
    let offer = Arc::new(offer);
    let (ok, errors) = rt.block_on(run_ops(neg_ops, NEGOTIATORS, move |i| {
        let pubs = pubs.clone();
        let offer = offer.clone();
        async move {
            let mut c = pubs[i % pubs.len()].lock().await;
            let publish = Request::decode(
                "publish",
                &json!({"media": {"audio": {"source": "mic"}, "video": {"source": "camera"}}, "attributes": {"label": "bench"}}),
            )
            .map_err(|e| anyhow!("{e:?}"))?;
            let v = c.req_ok(&publish).await?.context("publish without id")?;
            let id = v["id"].as_str().context("publish without id")?.to_string();
            let soac = Request::decode("soac", &json!({"id": id, "signaling": {"type": "offer", "sdp": *offer}}))
                .map_err(|e| anyhow!("{e:?}"))?;
            c.req_ok(&soac).await?;
            let answer = c.soac_of(&id).await?;
            if answer["sdp"].as_str().is_none() {
                bail!("no SDP answer");
            }
            c.req_ok(&Request::decode("unpublish", &json!({"id": id})).map_err(|e| anyhow!("{e:?}"))?).await?;
            Ok(())
        }
    }));
    record("publish negotiations", neg_ops, ok, errors, mark, &server);
    drop(publishers);

    // 4. Subscribe negotiations against one real publication.
    println!("owt-signaling: {neg_ops} subscribe negotiations");
    let sub_ops = neg_ops;
    let setup = rt.block_on(async {
        let mut c = Client::connect(web).await?;
        c.login(token(web, "source", "presenter").await?).await?;
        let publish = Request::decode(
            "publish",
            &json!({"media": {"audio": {"source": "mic"}, "video": {"source": "camera"}}, "attributes": {"label": "source"}}),
        )
        .map_err(|e| anyhow!("{e:?}"))?;
        let v = c.req_ok(&publish).await?.context("publish without id")?;
        let id = v["id"].as_str().context("publish without id")?.to_string();
        let (peer, offer) = rtc::testpeer::TestPeer::publisher(rtc::testpeer::TestPeerConfig::default())
            .await
            .map_err(|e| anyhow!("test peer: {e}"))?;
        c.req_ok(&Request::decode("soac", &json!({"id": id, "signaling": {"type": "offer", "sdp": offer}})).map_err(|e| anyhow!("{e:?}"))?)
            .await?;
        let answer = c.soac_of(&id).await?;
        peer.accept_answer(answer["sdp"].as_str().unwrap_or("")).await.map_err(|e| anyhow!("accept answer: {e}"))?;
        c.ready_of(&id).await?;
        let mut viewers = Vec::new();
        for i in 0..NEGOTIATORS {
            let mut v = Client::connect(web).await?;
            v.login(token(web, &format!("viewer{i}"), "viewer").await?).await?;
            viewers.push(tokio::sync::Mutex::new(v));
        }
        let (_offerer, offer) =
            rtc::testpeer::TestPeer::receiver_offering(rtc::testpeer::TestPeerConfig::default())
                .await
                .map_err(|e| anyhow!("test peer: {e}"))?;
        anyhow::Ok((c, peer, id, Arc::new(viewers), Arc::new(offer)))
    });
    match setup {
        Err(e) => {
            notes.push(format!(
                "subscribe negotiations: not measured, the source publication failed: {e:#}"
            ));
        }
        Ok((source, peer, id, viewers, offer)) => {
            let mark = Mark::take(&server);
            let id = Arc::new(id);
            let (ok, errors) = rt.block_on(run_ops(sub_ops, NEGOTIATORS, move |i| {
                let viewers = viewers.clone();
                let id = id.clone();
                let offer = offer.clone();
                async move {
                    let mut c = viewers[i % viewers.len()].lock().await;
                    let sub = Request::decode(
                        "subscribe",
                        &json!({"media": {"audio": {"from": *id}, "video": {"from": *id}}}),
                    )
                    .map_err(|e| anyhow!("{e:?}"))?;
                    let v = c.req_ok(&sub).await?.context("subscribe without id")?;
                    let sid = v["id"]
                        .as_str()
                        .context("subscribe without id")?
                        .to_string();
                    let soac = Request::decode(
                        "soac",
                        &json!({"id": sid, "signaling": {"type": "offer", "sdp": *offer}}),
                    )
                    .map_err(|e| anyhow!("{e:?}"))?;
                    c.req_ok(&soac).await?;
                    let answer = c.soac_of(&sid).await?;
                    if answer["sdp"].as_str().is_none() {
                        bail!("no SDP answer");
                    }
                    c.req_ok(
                        &Request::decode("unsubscribe", &json!({"id": sid}))
                            .map_err(|e| anyhow!("{e:?}"))?,
                    )
                    .await?;
                    Ok(())
                }
            }));
            record("subscribe negotiations", sub_ops, ok, errors, mark, &server);
            drop((source, peer));
        }
    }

    // 5. Idle participants.
    println!("owt-signaling: {idle_n} idle participants for {window} s");
    let rss0 = server.rss();
    let logged = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let mut idle_tasks = tokio::task::JoinSet::new();
    let t_login = Instant::now();
    for batch in 0..idle_n.div_ceil(50) {
        for i in batch * 50..((batch + 1) * 50).min(idle_n) {
            let (logged, failed) = (logged.clone(), failed.clone());
            idle_tasks.spawn_on(
                async move {
                    let r = async {
                        let mut c = Client::connect(web).await?;
                        c.login(token(web, &format!("idle{i}"), "viewer").await?)
                            .await?;
                        anyhow::Ok(c)
                    }
                    .await;
                    match r {
                        Ok(c) => {
                            logged.fetch_add(1, Ordering::Relaxed);
                            c.idle().await;
                        }
                        Err(_) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                },
                rt.handle(),
            );
        }
        let target = ((batch + 1) * 50).min(idle_n);
        wait_until(Duration::from_secs(30), || {
            logged.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) >= target
        });
    }
    let login_all = t_login.elapsed();
    std::thread::sleep(Duration::from_secs(3));
    let mark = Mark::take(&server);
    let mut rss1 = 0;
    while mark.t0.elapsed() < Duration::from_secs(window) {
        std::thread::sleep(Duration::from_millis(250));
        rss1 = server.rss().max(rss1);
    }
    let n_idle = logged.load(Ordering::Relaxed);
    let idle = Rate {
        what: "idle participants",
        count: idle_n,
        failed: idle_n - n_idle,
        wall: mark.t0.elapsed(),
        cpu: server.cpu().saturating_sub(mark.cpu),
        bench_cpu: self_cpu().saturating_sub(mark.bench_cpu),
        waited: server.waited().saturating_sub(mark.waited),
        load_average: crate::machine::load_average(),
    };
    idle_tasks.abort_all();
    drop(idle_tasks);
    notes.push(format!(
        "{n_idle} of {idle_n} idle participants logged in one room ({} failed) in {:.1} s; every join is announced to everyone already there, so that phase is O(N²) notifications",
        failed.load(Ordering::Relaxed),
        login_all.as_secs_f64()
    ));
    notes.push(format!(
        "negotiations run {NEGOTIATORS} at a time, each on its own logged-in client, and stop at the SDP answer (no ICE/DTLS); the bench's WebSocket clients share the 2 cores with the server, so \"per second\" is what this machine sustained with both, and \"per core\" (1 s / server CPU per op) is what the server's CPU time alone allows"
    ));

    let mut table = Table::new(&[
        "measure",
        "count",
        "failed",
        "wall s",
        "per second",
        "server CPU ms per op",
        "per core (from server CPU)",
        "server CPU % of a core",
        "bench CPU %",
        "server waiting for a CPU %",
        "load average",
    ]);
    let mut series = Vec::new();
    let mut cats = Vec::new();
    let mut negotiation_ok = true;
    for r in &rates {
        let wall = r.wall.as_secs_f64().max(1e-9);
        let done = r.count - r.failed;
        let per_op = r.cpu.as_secs_f64() / done.max(1) as f64;
        let rate = done as f64 / wall;
        table.push(vec![
            r.what.into(),
            r.count.to_string(),
            r.failed.to_string(),
            format!("{wall:.2}"),
            format!("{rate:.0}"),
            format!("{:.2}", per_op * 1000.0),
            if per_op > 0.0 {
                format!("{:.0}", 1.0 / per_op)
            } else {
                "-".into()
            },
            format!("{:.0}", r.cpu.as_secs_f64() / wall * 100.0),
            format!("{:.0}", r.bench_cpu.as_secs_f64() / wall * 100.0),
            format!("{:.0}", r.waited.as_secs_f64() / wall * 100.0),
            format!("{:.1}", r.load_average),
        ]);
        // The plot shows what has a target; tokens and logins run 4-40×
        // faster and would flatten it.
        if r.what.contains("negotiations") {
            negotiation_ok &= r.failed == 0 && rate >= 200.0;
            series.push((cats.len() as f64, rate));
            cats.push(r.what.to_string());
        }
    }
    let negotiations_measured = rates
        .iter()
        .filter(|r| r.what.contains("negotiations"))
        .count()
        == 2;
    let idle_secs = idle.wall.as_secs_f64().max(1e-9);
    let idle_pct = idle.cpu.as_secs_f64() / idle_secs * 100.0;
    table.push(vec![
        format!("idle participants ({window} s window)"),
        idle.count.to_string(),
        idle.failed.to_string(),
        format!("{idle_secs:.1}"),
        "-".into(),
        format!(
            "{:.2} µs/s each",
            idle.cpu.as_secs_f64() * 1e6 / idle_secs / n_idle.max(1) as f64
        ),
        "-".into(),
        format!("{idle_pct:.2}"),
        format!("{:.0}", idle.bench_cpu.as_secs_f64() / idle_secs * 100.0),
        format!("{:.0}", idle.waited.as_secs_f64() / idle_secs * 100.0),
        format!("{:.1}", idle.load_average),
    ]);
    notes.push(format!(
        "memory: {:.1} KB RSS per idle participant ({} MB before, {} MB with them)",
        (rss1 as f64 - rss0 as f64) / n_idle.max(1) as f64 / 1000.0,
        crate::output::mb(rss0 as f64),
        crate::output::mb(rss1 as f64)
    ));
    let warnings = server.log_warnings();
    if warnings > 0 {
        notes.push(format!("{warnings} warning lines in the server log"));
    }
    let idle_ok = n_idle >= 1000 && idle_pct < 5.0;
    let verdict = if quick || !negotiations_measured {
        Verdict::NotMeasured
    } else {
        Verdict::from_bool(idle_ok && negotiation_ok)
    };
    Ok(Report {
        scenario: "owt-signaling",
        title: "OWT portal signalling over Socket.IO (EIO4 WebSocket)".into(),
        command,
        table,
        plot: Some(Plot {
            title: "OWT signalling: negotiations per second".into(),
            x_label: "operation".into(),
            y_label: "per second".into(),
            series: vec![Series::new("completed per second", series)],
            target: Some(("200 negotiations per second".into(), 200.0)),
            categories: cats,
            ..Plot::default()
        }),
        target: TARGET.into(),
        verdict,
        notes,
    })
}

fn pending(command: String, why: &str) -> Report {
    Report {
        scenario: "owt-signaling",
        title: "OWT portal signalling (pending)".into(),
        command,
        table: Table::new(&["status"]),
        plot: None,
        target: TARGET.into(),
        verdict: Verdict::NotMeasured,
        notes: vec![format!("pending: {why}")],
    }
}

/// Token slots filled by one phase and taken by the next.
mod parking_lot_free {
    use std::sync::Mutex;

    pub struct Slots(Mutex<Vec<Option<String>>>);

    impl Slots {
        pub fn new(n: usize) -> Slots {
            Slots(Mutex::new(vec![None; n]))
        }
        pub fn put(&self, i: usize, v: String) {
            if let Ok(mut s) = self.0.lock()
                && let Some(slot) = s.get_mut(i)
            {
                *slot = Some(v);
            }
        }
        pub fn take(&self, i: usize) -> Option<String> {
            self.0.lock().ok()?.get_mut(i)?.take()
        }
    }
}
