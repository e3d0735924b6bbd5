//! The command line: every subcommand and flag, defined once, for the
//! binary (which parses it) and for the man page (generated from it by
//! `cargo run --example manpage`).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::{config, dead_letter, logging};

/// Watches MQTT devices' presence and acts when one goes offline.
#[derive(Debug, Parser)]
#[command(version, about, propagate_version = true)]
pub struct Cli {
    /// The config file, anywhere on the line [default:
    /// /etc/willwatch/willwatch.toml; without it, `status` asks the default
    /// address when that file does not exist].
    #[arg(short, long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The config file named, or the default one.
    pub fn config_path(&self) -> PathBuf {
        self.config.clone().unwrap_or_else(|| PathBuf::from(config::DEFAULT_PATH))
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon.
    Run {
        /// Log filter, e.g. `debug` or `info,willwatch=debug` (overrides RUST_LOG).
        #[arg(long, value_name = "FILTER")]
        log_level: Option<String>,
        /// How log lines look.
        #[arg(long, value_enum, default_value_t = logging::Format::Auto)]
        log_format: logging::Format,
    },
    /// Validate a config file and print a summary of it.
    Check {
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
    /// Availability from the history: per device uptime, outages, the
    /// longest outage and the mean time to recovery, worst first; with a
    /// device, its transitions too.
    History {
        /// One device only.
        device: Option<String>,
        /// The window, back from now (e.g. `24h`, `7d`).
        #[arg(long, value_name = "DURATION", default_value = "7d", value_parser = crate::history::command::window)]
        since: std::time::Duration,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List what actions gave up on (the dead-letter file), or send it again.
    DeadLetter {
        #[command(subcommand)]
        command: Option<DeadLetterCommand>,
    },
    /// Try a notification action.
    Notify {
        #[command(subcommand)]
        command: NotifyCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum NotifyCommand {
    /// Send a test message through one action (a webhook or a service) and
    /// print the service's answer: exit 0 when it accepted the message, 1
    /// when it did not, 2 when the action cannot be tried.
    Test {
        /// The action's NAME in `[action.NAME]`.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum DeadLetterCommand {
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
pub struct FilterArgs {
    /// Only this action's records.
    #[arg(long, value_name = "NAME")]
    pub action: Option<String>,
    /// Only records that failed within this long (e.g. `2h`, `3d`).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub since: Option<std::time::Duration>,
}

impl From<FilterArgs> for dead_letter::command::Filter {
    fn from(a: FilterArgs) -> Self {
        dead_letter::command::Filter { action: a.action, since: a.since }
    }
}
