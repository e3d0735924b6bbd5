//! The `willwatch` command: parses arguments, sets up logging, calls into
//! the library and maps failures to exit codes.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use willwatch::config::{self, Config, ConfigError};
use willwatch::daemon::{self, DaemonError};
use willwatch::{dead_letter, logging, status};

/// The config is invalid (sysexits' EX_CONFIG); the unit file tells systemd
/// not to restart-loop on it.
const EXIT_CONFIG: u8 = 78;

/// Watches MQTT devices' presence and acts when one goes offline.
#[derive(Debug, Parser)]
#[command(version, about, propagate_version = true)]
struct Cli {
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
        /// Log filter, e.g. `debug` or `info,willwatch=debug` (overrides RUST_LOG).
        #[arg(long, value_name = "FILTER")]
        log_level: Option<String>,
        /// How log lines look.
        #[arg(long, value_enum, default_value_t = logging::Format::Auto)]
        log_format: logging::Format,
    },
    /// Validate a config file and print a summary of it.
    Check {
        /// The config file.
        #[arg(short, long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
        /// Also print each device's effective settings.
        #[arg(short, long, conflicts_with = "quiet")]
        verbose: bool,
        /// Print only problems (for `ExecReload=`: the journal gets the
        /// errors, not the summary).
        #[arg(short, long)]
        quiet: bool,
        /// Print a JSON Schema of the config file (for editors) and exit.
        #[arg(long)]
        json_schema: bool,
    },
    /// Show what a running daemon knows: exit 0 when no device's outage was
    /// notified, 1 when one was, 2 when the daemon cannot be reached or is not
    /// connected to its broker.
    Status {
        /// The config file, for the address of the daemon's HTTP endpoint
        /// (default: /etc/willwatch/willwatch.toml, or the default address
        /// when that file does not exist).
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// The daemon's status URL (default: from the config's [http] listen).
        #[arg(long)]
        url: Option<String>,
        /// Only offline devices.
        #[arg(long)]
        offline: bool,
        /// Print the JSON document instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List what actions gave up on (the dead-letter file), or send it again.
    DeadLetter {
        /// The config file (for the state directory and the actions).
        #[arg(short, long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
        #[command(subcommand)]
        command: Option<DeadLetterCommand>,
    },
}

#[derive(Debug, Subcommand)]
enum DeadLetterCommand {
    /// Show the records, oldest first (the default).
    List {
        #[command(flatten)]
        filter: FilterArgs,
        /// One JSON record a line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Send webhook deliveries again with their original ids; delivered
    /// records are removed, the rest kept. Exit 1 when any is left.
    Replay {
        #[command(flatten)]
        filter: FilterArgs,
    },
}

#[derive(Debug, Clone, clap::Args)]
struct FilterArgs {
    /// Only this action's records.
    #[arg(long, value_name = "NAME")]
    action: Option<String>,
    /// Only records that failed within this long (e.g. `2h`, `3d`).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    since: Option<std::time::Duration>,
}

impl From<FilterArgs> for dead_letter::command::Filter {
    fn from(a: FilterArgs) -> Self {
        dead_letter::command::Filter { action: a.action, since: a.since }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { json_schema: true, .. } => {
            out(config::JSON_SCHEMA);
            ExitCode::SUCCESS
        }
        Command::Check { config, verbose, quiet, .. } => check(&config, verbose, quiet),
        Command::Status { config, url, offline, json } => status(config, url, offline, json),
        Command::DeadLetter { config, command } => dead_letters(&config, command),
        Command::Run { config, log_level, log_format } => {
            if let Err(e) = logging::init(log_format, log_level.as_deref()) {
                eprintln!("willwatch: {e}");
                return ExitCode::from(2);
            }
            run(&config)
        }
    }
}

fn check(path: &std::path::Path, verbose: bool, quiet: bool) -> ExitCode {
    match Config::load(path) {
        Ok(config) => {
            for warning in &config.warnings {
                eprintln!("{warning}");
            }
            if !quiet {
                out(&willwatch::summary::summary(&config));
            }
            if verbose {
                out(&willwatch::summary::effective(&config));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Writes to stdout; a reader that went away (`willwatch check | head -1`)
/// is no error worth a panic.
fn out(text: &str) {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

/// The daemon's status URL: `--url`, else from the config's `[http]
/// listen`. A config named with `-c` must load; the default one may be
/// absent (the default address is asked then).
fn status_url(path: Option<PathBuf>, url: Option<String>) -> Result<String, String> {
    if let Some(url) = url {
        return Ok(url);
    }
    let default = config::DEFAULT_HTTP_LISTEN.parse().expect("a valid default address");
    let listen = match Config::load(path.as_deref().unwrap_or(std::path::Path::new(config::DEFAULT_PATH))) {
        Ok(config) => config.http_listen.ok_or("the config turns the HTTP endpoint off ([http] listen = \"\")")?,
        Err(ConfigError::Read { source, .. }) if path.is_none() && source.kind() == std::io::ErrorKind::NotFound => {
            default
        }
        Err(e) => return Err(e.to_string()),
    };
    Ok(status::url_for(listen))
}

fn status(path: Option<PathBuf>, url: Option<String>, offline: bool, json: bool) -> ExitCode {
    let url = match status_url(path, url) {
        Ok(url) => url,
        Err(e) => {
            eprintln!("willwatch: {e}");
            return ExitCode::from(status::EXIT_CANNOT_TELL);
        }
    };
    let state = offline.then_some("offline");
    let fetched = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|rt| rt.block_on(status::fetch(&url, state)));
    match fetched {
        Ok(doc) => {
            let now = std::time::SystemTime::now();
            if json {
                out(&format!("{doc:#}\n"));
            } else {
                out(&status::table(&doc, now));
            }
            let (code, why) = status::verdict(&doc, now);
            if let Some(why) = why {
                eprintln!("willwatch: {why}");
            }
            ExitCode::from(code)
        }
        Err(e) => {
            eprintln!("willwatch: {e}");
            ExitCode::from(status::EXIT_CANNOT_TELL)
        }
    }
}

fn dead_letters(path: &std::path::Path, command: Option<DeadLetterCommand>) -> ExitCode {
    use dead_letter::command::{self as dl, Outcome};
    // A replay signs with the webhook secrets: they must be readable.
    let load =
        if matches!(command, Some(DeadLetterCommand::Replay { .. })) { Config::load_runnable } else { Config::load };
    let config = match load(path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let command =
        command.unwrap_or(DeadLetterCommand::List { filter: FilterArgs { action: None, since: None }, json: false });
    match command {
        DeadLetterCommand::List { filter, json } => match dl::list(&config.state_dir, &filter.into()) {
            Ok(records) if json => {
                out(&records.iter().map(|r| serde_json::to_string(r).unwrap_or_default() + "\n").collect::<String>());
                ExitCode::SUCCESS
            }
            Ok(records) => {
                out(&dl::table(&records));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("willwatch: {e}");
                ExitCode::from(2)
            }
        },
        DeadLetterCommand::Replay { filter } => {
            let replayed = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
                .and_then(|rt| rt.block_on(dl::replay(&config, &filter.into())).map_err(|e| e.to_string()));
            match replayed {
                Ok(results) => {
                    let mut left = 0;
                    for (record, outcome) in &results {
                        let (what, why) = match outcome {
                            Outcome::Delivered => ("delivered", String::new()),
                            Outcome::Failed(e) => ("failed, kept", format!(": {e}")),
                            Outcome::Kept(why) => ("kept", format!(": {why}")),
                        };
                        left += usize::from(*outcome != Outcome::Delivered);
                        out(&format!(
                            "{} {} ({} event(s)) {what}{why}\n",
                            record.action,
                            record.id,
                            record.events.len()
                        ));
                    }
                    out(&format!("{} delivered and removed, {left} left\n", results.len() - left));
                    if left == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
                }
                Err(e) => {
                    eprintln!("willwatch: {e}");
                    ExitCode::from(2)
                }
            }
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
                ConfigError::Read { .. } | ConfigError::Invalid { .. } | ConfigError::Credentials { .. } => {
                    ExitCode::from(EXIT_CONFIG)
                }
            }
        }
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
