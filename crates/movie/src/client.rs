//! The client for people: `switchyard movie lead|join|list`, as functions
//! the binary calls with parsed arguments, plus the tokio driver
//! ([`drive`]) that moves datagrams between a socket and a
//! [`ClientSession`].
//!
//! The binary's subcommands map onto [`lead`], [`join`] and [`list`]; each
//! takes an args struct whose fields are the command-line options, and the
//! first two return a [`Report`] whose [`Report::exit_code`] says whether
//! the movie arrived whole.

use std::future::Future;
use std::io::{self, IsTerminal, Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant as TokioInstant;
use tokio_util::sync::CancellationToken;

use crate::client_session::{
    ClientEvent, ClientParams, ClientSession, ClientTimers, ListQuery, MovieSelector, Outcome,
    Role, Stats,
};
use crate::wire::{MAX_DATAGRAM, MovieListing, SessionEntry, SessionState};

/// P0's default port.
pub const DEFAULT_PORT: u16 = 31107;

/// What the driver needs from a socket; implemented by tokio's
/// [`UdpSocket`] and by [`crate::fault::FaultySocket`].
pub trait DatagramSocket: Send + Sync {
    fn send_to(&self, buf: &[u8], to: SocketAddr)
    -> impl Future<Output = io::Result<usize>> + Send;
    fn recv_from(
        &self,
        buf: &mut [u8],
    ) -> impl Future<Output = io::Result<(usize, SocketAddr)>> + Send;
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

impl DatagramSocket for UdpSocket {
    async fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        UdpSocket::send_to(self, buf, to).await
    }

    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        UdpSocket::recv_from(self, buf).await
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        UdpSocket::local_addr(self)
    }
}

/// What a user (or a test) can ask of a running client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// The leader's movie, after [`ClientEvent::MoviesListed`].
    Choose(u16),
    Pause,
    Resume,
    Quit,
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot resolve {0}")]
    Resolve(String),
    #[error("{0}: a port is required (HOST:PORT, as the leader printed it)")]
    NoPort(String),
    #[error("network: {0}")]
    Io(#[from] io::Error),
    #[error("the server at {0} did not answer")]
    NoAnswer(SocketAddr),
}

/// Runs a client session over `sock` until it has an outcome, handing
/// every event to `on_event`. Returns the session, for its statistics.
pub async fn drive<S: DatagramSocket>(
    sock: &S,
    mut session: ClientSession,
    commands: &mut mpsc::UnboundedReceiver<Command>,
    mut on_event: impl FnMut(&ClientSession, ClientEvent),
) -> ClientSession {
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    let mut commands_open = true;
    // One timer, moved only when the deadline changes: a member receives a
    // datagram every few milliseconds and re-arming a timer for each would
    // cost more than handling the datagram.
    let timer = tokio::time::sleep_until(TokioInstant::now());
    tokio::pin!(timer);
    let mut armed: Option<TokioInstant> = None;
    loop {
        while let Some(t) = session.poll_transmit() {
            if let Err(e) = sock.send_to(&t.payload, t.to).await {
                tracing::debug!(to = %t.to, error = %e, "send failed");
            }
        }
        while let Some(e) = session.poll_event() {
            on_event(&session, e);
        }
        if session.outcome().is_some() {
            return session;
        }
        let deadline = session.poll_timeout().map(TokioInstant::from_std);
        if deadline != armed {
            if let Some(d) = deadline {
                timer.as_mut().reset(d);
            }
            armed = deadline;
        }
        tokio::select! {
            received = sock.recv_from(&mut buf) => match received {
                Ok((n, from)) => {
                    let data = buf.get(..n).unwrap_or_default();
                    session.handle_datagram(TokioInstant::now().into_std(), from, data);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "receive error");
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            },
            cmd = commands.recv(), if commands_open => {
                let now = TokioInstant::now().into_std();
                match cmd {
                    None => commands_open = false,
                    Some(Command::Choose(id)) => session.choose(now, id),
                    Some(Command::Pause) => session.set_paused(now, true),
                    Some(Command::Resume) => session.set_paused(now, false),
                    Some(Command::Quit) => session.quit(now),
                }
            }
            _ = &mut timer, if armed.is_some() => {
                armed = None;
                session.handle_timeout(TokioInstant::now().into_std());
            }
        }
    }
}

/// The line the leader prints so that people can join (§8.5):
/// `session 192.0.2.1:40001`, `session [2001:db8::1]:40001`.
pub fn session_line(addr: SocketAddr) -> String {
    format!("session {addr}")
}

/// Resolves `HOST[:PORT]`, `IP`, `IP:PORT` or `[IPv6]:PORT`.
pub async fn resolve(target: &str, default_port: Option<u16>) -> Result<SocketAddr, CliError> {
    if let Ok(addr) = target.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let bare = target.trim_start_matches('[').trim_end_matches(']');
    let (host, port) = match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => (ip.to_string(), None),
        Err(_) => match target.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => {
                let port = p
                    .parse::<u16>()
                    .map_err(|_| CliError::Resolve(target.to_owned()))?;
                (h.to_owned(), Some(port))
            }
            _ => (target.to_owned(), None),
        },
    };
    let port = port
        .or(default_port)
        .ok_or_else(|| CliError::NoPort(target.to_owned()))?;
    let mut addrs = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|_| CliError::Resolve(target.to_owned()))?;
    addrs
        .next()
        .ok_or_else(|| CliError::Resolve(target.to_owned()))
}

/// A socket of the server's address family on an ephemeral port, with a
/// receive buffer big enough for bursts of Movie Data.
pub fn bind_client(server: SocketAddr) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let local: SocketAddr = if server.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = Socket::new(Domain::for_address(local), Type::DGRAM, Some(Protocol::UDP))?;
    let _ = socket.set_recv_buffer_size(4 * 1024 * 1024);
    socket.bind(&local.into())?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket.into())
}

/// Parses an interval such as `20ms`, `20000us`, `0.02s` or `20000` (µs).
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (try 20ms)"))?;
    let micros = match unit.trim() {
        "" | "us" | "µs" => value,
        "ms" => value * 1e3,
        "s" => value * 1e6,
        other => return Err(format!("unknown unit {other:?} (use us, ms or s)")),
    };
    if !(0.0..=f64::from(u32::MAX)).contains(&micros) {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(Duration::from_micros(micros.round() as u64))
}

/// `switchyard movie lead HOST[:PORT] [--movie N|NAME] [--interval DURATION]
/// [--port PORT] [--output FILE] [--no-progress]`.
#[derive(Debug, Clone)]
pub struct LeadArgs {
    /// `HOST[:PORT]` of the server's P0 (default port 31107).
    pub server: String,
    /// `--movie`: an ID or a name (see [`MovieSelector`]'s `FromStr`);
    /// `None` asks on a terminal, else takes the first movie.
    pub movie: Option<MovieSelector>,
    /// `--interval`: the interval to ask for (see [`parse_interval`]).
    pub interval: Option<Duration>,
    /// `--port`: the session port to ask for; 0 lets the server choose.
    pub port: u16,
    /// `--output`: where to write the movie; default: its name in the
    /// current directory (never overwriting a file).
    pub output: Option<PathBuf>,
    /// Show the progress bar on a terminal.
    pub progress: bool,
}

/// `switchyard movie join HOST:PORT [--interval DURATION] [--output FILE]
/// [--no-progress]`.
#[derive(Debug, Clone)]
pub struct JoinArgs {
    /// `HOST:PORT` of the session, as the leader printed it.
    pub session: String,
    pub interval: Option<Duration>,
    pub output: Option<PathBuf>,
    pub progress: bool,
}

/// `switchyard movie list HOST[:PORT]`.
#[derive(Debug, Clone)]
pub struct ListArgs {
    pub server: String,
}

/// How a `lead` or `join` ended.
#[derive(Debug, Clone)]
pub struct Report {
    pub outcome: Outcome,
    pub stats: Stats,
    pub movie: Option<String>,
    pub output: Option<PathBuf>,
    /// Every chunk of the movie, from the first, was received and written.
    pub whole: bool,
}

impl Report {
    /// 0: the movie arrived whole; 1: the stream ended but chunks are
    /// missing (loss, or a late join); 2: refused, failed or quit.
    pub fn exit_code(&self) -> i32 {
        match self.outcome {
            _ if self.whole => 0,
            Outcome::Complete | Outcome::Ended(_) => 1,
            _ => 2,
        }
    }
}

/// Leads a session: negotiates it, prints `session host:port`, picks the
/// movie, receives it into a file and prints the statistics.
pub async fn lead(args: LeadArgs, shutdown: CancellationToken) -> Result<Report, CliError> {
    let server = resolve(&args.server, Some(DEFAULT_PORT)).await?;
    let sock = bind_client(server)?;
    let interactive = io::stdin().is_terminal();
    let movie = args.movie.clone().unwrap_or(if interactive {
        MovieSelector::Ask
    } else {
        MovieSelector::First
    });
    let role = Role::Leader {
        server,
        requested_port: args.port,
        movie,
    };
    run_cli(
        &sock,
        role,
        args.interval,
        args.output,
        args.progress,
        interactive,
        shutdown,
    )
    .await
}

/// Joins a session at `HOST:PORT` and receives the movie into a file.
pub async fn join(args: JoinArgs, shutdown: CancellationToken) -> Result<Report, CliError> {
    let session = resolve(&args.session, None).await?;
    let sock = bind_client(session)?;
    run_cli(
        &sock,
        Role::Member { session },
        args.interval,
        args.output,
        args.progress,
        false,
        shutdown,
    )
    .await
}

/// Lists the server's sessions and prints them as a table.
pub async fn list(args: ListArgs) -> Result<Vec<SessionEntry>, CliError> {
    let server = resolve(&args.server, Some(DEFAULT_PORT)).await?;
    let sock = bind_client(server)?;
    let entries = query_sessions(&sock, server, ClientTimers::default()).await?;
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "{:<7} {:<13} {:>7}  {:<4} MOVIE",
        "PORT", "STATE", "MEMBERS", "JOIN"
    )?;
    for e in &entries {
        let state = match e.state {
            SessionState::Registration => "registration",
            SessionState::Starting => "starting",
            SessionState::Streaming => "streaming",
            SessionState::Paused => "paused",
            SessionState::Ending => "ending",
        };
        let movie = match e.movie_id {
            Some(id) => format!("{} ({id})", e.movie_name),
            None => "-".into(),
        };
        let join = if e.joinable { "yes" } else { "no" };
        writeln!(
            out,
            "{:<7} {:<13} {:>7}  {:<4} {}",
            e.port, state, e.members, join, movie
        )?;
    }
    if entries.is_empty() {
        writeln!(out, "no sessions")?;
    }
    Ok(entries)
}

/// The Session List query on an already bound socket.
pub async fn query_sessions<S: DatagramSocket>(
    sock: &S,
    server: SocketAddr,
    timers: ClientTimers,
) -> Result<Vec<SessionEntry>, CliError> {
    let mut q = ListQuery::new(server, timers, TokioInstant::now().into_std());
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    loop {
        while let Some(t) = q.poll_transmit() {
            sock.send_to(&t.payload, t.to).await?;
        }
        match q.result() {
            Some(Ok(entries)) => return Ok(entries.to_vec()),
            Some(Err(())) => return Err(CliError::NoAnswer(server)),
            None => {}
        }
        let deadline = q.poll_timeout().map_or_else(
            || TokioInstant::now() + Duration::from_secs(1),
            TokioInstant::from_std,
        );
        tokio::select! {
            received = sock.recv_from(&mut buf) => {
                if let Ok((n, from)) = received {
                    q.handle_datagram(TokioInstant::now().into_std(), from, buf.get(..n).unwrap_or_default());
                }
            }
            _ = tokio::time::sleep_until(deadline) => q.handle_timeout(TokioInstant::now().into_std()),
        }
    }
}

/// A movie name from the server made safe as a file name in the current
/// directory: no path separators, no leading dots, never an existing file.
pub fn output_path_for(name: &str, dir: &Path) -> PathBuf {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c == '/' || c == '\\' || c.is_control() || c == ':' {
                '_'
            } else {
                c
            }
        })
        .collect();
    let cleaned = cleaned.trim_start_matches('.').trim();
    let base = if cleaned.is_empty() { "movie" } else { cleaned };
    let mut candidate = dir.join(base);
    let mut n = 1;
    while candidate.exists() && n < 10_000 {
        candidate = dir.join(format!("{base}.{n}"));
        n += 1;
    }
    candidate
}

struct Ui {
    output_arg: Option<PathBuf>,
    file: Option<std::fs::File>,
    path: Option<PathBuf>,
    movie: Option<String>,
    write_error: Option<io::Error>,
    progress: Option<Progress>,
    chunk_size: u64,
    interval: Duration,
}

struct Progress {
    started: Instant,
    last_draw: Option<Instant>,
}

fn human_bytes(n: u64) -> String {
    let n = n as f64;
    if n >= 1e9 {
        format!("{:.2} GB", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.1} MB", n / 1e6)
    } else {
        format!("{:.0} kB", n / 1e3)
    }
}

impl Ui {
    fn draw(&mut self, session: &ClientSession, force: bool) {
        let Some(p) = &mut self.progress else { return };
        let now = Instant::now();
        if !force
            && p.last_draw
                .is_some_and(|t| now - t < Duration::from_millis(200))
        {
            return;
        }
        p.last_draw = Some(now);
        let st = session.stats();
        let total = st
            .total_chunks
            .saturating_sub(st.start_seq.saturating_sub(1))
            .max(1);
        let done = st
            .highest
            .saturating_sub(st.start_seq.saturating_sub(1))
            .min(total);
        let fraction = done as f64 / total as f64;
        let width = 30;
        let filled = (fraction * width as f64) as usize;
        let elapsed = (now - p.started).as_secs_f64().max(0.001);
        let rate = st.bytes as f64 * 8.0 / elapsed;
        let eta = self
            .interval
            .saturating_mul(u32::try_from(total - done).unwrap_or(u32::MAX));
        let paused = if session.is_paused() { " paused" } else { "" };
        eprint!(
            "\r[{}{}] {:>3.0}% {} of {} {:.2} Mbit/s ETA {}:{:02} lost {}{}   ",
            "#".repeat(filled),
            ".".repeat(width - filled),
            fraction * 100.0,
            human_bytes(st.bytes),
            human_bytes(total * self.chunk_size),
            rate / 1e6,
            eta.as_secs() / 60,
            eta.as_secs() % 60,
            st.lost(),
            paused
        );
        let _ = io::stderr().flush();
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(f) = &mut self.file else { return };
        if self.write_error.is_some() {
            return;
        }
        let result = f
            .seek(SeekFrom::Start(offset))
            .and_then(|_| f.write_all(data));
        if let Err(e) = result {
            self.write_error = Some(e);
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_cli(
    sock: &UdpSocket,
    role: Role,
    interval: Option<Duration>,
    output: Option<PathBuf>,
    progress: bool,
    interactive: bool,
    shutdown: CancellationToken,
) -> Result<Report, CliError> {
    let interval_us = interval.map_or(0, |d| u32::try_from(d.as_micros()).unwrap_or(u32::MAX));
    let is_leader = matches!(role, Role::Leader { .. });
    let params = ClientParams {
        role,
        interval_us,
        timers: ClientTimers::default(),
    };
    let session = ClientSession::new(params, TokioInstant::now().into_std());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let quit_tx = tx.clone();
    let watcher = tokio::spawn(async move {
        shutdown.cancelled().await;
        let _ = quit_tx.send(Command::Quit);
    });
    let awaiting_choice = Arc::new(AtomicBool::new(false));
    let offered: Arc<Mutex<Vec<MovieListing>>> = Arc::default();
    if is_leader && interactive {
        spawn_keyboard(tx.clone(), awaiting_choice.clone(), offered.clone());
    }
    let mut ui = Ui {
        output_arg: output,
        file: None,
        path: None,
        movie: None,
        write_error: None,
        progress: (progress && io::stderr().is_terminal()).then(|| Progress {
            started: Instant::now(),
            last_draw: None,
        }),
        chunk_size: 1316,
        interval: Duration::ZERO,
    };
    let quit_on_error = tx.clone();
    let session = drive(sock, session, &mut rx, |s, event| match event {
        ClientEvent::SessionReady(addr) => {
            println!("{}", session_line(addr));
            let _ = io::stdout().flush();
        }
        ClientEvent::Registered => tracing::debug!("registered"),
        ClientEvent::MoviesListed(list) => {
            if interactive {
                eprintln!("movies:");
                for m in &list {
                    eprintln!("  {:>3}  {}", m.id, m.name);
                }
                eprintln!("type a number or a name to choose; later: p pause, r resume, q quit");
            }
            if let Ok(mut o) = offered.lock() {
                *o = list;
            }
            awaiting_choice.store(true, Ordering::SeqCst);
        }
        ClientEvent::MovieChosen(m) => {
            awaiting_choice.store(false, Ordering::SeqCst);
            eprintln!("movie {} {}", m.id, m.name);
        }
        ClientEvent::StreamStarted(start) => {
            awaiting_choice.store(false, Ordering::SeqCst);
            ui.chunk_size = u64::from(start.chunk_size);
            ui.interval = Duration::from_micros(u64::from(start.interval_us));
            ui.movie = Some(start.movie_name.clone());
            let path = ui
                .output_arg
                .clone()
                .unwrap_or_else(|| output_path_for(&start.movie_name, Path::new(".")));
            match std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
            {
                Ok(f) => ui.file = Some(f),
                Err(e) => {
                    eprintln!("cannot write {}: {e}", path.display());
                    let _ = quit_on_error.send(Command::Quit);
                }
            }
            eprintln!(
                "streaming {} ({} chunks of {} bytes every {} µs, from chunk {}) into {}",
                start.movie_name,
                start.total_chunks,
                start.chunk_size,
                start.interval_us,
                start.start_seq,
                path.display()
            );
            ui.path = Some(path);
        }
        ClientEvent::Data { offset, data, .. } => {
            ui.write(offset, &data);
            if ui.write_error.is_some() {
                let _ = quit_on_error.send(Command::Quit);
            }
            ui.draw(s, false);
        }
        ClientEvent::Paused { position } => {
            ui.draw(s, true);
            eprintln!("\npaused at chunk {position}");
        }
        ClientEvent::Resumed { position, reason } => {
            let why = match reason {
                0 => "by the leader",
                1 => "after the longest pause",
                _ => "because the leader left",
            };
            eprintln!("\nresumed at chunk {position} {why}");
        }
        ClientEvent::MemberJoined { member, position } => {
            eprintln!(
                "\nmember {} joined at chunk {position}",
                member.map_or("?".into(), |m| m.to_string())
            );
        }
        ClientEvent::MemberLeft { member, reason, .. } => {
            let why = match reason {
                1 => "left",
                2 => "timed out",
                _ => "never confirmed",
            };
            eprintln!(
                "\nmember {} {why}",
                member.map_or("?".into(), |m| m.to_string())
            );
        }
        ClientEvent::ControlUnanswered(op) => eprintln!("\nthe server did not answer {op:?}"),
        ClientEvent::Finished(_) => ui.draw(s, true),
    })
    .await;
    watcher.abort();
    if let Some(f) = &ui.file {
        let _ = f.sync_all();
    }
    let outcome = session.outcome().cloned().unwrap_or(Outcome::Quit);
    let stats = session.stats().clone();
    let whole = outcome == Outcome::Complete
        && ui.write_error.is_none()
        && ui.file.is_some()
        && stats.start_seq == 1
        && stats.received == stats.total_chunks;
    if ui.progress.is_some() {
        eprintln!();
    }
    match &outcome {
        Outcome::Complete => eprintln!("the movie is over"),
        Outcome::Ended(r) => eprintln!("the session ended: {}", r.describe()),
        Outcome::Refused(r) => eprintln!("refused: {}", r.describe()),
        Outcome::Quit => eprintln!("left the session"),
        Outcome::Failed(e) => eprintln!("error: {e}"),
    }
    if let Some(e) = &ui.write_error {
        eprintln!("error writing the movie: {e}");
    }
    println!("{}", stats.line());
    Ok(Report {
        outcome,
        stats,
        movie: ui.movie,
        output: ui.path,
        whole,
    })
}

/// Reads the leader's keyboard on its own thread (stdin blocks): a movie
/// while the list is shown, then p, r and q.
fn spawn_keyboard(
    tx: mpsc::UnboundedSender<Command>,
    awaiting_choice: Arc<AtomicBool>,
    offered: Arc<Mutex<Vec<MovieListing>>>,
) {
    let spawned = std::thread::Builder::new()
        .name("movie-keyboard".into())
        .spawn(move || {
            for line in io::stdin().lines() {
                let Ok(line) = line else { return };
                let line = line.trim();
                let command = if awaiting_choice.load(Ordering::SeqCst) {
                    let list = offered.lock().map(|l| l.clone()).unwrap_or_default();
                    let found = match line.parse::<u16>() {
                        Ok(id) => list.iter().find(|m| m.id == id),
                        Err(_) => list.iter().find(|m| m.name == line),
                    };
                    match found {
                        Some(m) => Command::Choose(m.id),
                        None => {
                            eprintln!("no movie {line:?}");
                            continue;
                        }
                    }
                } else {
                    match line {
                        "p" => Command::Pause,
                        "r" => Command::Resume,
                        "q" => Command::Quit,
                        _ => continue,
                    }
                };
                if tx.send(command).is_err() {
                    return;
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "no keyboard control");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c28_session_line_is_host_colon_port() {
        assert_eq!(
            session_line("192.0.2.1:40001".parse().unwrap()),
            "session 192.0.2.1:40001"
        );
        assert_eq!(
            session_line("[2001:db8::1]:40001".parse().unwrap()),
            "session [2001:db8::1]:40001"
        );
    }

    #[test]
    fn intervals_parse_with_units() {
        assert_eq!(parse_interval("20ms"), Ok(Duration::from_millis(20)));
        assert_eq!(parse_interval("20000"), Ok(Duration::from_millis(20)));
        assert_eq!(parse_interval("0.02s"), Ok(Duration::from_millis(20)));
        assert_eq!(parse_interval("500us"), Ok(Duration::from_micros(500)));
        assert!(parse_interval("fast").is_err());
        assert!(parse_interval("20h").is_err());
        assert!(parse_interval("99999s").is_err());
    }

    #[test]
    fn movie_selector_reads_ids_and_names() {
        assert_eq!("3".parse::<MovieSelector>().unwrap(), MovieSelector::Id(3));
        assert_eq!(
            "sintel.ts".parse::<MovieSelector>().unwrap(),
            MovieSelector::Name("sintel.ts".into())
        );
    }

    #[test]
    fn output_names_from_the_server_stay_in_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            output_path_for("../../etc/passwd", dir.path()),
            dir.path().join("_.._etc_passwd")
        );
        assert_eq!(output_path_for("..", dir.path()), dir.path().join("movie"));
        std::fs::write(dir.path().join("a.ts"), b"x").unwrap();
        assert_eq!(
            output_path_for("a.ts", dir.path()),
            dir.path().join("a.ts.1")
        );
    }

    #[tokio::test]
    async fn resolve_accepts_the_usual_forms() {
        assert_eq!(
            resolve("127.0.0.1", Some(31107)).await.unwrap(),
            "127.0.0.1:31107".parse().unwrap()
        );
        assert_eq!(
            resolve("127.0.0.1:4000", None).await.unwrap(),
            "127.0.0.1:4000".parse().unwrap()
        );
        assert_eq!(
            resolve("[::1]:4000", None).await.unwrap(),
            "[::1]:4000".parse().unwrap()
        );
        assert_eq!(
            resolve("::1", Some(31107)).await.unwrap(),
            "[::1]:31107".parse().unwrap()
        );
        assert_eq!(resolve("localhost:4000", None).await.unwrap().port(), 4000);
        assert!(matches!(
            resolve("127.0.0.1", None).await,
            Err(CliError::NoPort(_))
        ));
    }
}
