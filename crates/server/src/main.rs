//! `switchyard`: one server for live TV, movies and video meetings.
//!
//! This binary parses the command line and the configuration, builds the
//! yard, and wires every front end to it. It holds no protocol logic: each
//! protocol lives in its own crate.

mod config;
mod tls;
mod web;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut config = match &cli.config {
        None => Config::default(),
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
        config.web.listen.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    if cli.print_config {
        print!("{}", config.to_toml());
        return ExitCode::SUCCESS;
    }
    init_tracing();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("switchyard: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => serve(config, cli.data).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchyard: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_target(false).init();
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

    let scheme = if config.web.plain_http { "http" } else { "https" };
    let state = web::WebState {
        yard: yard.clone(),
        metrics,
        public_url: config.web.public_url.clone(),
        scheme,
    };
    let app = web::router(state);

    let web_addr = config.web.listen;
    let handle = axum_server::Handle::new();
    let web_task = if config.web.plain_http {
        let listener = std::net::TcpListener::bind(web_addr).with_context(|| format!("web port {web_addr}"))?;
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
        let listener = std::net::TcpListener::bind(web_addr).with_context(|| format!("web port {web_addr}"))?;
        listener.set_nonblocking(true)?;
        let server = axum_server::from_tcp_rustls(listener, tls)?.handle(handle.clone());
        tokio::spawn(server.serve(app.into_make_service_with_connect_info::<SocketAddr>()))
    };

    print_banner(&yard, scheme, web_addr);

    wait_for_signal().await;
    tracing::info!("shutting down");
    shutdown.cancel();
    handle.graceful_shutdown(Some(std::time::Duration::from_secs(3)));
    let _ = web_task.await;
    Ok(())
}

fn shown_host(addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        format!("localhost:{}", addr.port())
    } else {
        addr.to_string()
    }
}

fn print_banner(yard: &yard::Yard, scheme: &str, web: SocketAddr) {
    let host = shown_host(web);
    println!("Switchyard is serving:");
    println!("  web         {scheme}://{host}/");
    println!("  TV over HTTP {scheme}://{host}/playlist");
    println!("Channels:");
    for c in yard.channels() {
        println!("  {:>3}  {:<24} {scheme}://{host}/stream/channel/{}", c.number, c.name, c.id);
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
