//! Raw TOML → `Config`: every rule of the schema, each broken one reported
//! with the span of the value that breaks it. This file puts the sections
//! together and holds what they share (problems, warnings, the files a
//! setting names); each section's rules are in `validate/` (`broker`,
//! `presence`, `devices`, `sparkplug`, `cluster`, `http`; the actions in
//! `config/actions/`). What it reads of the machine comes through
//! `Outside`.

use std::path::{Path, PathBuf};

use toml::Spanned;

use super::error::Problem;
use super::outside::Outside;
use super::preset::Preset;
use super::raw::{RawDefaults, RawFile};
use super::{Config, Watch};

mod broker;
mod cluster;
mod devices;
mod history;
mod http;
mod presence;
mod sparkplug;
#[cfg(test)]
mod tests;

pub(super) fn validate(path: &Path, text: &str, outside: &dyn Outside) -> Result<Config, Vec<Problem>> {
    let RawFile { config: raw, actions: raw_actions } = RawFile::parse(text).map_err(|p| vec![p])?;
    let mut v = Validator {
        base: path.parent().unwrap_or(Path::new(".")).to_path_buf(),
        text,
        outside,
        problems: Vec::new(),
        warnings: Vec::new(),
        unread_credentials: Vec::new(),
        default_preset: None,
    };
    let actions = v.actions(raw_actions);
    let cluster = v.cluster(raw.cluster);
    let broker = v.broker(raw.broker, &actions, cluster.as_ref().and_then(Option::as_ref));
    let presence = match &cluster {
        Some(Some(c)) => v.cluster_presence(raw.presence, c),
        Some(None) => None,
        None => v.presence(raw.presence, broker.as_ref().map(|b| b.client_id.as_str())),
    };
    let (defaults_span, raw_defaults) = match raw.defaults {
        Some(d) => (d.span(), d.into_inner()),
        None => (0..0, RawDefaults::default()),
    };
    let defaults = v.defaults(raw_defaults, defaults_span, &actions);
    let mut devices = v.devices(raw.device, &defaults, &actions);
    devices.extend(v.sparkplug(raw.sparkplug, &defaults, &actions));
    let state_dir = v.state_dir(raw.state_dir);
    let max_devices = v.max_devices(raw.max_devices.as_ref()).unwrap_or(super::DEFAULT_MAX_DEVICES);
    let state_sync = v.state_sync(raw.state_sync);
    let (listen, external_url, users_file) =
        raw.http.map_or((None, None, None), |h| (h.listen, h.external_url, h.users_file));
    let listen_span = listen.as_ref().map_or(0..0, Spanned::span);
    let http_listen = v.http_listen(listen);
    let http_users = v.users(users_file, http_listen, listen_span);
    let external_url = v.external_url(external_url);
    let (history_keep, history_max_size) = v.history(raw.history);
    let warnings = v
        .warnings
        .iter()
        .map(|w| {
            let (line, col) = super::error::line_col(text, w.span.start);
            let hint = w.hint.as_ref().map(|h| format!("\n  hint: {h}")).unwrap_or_default();
            format!("{}:{line}:{col}: warning: {}{hint}", path.display(), w.message)
        })
        .collect();
    match (broker, presence) {
        (Some(mut broker), Some(presence)) if v.problems.is_empty() => {
            // Sparkplug 3.0: a host application connects with a clean
            // session and recovers by rebirth requests, which it sends.
            broker.persistent_session &= !presence.sparkplug_host;
            let exact = devices
                .iter()
                .enumerate()
                .filter_map(|(i, d)| match &d.watch {
                    Watch::Device { topic, .. } => Some((topic.clone(), i)),
                    Watch::Pattern(_) | Watch::Sparkplug(_) => None,
                })
                .collect();
            let mut actions = actions;
            for spec in actions.values_mut() {
                if let super::ActionKind::Webhook(w) = &mut spec.kind {
                    w.external_url.clone_from(&external_url);
                }
            }
            Ok(Config {
                source: path.to_path_buf(),
                broker,
                presence,
                devices,
                actions,
                state_dir,
                max_devices,
                state_sync,
                http_listen,
                http_users,
                warnings,
                history_keep,
                history_max_size,
                unread_credentials: v.unread_credentials,
                cluster: cluster.flatten(),
                exact,
            })
        }
        _ => Err(v.problems),
    }
}

pub(super) struct Validator<'t> {
    text: &'t str,
    /// Files, the environment, the host.
    pub(super) outside: &'t dyn Outside,
    /// Relative file paths in the config are relative to the config's folder.
    pub(super) base: PathBuf,
    problems: Vec<Problem>,
    warnings: Vec<Problem>,
    /// Credentials named by the config that cannot be read here.
    unread_credentials: Vec<String>,
    /// `[defaults] preset`: gives devices without a topic theirs.
    default_preset: Option<&'static Preset>,
}

/// How a `*_file` setting names a systemd credential.
pub const CREDENTIAL_PREFIX: &str = "credential:";

impl Validator<'_> {
    pub(super) fn problem(&mut self, problem: Problem) {
        self.problems.push(problem);
    }

    /// The file a `*_file` setting names: a path (relative to the config's
    /// folder), or `credential:NAME`, read from `$CREDENTIALS_DIRECTORY`
    /// (systemd's `LoadCredential=`). `Ok(None)` (with a warning) when
    /// that is a credential and this process has no credentials directory:
    /// only the service can read it, so it is not checked here. `Err` when
    /// the name is not one (a problem is recorded).
    pub(super) fn file_path(&mut self, file: &Spanned<String>, key: &str) -> Result<Option<PathBuf>, ()> {
        let Some(name) = file.get_ref().strip_prefix(CREDENTIAL_PREFIX) else {
            return Ok(Some(self.base.join(file.get_ref())));
        };
        if name.is_empty() || name.contains('/') {
            self.problem(
                Problem::new(file.span(), format!("`{key}`: `{}` is not a credential name", file.get_ref()))
                    .hint("write credential:NAME, with the NAME of a LoadCredential= line of the unit"),
            );
            return Err(());
        }
        match self.outside.var("CREDENTIALS_DIRECTORY").filter(|dir| !dir.is_empty()) {
            Some(dir) => Ok(Some(PathBuf::from(dir).join(name))),
            None => {
                self.warning(Problem::new(
                    file.span(),
                    format!(
                        "`{key}` is credential `{name}`, which only the service can read ($CREDENTIALS_DIRECTORY is not set here): not checked"
                    ),
                ));
                self.unread_credentials.push(name.to_string());
                Ok(None)
            }
        }
    }

    pub(super) fn warning(&mut self, problem: Problem) {
        self.warnings.push(problem);
    }

    fn state_sync(&mut self, raw: Option<Spanned<String>>) -> super::StateSync {
        match raw.as_ref().map(|r| r.get_ref().as_str()) {
            None | Some("full") => super::StateSync::Full,
            Some("normal") => super::StateSync::Normal,
            Some(other) => {
                let span = raw.as_ref().map(Spanned::span).unwrap_or(0..0);
                self.problem(Problem::new(span, format!("`state_sync` `{other}`: use \"full\" or \"normal\"")));
                super::StateSync::Full
            }
        }
    }

    /// `state_dir`, else systemd's `$STATE_DIRECTORY`, else /var/lib/willwatch.
    fn state_dir(&mut self, raw: Option<Spanned<String>>) -> PathBuf {
        match raw {
            Some(dir) if dir.get_ref().is_empty() => {
                self.problem(Problem::new(dir.span(), "`state_dir` is empty"));
                PathBuf::new()
            }
            Some(dir) => self.base.join(dir.get_ref()),
            None => self
                .outside
                .var("STATE_DIRECTORY")
                // systemd may pass several, separated by colons; ours is the
                // first. A path need not be UTF-8.
                .and_then(|v| {
                    use std::os::unix::ffi::OsStrExt;
                    let first = v.as_bytes().split(|b| *b == b':').find(|d| !d.is_empty())?;
                    Some(PathBuf::from(std::ffi::OsStr::from_bytes(first)))
                })
                .unwrap_or_else(|| PathBuf::from("/var/lib/willwatch")),
        }
    }

    fn first_at(&self, offset: usize) -> String {
        let (line, col) = super::error::line_col(self.text, offset);
        format!("first used at line {line}, column {col}")
    }
}
