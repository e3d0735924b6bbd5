//! The `willwatch` command: parses arguments, sets up logging, calls into
//! the library and maps failures to exit codes.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use willwatch::cli::{Cli, Command, DeadLetterCommand, FilterArgs, NotifyCommand};
use willwatch::config::{self, Config, ConfigError};
use willwatch::daemon::{self, DaemonError};
use willwatch::{actions, dead_letter, logging, status};

/// The config is invalid (sysexits' EX_CONFIG); the unit file tells systemd
/// not to restart-loop on it.
const EXIT_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let path = cli.config_path();
    match cli.command {
        Command::Check { json_schema: true, .. } => {
            out(config::JSON_SCHEMA);
            ExitCode::SUCCESS
        }
        Command::Check { verbose, quiet, .. } => check(&path, verbose, quiet),
        Command::Status { url, offline, json } => status(cli.config, url, offline, json),
        Command::DeadLetter { command } => dead_letters(&path, command),
        Command::Notify { command: NotifyCommand::Test { name } } => notify_test(&path, &name),
        Command::History { device, since, json } => history(&path, device.as_deref(), since, json),
        Command::Run { log_level, log_format } => {
            if let Err(e) = logging::init(log_format, log_level.as_deref()) {
                eprintln!("willwatch: {e}");
                return ExitCode::from(2);
            }
            run(&path)
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
    let now = std::time::SystemTime::now();
    let mut printer = status::Printer::new(json, now);
    let fetched = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|rt| rt.block_on(status::fetch(&url, state, |page| out(&printer.page(page)))));
    match fetched {
        Ok(doc) => {
            out(printer.finish());
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

fn history(path: &std::path::Path, device: Option<&str>, since: std::time::Duration, json: bool) -> ExitCode {
    use willwatch::history::command;
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match command::report(&config.state_dir, device, since, std::time::SystemTime::now()) {
        Ok((devices, transitions)) if json => {
            out(&format!("{:#}\n", command::to_json(&devices, &transitions, since, None)));
            ExitCode::SUCCESS
        }
        Ok((devices, transitions)) => {
            out(&command::table(&devices, &transitions));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("willwatch: {e}");
            ExitCode::from(2)
        }
    }
}

fn notify_test(path: &std::path::Path, name: &str) -> ExitCode {
    use actions::test_message::{TestError, test};
    // The service's secrets must be readable to send.
    let config = match Config::load_runnable(path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let tried = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| TestError::Refused(e.to_string()))
        .and_then(|rt| rt.block_on(test(&config, name)));
    match tried {
        Ok(answer) => {
            out(&format!("{name}: accepted ({answer})\n"));
            ExitCode::SUCCESS
        }
        Err(TestError::Refused(answer)) => {
            eprintln!("{name}: not accepted: {answer}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("willwatch: {e}");
            ExitCode::from(2)
        }
    }
}

fn dead_letters(path: &std::path::Path, command: Option<DeadLetterCommand>) -> ExitCode {
    use actions::replay::{Outcome, replay};
    use dead_letter::command as dl;
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
                .and_then(|rt| rt.block_on(replay(&config, &filter.into())).map_err(|e| e.to_string()));
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
        Err(DaemonError::Twin(twin)) => {
            tracing::error!(instance = %twin.instance, host = %twin.host, clash = true, "not starting: {twin}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(DaemonError::StateInUse(e)) => {
            tracing::error!(file = %e.file.display(), clash = true, "not starting: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
