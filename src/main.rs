//! `weir`: the command line. Parses flags, sets up logging and signals, and
//! hands over to the library.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// jemalloc, whose background thread hands freed pages back to the system
/// (decay of 10 s): with glibc's malloc, weir kept 241 MiB resident after
/// 10,000 client connections had closed again. The library does not choose
/// an allocator; the binary does.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(name = "weir", version, about = "Resilience proxy for LLM APIs")]
struct Cli {
    /// Policy file [default: $WEIR_CONFIG, then ./weir.yaml]
    #[arg(long, global = true, env = "WEIR_CONFIG", default_value = "weir.yaml")]
    config: PathBuf,
    /// Log format on stderr [default: pretty on a terminal, json otherwise]
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a policy file: exit 0, or print every problem and exit 1.
    Check,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Pretty,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Check) = cli.command {
        return match weir::config::load_file(&cli.config) {
            Ok(policy) => {
                println!(
                    "{}: ok ({} upstreams)",
                    cli.config.display(),
                    policy.upstreams.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                for problem in &e.problems {
                    eprintln!("{problem}");
                }
                ExitCode::FAILURE
            }
        };
    }
    init_logging(cli.log_format);
    let policy = match weir::config::load_file(&cli.config) {
        Ok(policy) => policy,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!("starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(policy, cli.config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(policy: weir::config::Policy, path: PathBuf) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut weir = weir::Weir::bind(policy).await?;
    weir.watch_policy(path.clone()).await?;
    let handle = weir.handle();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let reloads = async move {
        while hup.recv().await.is_some() {
            tracing::info!(path = %path.display(), "SIGHUP: reloading the policy, reopening the usage log");
            handle.reopen_usage_log();
            let _ = handle.reload(&path).await;
        }
    };
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    };
    tokio::select! {
        result = weir.run(shutdown) => result,
        // Never ends on its own: the signal stream lives as long as the process.
        _ = reloads => Ok(()),
    }
}

fn init_logging(format: Option<LogFormat>) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match format {
        Some(LogFormat::Json) => true,
        Some(LogFormat::Pretty) => false,
        None => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}
