//! The `berry` command: serve the gateway, check a config, or run the mock provider.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};

use berry::config::Config;
use berry::gateway::Gateway;
use berry::mock::{FailMode, MockServer, MockSettings};
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "berry",
    version,
    about = "An OpenAI-compatible LLM gateway with WebAssembly routing and auth plugins"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the gateway (the default).
    Serve(ServeArgs),
    /// Validate a config file fully (the same checks the server runs, plugins
    /// included); exit 0 when valid, 1 with every problem listed when not.
    CheckConfig { path: PathBuf },
    /// Run the mock OpenAI-compatible provider on its own.
    MockProvider(MockArgs),
    /// Plugin tools.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Print a usage summary from the ledger (works while no gateway runs).
    Usage {
        /// The ledger file [default: settings.usage_db of the config, else its default]
        #[arg(long)]
        db: Option<PathBuf>,
        /// How far back: 30m, 12h, 7d …
        #[arg(long, default_value = "7d")]
        since: String,
        /// Group by these, comma-separated: user, model, backend, day
        #[arg(long, default_value = "user,model")]
        by: String,
        /// The config whose settings.usage_db to read [default: $CONFIG_PATH, else config/berry.toml]
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Create a plugin crate that builds as-is (`cargo build --release` → .wasm).
    New {
        /// Crate name: lowercase letters, digits and _.
        name: String,
        #[arg(long, value_parser = ["strategy", "auth"])]
        kind: String,
        /// Where to create it [default: ./<name>]
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Depend on this berry-plugin-sdk instead of a copy of the binary's own
        #[arg(long)]
        sdk_path: Option<PathBuf>,
    },
    /// Write the plugin SDK this binary carries (sources and WIT) into a folder.
    Sdk {
        /// The folder to write the SDK crate into (created; must be empty)
        #[arg(long)]
        out: PathBuf,
        /// Replace the SDK files of a folder that has them (an older SDK)
        #[arg(long)]
        force: bool,
    },
    /// Put a plugin through the situations the gateway tries before it loads one;
    /// print each situation, the answer, and whether it passed. Exit 0 when all do.
    Test {
        /// The plugin's .wasm file
        path: PathBuf,
        /// Try it on the routes (strategy) or users (auth) of this config [default: a
        /// small config of its own]
        #[arg(long)]
        config: Option<PathBuf>,
        /// strategy or auth [default: what the plugin exports]
        #[arg(long, value_parser = ["strategy", "auth"])]
        kind: Option<String>,
    },
}

#[derive(Args, Clone)]
struct ServeArgs {
    /// Config file [default: $CONFIG_PATH, else config/berry.toml]
    #[arg(long)]
    config: Option<PathBuf>,
    /// Listen address [default: $BIND_ADDRESS, else settings.listen, else 0.0.0.0:8080]
    #[arg(long)]
    listen: Option<String>,
}

#[derive(Args)]
struct MockArgs {
    #[arg(long, default_value_t = 9090)]
    port: u16,
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Label returned as `system_fingerprint`.
    #[arg(long, default_value = "mock")]
    name: String,
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    #[arg(long, default_value_t = 5)]
    chunks: u32,
    #[arg(long, default_value_t = 0)]
    chunk_delay_ms: u64,
    /// Fail with this HTTP status (with --fail-rate of requests).
    #[arg(long)]
    fail_status: Option<u16>,
    #[arg(long, default_value_t = 1.0)]
    fail_rate: f64,
    /// Stamp every SSE event with a `: sent_us=…` comment (latency benchmarks).
    #[arg(long)]
    stamp: bool,
}

fn main() -> ExitCode {
    berry::telemetry::init();
    // Every command's failure is one `anyhow::Error`, printed here with its causes.
    let code = run().unwrap_or_else(|e| {
        report(&e);
        ExitCode::FAILURE
    });
    // Log lines are written out in batches: the last ones before exit too.
    berry::telemetry::flush();
    code
}

fn run() -> Result<ExitCode> {
    berry::plugin::set_cache_dir(cache_dir());
    let cli = Cli::parse();
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")?;
    match cli.command {
        None => runtime.block_on(serve(cli.serve)),
        Some(Command::Serve(args)) => runtime.block_on(serve(args)),
        Some(Command::CheckConfig { path }) => runtime.block_on(check_config(path)),
        Some(Command::Usage { db, since, by, config }) => usage(db, &since, &by, config),
        Some(Command::MockProvider(args)) => runtime.block_on(mock_provider(args)),
        Some(Command::Plugin(PluginCommand::New { name, kind, dir, sdk_path })) => {
            plugin_new(&name, &kind, dir, sdk_path)
        }
        Some(Command::Plugin(PluginCommand::Sdk { out, force })) => plugin_sdk(&out, force),
        Some(Command::Plugin(PluginCommand::Test { path, config, kind })) => {
            runtime.block_on(plugin_test(path, config, kind))
        }
    }
}

/// `berry: what failed: why` (each cause after a colon; a multi-line cause, such as
/// a config's list of errors, on its own lines).
#[allow(clippy::print_stderr, reason = "CLI error output")]
fn report(e: &anyhow::Error) {
    eprintln!("berry: {e:#}");
}

/// Where compiled plugins are cached between runs: `$BERRY_CACHE_DIR`, else the XDG
/// cache folder; empty `BERRY_CACHE_DIR` turns the disk cache off.
fn cache_dir() -> Option<PathBuf> {
    match std::env::var_os("BERRY_CACHE_DIR") {
        Some(dir) if dir.is_empty() => None,
        Some(dir) => Some(PathBuf::from(dir)),
        None => std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .map(|base| base.join("berry").join("plugins")),
    }
}

fn config_path(args: &ServeArgs) -> PathBuf {
    args.config
        .clone()
        .or_else(|| std::env::var_os("CONFIG_PATH").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("config/berry.toml"))
}

async fn serve(args: ServeArgs) -> Result<ExitCode> {
    let path = config_path(&args);
    let config = Config::load(&path).map_err(|e| anyhow!("invalid config {}:\n{e}", path.display()))?;
    let listen = args
        .listen
        .or_else(|| std::env::var("BIND_ADDRESS").ok())
        .or_else(|| config.settings.listen.clone())
        .unwrap_or_else(|| "0.0.0.0:8080".to_string());
    if let Some(e) = config.exposure_error(&listen) {
        bail!("refusing to serve {}:\n{e}", path.display());
    }
    config.log_warnings();
    let max_connections = u64::from(config.settings.max_connections);
    match berry::server::conn::raise_fd_limit() {
        // Each client connection may hold an upstream connection too.
        Some(limit) if limit < 2 * max_connections + 256 => tracing::warn!(
            limit,
            max_connections,
            "the open-file limit is below what settings.max_connections needs (2 per connection); \
             raise it (ulimit -n) or lower max_connections"
        ),
        _ => {}
    }
    let gateway = Gateway::start(config).await.map_err(|e| anyhow!(e))?;
    let listener =
        tokio::net::TcpListener::bind(&listen).await.with_context(|| format!("cannot listen on {listen}"))?;
    gateway.set_listen_address(&listen);
    gateway.join_fleet().await;
    gateway.watch_files();
    reload_on_sighup(gateway.clone());
    let addr = listener.local_addr().map_or(listen.clone(), |a| a.to_string());
    tracing::info!(config = %path.display(), "berry listening on http://{addr}");
    let stops = stop_signals();
    let (mut first, mut second) = (stops.clone(), stops);
    let shutdown = async move {
        let _ = first.wait_for(|n| *n >= 1).await;
    };
    let force = async move {
        let _ = second.wait_for(|n| *n >= 2).await;
    };
    let fleet = gateway.cluster.clone();
    let ledger = gateway.accounting.ledger.clone();
    let tracer = gateway.tracer.clone();
    let stopped = berry::server::serve(listener, gateway, shutdown, force).await;
    if let Some(cluster) = fleet {
        cluster.leave().await;
    }
    // Every request has been written to the ledger before the process ends.
    if let Some(ledger) = ledger
        && !tokio::task::spawn_blocking(move || ledger.flush(std::time::Duration::from_secs(10))).await.unwrap_or(false)
    {
        tracing::warn!("the usage ledger could not be flushed in 10 s; the last records may be missing");
    }
    if let Some(tracer) = tracer {
        tracer.shutdown(std::time::Duration::from_secs(5)).await;
    }
    tracing::info!(?stopped, "berry stopped");
    Ok(if stopped == berry::server::Stopped::Forced { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

#[allow(clippy::print_stdout, reason = "CLI output")]
fn usage(db: Option<PathBuf>, since: &str, by: &str, config: Option<PathBuf>) -> Result<ExitCode> {
    use berry::usage::query;
    let window = query::parse_since(since)
        .with_context(|| format!("--since {since:?}: write a number and a unit: 30m, 12h, 7d"))?;
    let mut keys = Vec::new();
    for name in by.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let key = query::Key::parse(name)
            .with_context(|| format!("--by: {name:?} is not one of user, model, backend, day"))?;
        keys.push(key);
    }
    let path = match db {
        Some(path) => path,
        None => {
            let config = config
                .or_else(|| std::env::var_os("CONFIG_PATH").map(PathBuf::from))
                .unwrap_or_else(|| PathBuf::from("config/berry.toml"));
            let loaded =
                Config::load(&config).map_err(|e| anyhow!("{} is invalid (or pass --db):\n{e}", config.display()))?;
            loaded
                .settings
                .usage_db
                .with_context(|| format!("{}: the usage ledger is off (usage_db = \"\")", config.display()))?
        }
    };
    if !path.exists() {
        bail!("{}: no usage ledger there", path.display());
    }
    let now = berry::health::now_ms();
    let rows = query::summary(&path, now.saturating_sub(window), now + 1, &keys)
        .with_context(|| format!("reading {}", path.display()))?;
    print!("{}", query::table(&rows, &keys));
    Ok(ExitCode::SUCCESS)
}

/// `SIGHUP` reloads the config file (prepare → swap; a bad file changes nothing).
fn reload_on_sighup(gateway: std::sync::Arc<Gateway>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot install the SIGHUP handler; reload with POST /admin/reload");
        return;
    };
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP received: reloading the config");
            if let Err(e) = gateway.reload_from_disk().await {
                tracing::error!("{e}");
            }
        }
    });
}

/// Counts SIGTERM and SIGINT signals: the first starts a graceful drain, a second
/// ends it at once.
fn stop_signals() -> tokio::sync::watch::Receiver<u32> {
    use tokio::signal::unix::{SignalKind, signal};
    let (count, counted) = tokio::sync::watch::channel(0u32);
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        // The sender lives on, so nothing ever reads as a stop signal.
        tokio::spawn(async move {
            let _count = count;
            std::future::pending::<()>().await;
        });
        return counted;
    };
    tokio::spawn(async move {
        loop {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            count.send_modify(|n| *n += 1);
            match *count.borrow() {
                1 => tracing::info!("{name} received: draining (send it again to exit at once)"),
                _ => tracing::warn!("{name} received again: exiting now"),
            }
        }
    });
    counted
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let mut stops = stop_signals();
    let _ = stops.wait_for(|n| *n >= 1).await;
}

#[allow(clippy::print_stdout, reason = "CLI output")]
async fn check_config(path: PathBuf) -> Result<ExitCode> {
    let config = Config::load(&path).map_err(|e| anyhow!("{} is invalid:\n{e}", path.display()))?;
    // Build the whole gateway state (plugins compiled, configured and smoke-called)
    // without listening: the same checks a start or reload runs.
    let models = config.models.len();
    let users = config.users.len();
    #[allow(clippy::print_stderr, reason = "CLI output")]
    for warning in &config.warnings {
        eprintln!("warning: {warning}");
    }
    let gateway = Gateway::start(config).await.map_err(|e| anyhow!("{} is invalid:\n{e}", path.display()))?;
    println!("{}: OK ({models} models, {users} users)", path.display());
    // Checked, not joined: a check announces no replica and takes no plugin.
    if let Some(cluster) = &gateway.cluster {
        match cluster.ping().await {
            Ok(()) => println!("cluster: Redis answers"),
            Err(e) => println!("cluster: Redis does not answer ({e}); replicas would start under on_unavailable"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[allow(clippy::print_stdout, reason = "CLI output")]
fn plugin_new(name: &str, kind: &str, dir: Option<PathBuf>, sdk_path: Option<PathBuf>) -> Result<ExitCode> {
    let kind = if kind == "auth" { berry::config::PluginKind::Auth } else { berry::config::PluginKind::Strategy };
    let dir = dir.unwrap_or_else(|| PathBuf::from(name));
    let files = berry::sdk::scaffold::new_plugin(name, kind, &dir, sdk_path.as_deref()).map_err(|e| anyhow!(e))?;
    println!("created {} ({} files, the SDK included)", dir.display(), files.len());
    println!(
        "\nnext: rustup target add wasm32-wasip2   # once per machine\n      cd {} && cargo build --release",
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

#[allow(clippy::print_stdout, reason = "CLI output")]
fn plugin_sdk(out: &std::path::Path, force: bool) -> Result<ExitCode> {
    let files = berry::sdk::export(out, force).map_err(|e| anyhow!(e))?;
    println!(
        "wrote berry-plugin-sdk {} ({} files) to {}",
        berry::plugin::version::WIT_VERSION,
        files.len(),
        out.display()
    );
    println!("depend on it with: berry-plugin-sdk = {{ path = {:?} }}", out.display().to_string());
    Ok(ExitCode::SUCCESS)
}

#[allow(clippy::print_stdout, reason = "CLI output")]
async fn mock_provider(args: MockArgs) -> Result<ExitCode> {
    let settings = MockSettings {
        name: args.name,
        latency_ms: args.latency_ms,
        chunks: args.chunks.max(1),
        chunk_delay_ms: args.chunk_delay_ms,
        fail: args.fail_status.map_or(FailMode::None, FailMode::Status),
        fail_rate: args.fail_rate.clamp(0.0, 1.0),
        stamp: args.stamp,
        ..MockSettings::default()
    };
    let server = MockServer::start(&format!("{}:{}", args.host, args.port), settings)
        .await
        .context("cannot start the mock provider")?;
    println!("mock provider listening on {}", server.base_url());
    shutdown_signal().await;
    Ok(ExitCode::SUCCESS)
}

/// `berry plugin test`: the report of every situation; exit 0 only when all passed.
#[allow(clippy::print_stdout, reason = "CLI output")]
async fn plugin_test(path: PathBuf, config: Option<PathBuf>, kind: Option<String>) -> Result<ExitCode> {
    let kind =
        kind.map(|k| if k == "auth" { berry::config::PluginKind::Auth } else { berry::config::PluginKind::Strategy });
    // Off the runtime's threads: the trial compiles and calls the plugin synchronously.
    let tried = tokio::task::spawn_blocking(move || berry::sdk::try_plugin::run(&path, config.as_deref(), kind)).await;
    let report = tried.context("the trial panicked")?.map_err(|e| anyhow!(e))?;
    print!("{}", report.render());
    Ok(if report.clean() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
