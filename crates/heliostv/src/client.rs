//! A HeliosTv client: the library the integration tests and load generators
//! drive, and the `switchyard heliostv list|record|sections` commands built
//! on it for people.
//!
//! Library use (one control connection, any number of data connections):
//! ```no_run
//! # async fn demo() -> Result<(), heliostv::client::ClientError> {
//! use heliostv::client::{Client, DataStream};
//! let mut client = Client::connect("127.0.0.1:31105".parse().unwrap(), &["player"]).await?;
//! let token = client.new_service("sah-service://Switchyard%20One").await?;
//! let mut data = DataStream::authorize("127.0.0.1:31106".parse().unwrap(), token).await?;
//! let mut buf = vec![0; 188 * 64];
//! let n = data.read(&mut buf).await?; // whole TS bytes, starting with the PAT
//! client.del_service(token).await?;
//! # Ok(()) }
//! ```

use std::collections::VecDeque;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::wire::{
    Decoder, ErrorUri, Limits, Message, Object, Origin, ServiceChange, ServiceInfo, StreamError,
};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("network: {0}")]
    Io(#[from] std::io::Error),
    #[error("the server refused: {0}")]
    Refused(String),
    #[error("the server ended the session: {0}")]
    Aborted(String),
    #[error("the server closed the connection")]
    Closed,
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("cannot resolve {0}")]
    Resolve(String),
}

impl ClientError {
    /// The error URI of a refusal or abort, if it is one this client knows.
    pub fn uri(&self) -> Option<ErrorUri> {
        match self {
            ClientError::Refused(u) | ClientError::Aborted(u) => ErrorUri::parse(u),
            _ => None,
        }
    }
}

impl From<StreamError> for ClientError {
    fn from(e: StreamError) -> Self {
        ClientError::Protocol(e.to_string())
    }
}

/// Reads whole messages from a socket with the incremental decoder.
struct MessageReader {
    decoder: Decoder,
    buf: Vec<u8>,
}

impl MessageReader {
    fn new() -> MessageReader {
        MessageReader {
            decoder: Decoder::new(Limits::CLIENT),
            buf: vec![0; 16 * 1024],
        }
    }

    async fn next(&mut self, stream: &mut TcpStream) -> Result<Message, ClientError> {
        loop {
            match self.decoder.next_object()? {
                Some(Object::Value(v)) => {
                    return Message::from_value(&v, Origin::Server)
                        .map_err(|m| ClientError::Protocol(m.to_string()));
                }
                Some(Object::TooDeep { .. }) => {
                    return Err(ClientError::Protocol("message nested too deep".into()));
                }
                None => {}
            }
            let room = self.decoder.room().min(self.buf.len()).max(1);
            let slot = self.buf.get_mut(..room).unwrap_or_default();
            let n = stream.read(slot).await?;
            if n == 0 {
                return Err(ClientError::Closed);
            }
            self.decoder.push(self.buf.get(..n).unwrap_or_default());
        }
    }
}

/// One control connection with an open session.
pub struct Client {
    stream: TcpStream,
    reader: MessageReader,
    next_request: u64,
    notifications: VecDeque<(u64, Vec<ServiceChange>)>,
}

impl Client {
    /// Connects and opens a session with `roles` (HELLO → WELCOME).
    pub async fn connect(control: SocketAddr, roles: &[&str]) -> Result<Client, ClientError> {
        let mut stream = TcpStream::connect(control).await?;
        let _ = stream.set_nodelay(true);
        let hello = Message::Hello {
            roles: roles.iter().map(|r| r.to_string()).collect(),
        };
        stream.write_all(&hello.to_bytes()).await?;
        let mut reader = MessageReader::new();
        match reader.next(&mut stream).await? {
            Message::Welcome => Ok(Client {
                stream,
                reader,
                next_request: 1,
                notifications: VecDeque::new(),
            }),
            Message::Abort { reason } => Err(ClientError::Aborted(reason)),
            other => Err(ClientError::Protocol(format!(
                "expected WELCOME, got {other:?}"
            ))),
        }
    }

    async fn request(
        &mut self,
        make: impl FnOnce(u64) -> Message,
    ) -> Result<Vec<rmpv::Value>, ClientError> {
        let request = self.next_request;
        self.next_request += 1;
        self.stream.write_all(&make(request).to_bytes()).await?;
        loop {
            match self.reader.next(&mut self.stream).await? {
                Message::Result { request: r, args } if r == request => return Ok(args),
                Message::Error { request: r, error } if r == request => {
                    return Err(ClientError::Refused(error));
                }
                Message::Abort { reason } => return Err(ClientError::Aborted(reason)),
                Message::ServicesChanged {
                    request: r,
                    changes,
                } => self.notifications.push_back((
                    r,
                    changes
                        .iter()
                        .filter_map(ServiceChange::from_value)
                        .collect(),
                )),
                // Answers to requests this client no longer waits for.
                _ => {}
            }
        }
    }

    /// NEW_SERVICE: the token of a new service entry.
    pub async fn new_service(&mut self, uri: &str) -> Result<u32, ClientError> {
        let args = self
            .request(|request| Message::NewService {
                request,
                resource: uri.to_owned(),
            })
            .await?;
        args.first()
            .and_then(crate::wire::as_integer)
            .and_then(|t| u32::try_from(t).ok())
            .ok_or_else(|| ClientError::Protocol("NEW_SERVICE result without a token".into()))
    }

    /// DEL_SERVICE.
    pub async fn del_service(&mut self, token: u32) -> Result<(), ClientError> {
        self.request(|request| Message::DelService {
            request,
            token: u64::from(token),
        })
        .await
        .map(|_| ())
    }

    /// SERVICES (extension): the snapshot, and from now on notifications
    /// read with [`Client::next_changes`].
    pub async fn services(&mut self) -> Result<Vec<ServiceInfo>, ClientError> {
        let args = self
            .request(|request| Message::Services { request })
            .await?;
        Ok(args.iter().filter_map(ServiceInfo::from_value).collect())
    }

    /// The next SERVICES notification.
    pub async fn next_changes(&mut self) -> Result<Vec<ServiceChange>, ClientError> {
        loop {
            if let Some((_, changes)) = self.notifications.pop_front() {
                return Ok(changes);
            }
            match self.reader.next(&mut self.stream).await? {
                Message::ServicesChanged { changes, .. } => {
                    return Ok(changes
                        .iter()
                        .filter_map(ServiceChange::from_value)
                        .collect());
                }
                Message::Abort { reason } => return Err(ClientError::Aborted(reason)),
                _ => {}
            }
        }
    }

    /// Sends an ABORT and closes, as a polite client leaving.
    pub async fn close(mut self) -> Result<(), ClientError> {
        self.stream
            .write_all(&Message::abort(ErrorUri::Shutdown).to_bytes())
            .await?;
        let _ = self.stream.shutdown().await;
        Ok(())
    }
}

/// An authorized data connection: TS bytes, or section bin objects.
pub struct DataStream {
    stream: TcpStream,
    /// Bytes read along with the RESULT: already service data (§4.2).
    leftover: Vec<u8>,
    sections: Option<Decoder>,
}

impl DataStream {
    /// Connects to the data listener and presents `token` (AUTHORIZE → RESULT).
    pub async fn authorize(data: SocketAddr, token: u32) -> Result<DataStream, ClientError> {
        DataStream::authorize_on(TcpStream::connect(data).await?, token).await
    }

    /// [`DataStream::authorize`] on a stream the caller connected (to choose
    /// socket options, e.g. a small receive buffer in a load generator).
    pub async fn authorize_on(
        mut stream: TcpStream,
        token: u32,
    ) -> Result<DataStream, ClientError> {
        stream
            .write_all(
                &Message::Authorize {
                    request: 1,
                    token: u64::from(token),
                }
                .to_bytes(),
            )
            .await?;
        let mut reader = MessageReader::new();
        match reader.next(&mut stream).await? {
            Message::Result { request: 1, .. } => {
                let leftover = reader.decoder.take_remaining();
                Ok(DataStream {
                    stream,
                    leftover,
                    sections: None,
                })
            }
            Message::Error { error, .. } => Err(ClientError::Refused(error)),
            Message::Abort { reason } => Err(ClientError::Aborted(reason)),
            other => Err(ClientError::Protocol(format!(
                "expected RESULT, got {other:?}"
            ))),
        }
    }

    /// The socket and the service bytes that arrived with the RESULT, for
    /// callers that read the stream themselves (load generators).
    pub fn into_parts(self) -> (TcpStream, Vec<u8>) {
        (self.stream, self.leftover)
    }

    /// Reads service bytes; 0 at the end of the connection.
    pub async fn read(&mut self, buf: &mut [u8]) -> Result<usize, ClientError> {
        if !self.leftover.is_empty() {
            let n = buf.len().min(self.leftover.len());
            if let (Some(dst), Some(src)) = (buf.get_mut(..n), self.leftover.get(..n)) {
                dst.copy_from_slice(src);
            }
            self.leftover.drain(..n);
            return Ok(n);
        }
        Ok(self.stream.read(buf).await?)
    }

    /// On a `sections` connection: the next section, `None` at the end.
    pub async fn next_section(&mut self) -> Result<Option<Vec<u8>>, ClientError> {
        let leftover = std::mem::take(&mut self.leftover);
        let decoder = self
            .sections
            .get_or_insert_with(|| Decoder::new(Limits::CLIENT));
        decoder.push(&leftover);
        let mut buf = vec![0u8; 8192];
        loop {
            match decoder.next_object()? {
                Some(Object::Value(rmpv::Value::Binary(section))) => return Ok(Some(section)),
                Some(_) => {
                    return Err(ClientError::Protocol(
                        "not a bin object on a sections connection".into(),
                    ));
                }
                None => {}
            }
            let n = self.stream.read(&mut buf).await?;
            if n == 0 {
                return Ok(None);
            }
            decoder.push(buf.get(..n).unwrap_or_default());
        }
    }
}

// -------------------------------------------------------------------- CLI

/// `switchyard heliostv [--host H] [--control-port P] [--data-port P] <command>`
#[derive(clap::Args, Debug, Clone)]
pub struct Cli {
    /// Server host name or address.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Control port.
    #[arg(long, default_value_t = 31105)]
    pub control_port: u16,
    /// Data port.
    #[arg(long, default_value_t = 31106)]
    pub data_port: u16,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum Command {
    /// List the services (channels); with --follow, then print changes.
    List {
        #[arg(long)]
        follow: bool,
    },
    /// Record a service's transport stream to a file, with a progress line.
    Record {
        /// Channel name, number, `id:<n>` or a full `sah-service://` URI.
        service: String,
        /// Output file (MPEG-TS).
        #[arg(short, long)]
        output: PathBuf,
        /// Stop after this many seconds (default: until Ctrl-C).
        #[arg(long)]
        duration: Option<u64>,
    },
    /// Print the PSI/SI sections (PAT, PMT, SDT, EIT) of a service.
    Sections {
        /// Channel name, number, `id:<n>` or a full `sah-service://` URI.
        service: String,
        /// Comma-separated subset of pat,pmt,sdt,eit.
        #[arg(long)]
        tables: Option<String>,
        /// Stop after this many sections.
        #[arg(long)]
        count: Option<usize>,
        /// Also print each section in hex.
        #[arg(long)]
        hex: bool,
    },
}

/// The URI for a name, number or id given on the command line.
pub fn service_uri(service: &str) -> String {
    if service.contains("://") {
        return service.to_owned();
    }
    let mut uri = String::from("sah-service://");
    for b in service.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b':') {
            uri.push(b as char);
        } else {
            uri.push_str(&format!("%{b:02X}"));
        }
    }
    uri
}

async fn resolve(host: &str, port: u16) -> Result<SocketAddr, ClientError> {
    tokio::net::lookup_host((host, port))
        .await?
        .next()
        .ok_or_else(|| ClientError::Resolve(format!("{host}:{port}")))
}

/// Runs a `switchyard heliostv` command, printing to stdout (and the record
/// progress line to stderr). Record stops at Ctrl-C or after `--duration`.
pub async fn run(cli: Cli) -> Result<(), ClientError> {
    let mut stdout = std::io::stdout();
    run_with_output(cli, &mut stdout, true).await
}

/// [`run`] writing to `out`; `progress` enables the record progress line.
pub async fn run_with_output(
    cli: Cli,
    out: &mut (dyn Write + Send),
    progress: bool,
) -> Result<(), ClientError> {
    let control = resolve(&cli.host, cli.control_port).await?;
    let data = resolve(&cli.host, cli.data_port).await?;
    match cli.command {
        Command::List { follow } => list(control, follow, out).await,
        Command::Record {
            service,
            output,
            duration,
        } => {
            let summary = record(
                control,
                data,
                &service_uri(&service),
                &output,
                duration.map(Duration::from_secs),
                progress,
            )
            .await?;
            let _ = writeln!(out, "{summary}");
            Ok(())
        }
        Command::Sections {
            service,
            tables,
            count,
            hex,
        } => {
            let mut uri = service_uri(&service);
            if !uri.contains('?') {
                uri.push_str("?data=sections");
                if let Some(t) = tables {
                    uri.push_str("&tables=");
                    uri.push_str(&t);
                }
            }
            sections(control, data, &uri, count, hex, out).await
        }
    }
}

async fn list(
    control: SocketAddr,
    follow: bool,
    out: &mut (dyn Write + Send),
) -> Result<(), ClientError> {
    let mut client = Client::connect(control, &["service_list"]).await?;
    for s in client.services().await? {
        let _ = writeln!(out, "{}", describe(&s));
    }
    if follow {
        loop {
            for change in client.next_changes().await? {
                let _ = writeln!(
                    out,
                    "{} {}",
                    change.kind.as_str(),
                    describe(&change.service)
                );
            }
        }
    }
    client.close().await
}

fn describe(s: &ServiceInfo) -> String {
    let streams = match (s.has_video, s.has_audio) {
        (true, true) => "video+audio",
        (true, false) => "video",
        (false, true) => "audio",
        (false, false) => "streams unknown",
    };
    let mut line = format!("{:>4}  {}  [{}]  {}", s.number, s.name, streams, s.uri);
    if !s.provider.is_empty() {
        line.push_str(&format!("  provider: {}", s.provider));
    }
    if !s.tags.is_empty() {
        line.push_str(&format!("  tags: {}", s.tags.join(", ")));
    }
    line
}

/// What a recording ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordSummary {
    pub bytes: u64,
    pub duration: Duration,
    /// The server ended the data connection (recorder cut or channel gone)
    /// before the client asked to stop.
    pub cut: bool,
}

impl std::fmt::Display for RecordSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", progress_line(self.bytes, self.duration))?;
        if self.cut {
            write!(f, "  (cut by the server: the recording is incomplete)")?;
        }
        Ok(())
    }
}

fn progress_line(bytes: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    let kbit = if secs > 0.0 {
        bytes as f64 * 8.0 / secs / 1000.0
    } else {
        0.0
    };
    format!("{bytes} bytes  {kbit:.0} kbit/s  {secs:.1} s")
}

/// Records `uri` into `path` until `duration` (or Ctrl-C), then deletes the
/// service entry. Writes only whole TS packets.
pub async fn record(
    control: SocketAddr,
    data: SocketAddr,
    uri: &str,
    path: &std::path::Path,
    duration: Option<Duration>,
    progress: bool,
) -> Result<RecordSummary, ClientError> {
    let mut client = Client::connect(control, &["recorder"]).await?;
    let token = client.new_service(uri).await?;
    let mut stream = DataStream::authorize(data, token).await?;
    let mut file = tokio::fs::File::create(path).await?;
    let started = Instant::now();
    let stop_at = duration.map(|d| started + d);
    let mut buf = vec![0u8; 188 * 512];
    let mut pending: Vec<u8> = Vec::new();
    let mut bytes: u64 = 0;
    let mut next_progress = started + Duration::from_secs(1);
    let mut cut = false;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let n = tokio::select! {
            _ = &mut ctrl_c => break,
            _ = tokio::time::sleep_until(stop_at.unwrap_or(started)), if stop_at.is_some() => break,
            n = stream.read(&mut buf) => n?,
        };
        if n == 0 {
            cut = true;
            break;
        }
        pending.extend_from_slice(buf.get(..n).unwrap_or_default());
        let whole = pending.len() - pending.len() % 188;
        if whole > 0 {
            file.write_all(pending.get(..whole).unwrap_or_default())
                .await?;
            pending.drain(..whole);
            bytes += whole as u64;
        }
        if progress && Instant::now() >= next_progress {
            eprint!("\r{}   ", progress_line(bytes, started.elapsed()));
            next_progress += Duration::from_secs(1);
        }
    }
    file.flush().await?;
    if progress {
        eprintln!();
    }
    // DEL_SERVICE closes the data connection; the entry goes with it.
    let deleted = client.del_service(token).await;
    drop(stream);
    let _ = client.close().await;
    deleted?;
    Ok(RecordSummary {
        bytes,
        duration: started.elapsed(),
        cut,
    })
}

async fn sections(
    control: SocketAddr,
    data: SocketAddr,
    uri: &str,
    count: Option<usize>,
    hex: bool,
    out: &mut (dyn Write + Send),
) -> Result<(), ClientError> {
    let mut client = Client::connect(control, &["section"]).await?;
    let token = client.new_service(uri).await?;
    let mut stream = DataStream::authorize(data, token).await?;
    let mut seen = 0usize;
    while count.is_none_or(|c| seen < c) {
        let next = tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            s = stream.next_section() => s?,
        };
        let Some(section) = next else { break };
        seen += 1;
        let _ = writeln!(out, "{}", describe_section(&section));
        if hex {
            for line in section.chunks(16) {
                let text: Vec<String> = line.iter().map(|b| format!("{b:02x}")).collect();
                let _ = writeln!(out, "    {}", text.join(" "));
            }
        }
    }
    client.del_service(token).await?;
    client.close().await
}

/// One line about a section: table, extension, version, number, length.
pub fn describe_section(section: &[u8]) -> String {
    let table = match section.first() {
        Some(0x00) => "PAT",
        Some(0x02) => "PMT",
        Some(0x42) => "SDT",
        Some(0x4e) => "EIT p/f",
        Some(0x50..=0x5f) => "EIT schedule",
        _ => "other",
    };
    match media::psi::parse_long_section(section) {
        Ok((h, _)) => format!(
            "{table:<12} table_id 0x{:02x}  ext {:5}  version {:2}  section {}/{}  {} bytes",
            h.table_id,
            h.table_id_extension,
            h.version,
            h.section_number,
            h.last_section_number,
            section.len()
        ),
        Err(e) => format!("{table:<12} {} bytes ({e})", section.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_arguments_become_uris() {
        assert_eq!(
            service_uri("Switchyard One"),
            "sah-service://Switchyard%20One"
        );
        assert_eq!(service_uri("5"), "sah-service://5");
        assert_eq!(service_uri("id:42"), "sah-service://id:42");
        assert_eq!(
            service_uri("sah-service://X?data=ts"),
            "sah-service://X?data=ts"
        );
    }

    #[test]
    fn progress_line_shows_bytes_bitrate_duration() {
        assert_eq!(
            progress_line(125_000, Duration::from_secs(1)),
            "125000 bytes  1000 kbit/s  1.0 s"
        );
        let s = RecordSummary {
            bytes: 0,
            duration: Duration::ZERO,
            cut: true,
        };
        assert!(s.to_string().contains("incomplete"));
    }

    #[test]
    fn cli_parses() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Top {
            #[command(flatten)]
            cli: Cli,
        }
        let t = Top::parse_from([
            "x",
            "--host",
            "::1",
            "record",
            "Switchyard One",
            "-o",
            "a.ts",
            "--duration",
            "5",
        ]);
        assert!(matches!(
            t.cli.command,
            Command::Record {
                duration: Some(5),
                ..
            }
        ));
        let t = Top::parse_from(["x", "sections", "1", "--tables", "pat,pmt", "--count", "2"]);
        assert!(matches!(
            t.cli.command,
            Command::Sections { count: Some(2), .. }
        ));
        let t = Top::parse_from(["x", "list"]);
        assert!(matches!(t.cli.command, Command::List { follow: false }));
    }
}
