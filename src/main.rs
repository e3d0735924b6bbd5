//! The `willwatch` command: parses arguments, sets up logging, calls into
//! the library and maps failures to exit codes.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use willwatch::config::{self, Config, ConfigError};
use willwatch::daemon::{self, DaemonError};
use willwatch::logging;

/// The config is invalid (sysexits' EX_CONFIG); the unit file tells systemd
/// not to restart-loop on it.
const EXIT_CONFIG: u8 = 78;

/// Watches MQTT devices' presence and acts when one goes offline.
#[derive(Debug, Parser)]
#[command(version, about, propagate_version = true)]
struct Cli {
    /// Log filter, e.g. `debug` or `info,willwatch=debug` (overrides RUST_LOG).
    #[arg(long, global = true, value_name = "FILTER")]
    log_level: Option<String>,
    /// How log lines look.
    #[arg(long, global = true, value_enum, default_value_t = logging::Format::Auto)]
    log_format: logging::Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon.
    Run {
        /// The config file.
        #[arg(short, long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Validate a config file and print a summary of it.
    Check {
        /// The config file.
        #[arg(short, long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Run { config } => {
            if let Err(e) = logging::init(cli.log_format, cli.log_level.as_deref()) {
                eprintln!("willwatch: {e}");
                return ExitCode::from(2);
            }
            run(&config)
        }
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match Config::load(path) {
        Ok(config) => {
            for warning in &config.warnings {
                eprintln!("{warning}");
            }
            print!("{}", willwatch::summary::summary(&config));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn run(path: &std::path::Path) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(daemon::run(path)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(DaemonError::Config(e)) => {
            let lines = e.to_string();
            tracing::error!("invalid config, not starting:\n{lines}");
            match e {
                ConfigError::Read { .. } | ConfigError::Invalid { .. } => ExitCode::from(EXIT_CONFIG),
            }
        }
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
