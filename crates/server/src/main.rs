//! `switchyard`: one server for live TV, movies and video meetings.
//!
//! This binary parses the command line and the configuration, builds the
//! yard, and wires every front end to it. It holds no protocol logic: each
//! protocol lives in its own crate.

mod config;
mod tls;
mod tvweb;
mod web;
mod webui;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::config::Config;

const EXAMPLES: &str = "Examples:
  switchyard                          run the demo (two TV channels, a movie, an open room)
  switchyard --http                   the same over plain HTTP on 127.0.0.1
  switchyard --config yard.toml       run with a configuration file
  switchyard --print-config           print the effective configuration
  ffplay https://localhost:8443/stream/channel/1   (after accepting the certificate)";

#[derive(Parser, Debug)]
#[command(name = "switchyard", version, about = "One server for live TV, movies and video meetings", after_help = EXAMPLES)]
struct Cli {
    /// Configuration file (TOML). Every key has a default.
    #[arg(long, short, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data folder: database, recordings, certificate.
    #[arg(long, value_name = "DIR", default_value = "./switchyard-data")]
    data: PathBuf,
    /// Plain HTTP on loopback instead of HTTPS.
    #[arg(long)]
    http: bool,
    /// Print the effective configuration and exit.
    #[arg(long)]
    print_config: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// HeliosTv client: list services, record a service, dump its sections.
    Heliostv(heliostv::client::Cli),
    /// Movie protocol client: lead a session, join one, list sessions.
    #[command(subcommand)]
    Movie(MovieCommand),
}

#[derive(Subcommand, Debug)]
enum MovieCommand {
    /// Open a session, pick a movie and receive it with the group.
    Lead {
        /// HOST[:PORT] of the server (default port 31107).
        server: String,
        /// Movie id or name (default: ask on a terminal, else the first).
        #[arg(long)]
        movie: Option<String>,
        /// Interval between data packets, e.g. 5ms (the server may adjust it).
        #[arg(long, value_parser = movie::client::parse_interval)]
        interval: Option<std::time::Duration>,
        /// Session port to ask for (0: any).
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// Where to write the movie (default: its name in the current folder).
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// No progress bar.
        #[arg(long)]
        no_progress: bool,
    },
    /// Join a session the leader announced (HOST:PORT).
    Join {
        session: String,
        #[arg(long, value_parser = movie::client::parse_interval)]
        interval: Option<std::time::Duration>,
        #[arg(long, short)]
        output: Option<PathBuf>,
        #[arg(long)]
        no_progress: bool,
    },
    /// List the sessions of a server.
    List {
        /// HOST[:PORT] of the server.
        server: String,
    },
}

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut config = match &cli.config {
        // No file: the demo, where anyone may watch and record.
        None => {
            let mut c = Config::default();
            c.access.anonymous = true;
            c
        }
        Some(path) => match Config::load(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("switchyard: {e}");
                return ExitCode::from(2);
            }
        },
    };
    if cli.http {
        config.web.plain_http = true;
        config
            .web
            .listen
            .set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    if cli.print_config {
        print!("{}", config.to_toml());
        return ExitCode::SUCCESS;
    }
    init_tracing();
    let command = cli.command.unwrap_or(Command::Serve);
    if !matches!(command, Command::Serve) {
        return run_client(command);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("switchyard: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(serve(config, cli.data));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchyard: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The client subcommands: exit codes are theirs.
fn run_client(command: Command) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("switchyard: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async {
        let shutdown = CancellationToken::new();
        let ctrl_c = shutdown.clone();
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            ctrl_c.cancel();
        });
        match command {
            Command::Serve => ExitCode::SUCCESS,
            Command::Heliostv(cli) => match heliostv::client::run(cli).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("switchyard heliostv: {e}");
                    ExitCode::FAILURE
                }
            },
            Command::Movie(m) => run_movie(m, shutdown).await,
        }
    })
}

async fn run_movie(command: MovieCommand, shutdown: CancellationToken) -> ExitCode {
    use movie::client::{JoinArgs, LeadArgs, ListArgs};
    let report = match command {
        MovieCommand::List { server } => {
            return match movie::client::list(ListArgs { server }).await {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("switchyard movie: {e}");
                    ExitCode::from(2)
                }
            };
        }
        MovieCommand::Lead {
            server,
            movie,
            interval,
            port,
            output,
            no_progress,
        } => {
            let movie = match movie.map(|m| m.parse()).transpose() {
                Ok(m) => m,
                Err(e) => {
                    eprintln!("switchyard movie: --movie: {e}");
                    return ExitCode::from(2);
                }
            };
            movie::client::lead(
                LeadArgs {
                    server,
                    movie,
                    interval,
                    port,
                    output,
                    progress: !no_progress,
                },
                shutdown,
            )
            .await
        }
        MovieCommand::Join {
            session,
            interval,
            output,
            no_progress,
        } => {
            movie::client::join(
                JoinArgs {
                    session,
                    interval,
                    output,
                    progress: !no_progress,
                },
                shutdown,
            )
            .await
        }
    };
    match report {
        Ok(r) => ExitCode::from(u8::try_from(r.exit_code()).unwrap_or(2)),
        Err(e) => {
            eprintln!("switchyard movie: {e}");
            ExitCode::from(2)
        }
    }
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
}

async fn serve(config: Config, data: PathBuf) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| tracing::warn!("metrics are off: {e}"))
        .ok();

    let yard = yard::Yard::new(&data, config.tv.source_policy(), shutdown.clone())
        .with_context(|| format!("data folder {}", data.display()))?;
    for w in yard.load(&config.tv).await {
        tracing::warn!("{w}");
    }

    let scheme = if config.web.plain_http {
        "http"
    } else {
        "https"
    };
    let mut tasks = tokio::task::JoinSet::new();
    let mut listening: Vec<(&str, String)> = Vec::new();

    // TV: access, DVR, HTSP, HeliosTv.
    let access = Arc::new(yard::access::Access::new(&config.access).context("[access]")?);
    let store = yard::store::Store::open_in(yard.data_dir()).context("opening the database")?;
    let dvr =
        yard::dvr::Dvr::start(yard.clone(), store, shutdown.clone()).context("starting the DVR")?;
    let htsp_ctx = htsp::HtspContext::new(yard.clone(), Some(dvr), access.clone(), &config.htsp);
    if config.htsp.enabled {
        listening.push(("HTSP", format!("htsp://{}", shown(&config.htsp.listen))));
        let (cfg, ctx, stop) = (config.htsp.clone(), htsp_ctx.clone(), shutdown.clone());
        tasks.spawn(async move {
            htsp::run(cfg, ctx, stop)
                .await
                .map_err(|e| anyhow::anyhow!("HTSP: {e}"))
        });
    }
    if config.heliostv.enabled {
        let first = |v: &[SocketAddr]| {
            v.iter()
                .find(|a| a.is_ipv4())
                .or(v.first())
                .map(|a| shown(&a.to_string()))
        };
        listening.push((
            "HeliosTv",
            format!(
                "control {} data {}",
                first(&config.heliostv.control_listen).unwrap_or_default(),
                first(&config.heliostv.data_listen).unwrap_or_default()
            ),
        ));
        let (cfg, y, stop) = (config.heliostv.clone(), yard.clone(), shutdown.clone());
        tasks.spawn(async move {
            heliostv::run(cfg, y, stop)
                .await
                .map_err(|e| anyhow::anyhow!("HeliosTv: {e}"))
        });
    }

    // Movies.
    if config.movie.enabled {
        let library = movie::server::library_from_config(
            &config.movie,
            vec![(yard::demo::MOVIE_NAME.to_string(), yard::demo::movie())],
        )
        .context("[movie]")?;
        for a in &config.movie.listen {
            listening.push(("movies", format!("udp://{}", shown(&a.to_string()))));
        }
        let (cfg, stop) = (config.movie.clone(), shutdown.clone());
        tasks.spawn(async move {
            movie::server::serve(cfg, library, stop)
                .await
                .map_err(|e| anyhow::anyhow!("movie: {e}"))
        });
    }

    // Conferences: one SFU for Galène and OWT, rooms in the yard. Empty
    // rooms are forgotten once their history expires.
    {
        let (y, stop) = (yard.clone(), shutdown.clone());
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
            loop {
                tokio::select! {
                    _ = tick.tick() => y.rooms().sweep(std::time::SystemTime::now()),
                    _ = stop.cancelled() => return Ok(()),
                }
            }
        });
    }
    let web_state = web::WebState {
        yard: yard.clone(),
        metrics,
        public_url: config.web.public_url.clone(),
        scheme,
        htsp: htsp_ctx,
        access,
    };
    // TV in the browser, under the same streaming rights as `/stream/...`.
    let tv_guard = web::tv_guard(web_state.clone());
    let mut app = web::router(web_state).merge(tvweb::router_guarded(yard.clone(), Some(tv_guard)));
    if config.galene.enabled || config.owt.enabled {
        let sfu = rtc::Sfu::start(config.rtc.clone(), shutdown.clone())
            .context("starting the WebRTC media plane [rtc]")?;
        for a in sfu.local_addrs() {
            listening.push(("WebRTC", format!("udp://{a}")));
        }
        if config.galene.enabled {
            let mut gcfg = config.galene.clone();
            gcfg.tls = !config.web.plain_http;
            let state =
                galene::GaleneState::new(gcfg, yard.rooms().clone(), sfu.clone(), yard.data_dir())
                    .context("[galene]")?;
            app = app.merge(galene::router(state));
            listening.push((
                "Galène",
                format!("{}/ws", web_url(scheme, web_addr_of(&config))),
            ));
        }
        if config.owt.enabled {
            let mut ocfg = config.owt.clone();
            ocfg.secure = !config.web.plain_http;
            let (router, _state) =
                owt::build(ocfg, yard.clone(), sfu.clone(), shutdown.clone()).context("[owt]")?;
            app = app.merge(router);
            listening.push((
                "OWT",
                format!(
                    "{}/socket.io/ and /v1/rooms",
                    web_url(scheme, web_addr_of(&config))
                ),
            ));
        }
    }

    // The browser client; it dresses the Galène group pages.
    let app = app
        .merge(webui::router())
        .layer(axum::middleware::from_fn(webui::group_page));
    let web_addr = config.web.listen;
    let handle = axum_server::Handle::new();
    let web_task = if config.web.plain_http {
        let listener = std::net::TcpListener::bind(web_addr)
            .with_context(|| format!("web port {web_addr}"))?;
        listener.set_nonblocking(true)?;
        let server = axum_server::from_tcp(listener)?.handle(handle.clone());
        tokio::spawn(server.serve(app.into_make_service_with_connect_info::<SocketAddr>()))
    } else {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let files = tls::ensure_cert(&data, config.web.cert.as_deref(), config.web.key.as_deref())?;
        if files.generated {
            tracing::info!(cert = %files.cert.display(), "generated a self-signed certificate");
        }
        let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(&files.cert, &files.key)
            .await
            .with_context(|| format!("loading {}", files.cert.display()))?;
        let listener = std::net::TcpListener::bind(web_addr)
            .with_context(|| format!("web port {web_addr}"))?;
        listener.set_nonblocking(true)?;
        let server = axum_server::from_tcp_rustls(listener, tls)?.handle(handle.clone());
        tokio::spawn(server.serve(app.into_make_service_with_connect_info::<SocketAddr>()))
    };

    print_banner(&yard, scheme, web_addr, &listening);

    let failure = tokio::select! {
        _ = wait_for_signal() => None,
        Some(Ok(Err(e))) = tasks.join_next() => Some(e),
    };
    tracing::info!("shutting down");
    shutdown.cancel();
    handle.graceful_shutdown(Some(std::time::Duration::from_secs(3)));
    let _ = web_task.await;
    let drain = async { while tasks.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), drain).await;
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn web_addr_of(config: &Config) -> SocketAddr {
    config.web.listen
}

fn web_url(scheme: &str, addr: SocketAddr) -> String {
    format!("{scheme}://{}", shown_host(addr))
}

/// An address as a person would type it: a wildcard becomes localhost.
fn shown(addr: &str) -> String {
    match addr.parse::<SocketAddr>() {
        Ok(a) => shown_host(a),
        Err(_) => addr.to_string(),
    }
}

fn shown_host(addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        format!("localhost:{}", addr.port())
    } else {
        addr.to_string()
    }
}

fn print_banner(yard: &yard::Yard, scheme: &str, web: SocketAddr, listening: &[(&str, String)]) {
    let host = shown_host(web);
    println!("Switchyard is serving:");
    println!("  {:<10} {scheme}://{host}/", "web");
    println!("  {:<10} {scheme}://{host}/playlist", "TV (HTTP)");
    for (what, url) in listening {
        println!("  {what:<10} {url}");
    }
    println!("  {:<10} {scheme}://{host}/group/lobby/", "meeting");
    println!(
        "Movie:      {} ({} KiB, embedded)",
        yard::demo::MOVIE_NAME,
        yard::demo::MOVIE.len() / 1024
    );
    println!("Channels:");
    for c in yard.channels() {
        println!(
            "  {:>3}  {:<24} {scheme}://{host}/stream/channel/{}",
            c.number, c.name, c.id
        );
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
