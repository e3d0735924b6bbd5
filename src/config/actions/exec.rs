//! `type = "exec"`: a program run per event, without a shell
//! (`actions/exec.rs` runs it). Its settings: the command (program, then
//! templated arguments), timeout, concurrency and retries.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::super::Exec;
use super::super::error::Problem;
use super::super::raw::{RawDuration, SpannedList};
use super::super::validate::Validator;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawExec {
    command: Option<SpannedList>,
    timeout: Option<RawDuration>,
    concurrency: Option<Spanned<i64>>,
    max_age: Option<RawDuration>,
    max_interval: Option<RawDuration>,
    max_attempts: Option<Spanned<i64>>,
}

impl Validator<'_> {
    pub(super) fn exec(&mut self, a: RawExec, span: std::ops::Range<usize>) -> Option<Exec> {
        let timeout = self.duration(&a.timeout, Duration::from_secs(10), "timeout", Duration::from_millis(1));
        let concurrency = self.count(&a.concurrency, 4, 1, 256, "concurrency");
        let retries = self.retries(&a.max_age, &a.max_interval, &a.max_attempts);
        let Some(command) = a.command.as_ref().filter(|c| !c.get_ref().is_empty()) else {
            self.problem(
                Problem::new(a.command.as_ref().map_or(span, Spanned::span), "an exec action needs a `command`")
                    .hint("command = [\"/usr/local/bin/page-oncall\", \"{id}\", \"{event}\"]"),
            );
            return None;
        };
        let program = &command.get_ref()[0];
        if program.get_ref().trim().is_empty() {
            self.problem(
                Problem::new(program.span(), "the program of `command` is empty")
                    .hint("command = [\"/usr/local/bin/page-oncall\", \"{id}\", \"{event}\"]"),
            );
            return None;
        }
        if program.get_ref().contains('{') {
            self.problem(Problem::new(
                program.span(),
                "the program of `command` cannot have placeholders; pass them as arguments",
            ));
            return None;
        }
        let path = PathBuf::from(program.get_ref());
        if !path.is_absolute() {
            self.warning(Problem::new(
                program.span(),
                format!("`{}` is not an absolute path; it will be looked up in PATH when it runs", path.display()),
            ));
        } else {
            match self.outside.mode(&path) {
                Ok((true, mode)) if mode & 0o111 != 0 => {}
                Ok(_) => self
                    .warning(Problem::new(program.span(), format!("`{}` is not an executable file", path.display()))),
                Err(e) => self.warning(Problem::new(program.span(), format!("`{}`: {e}", path.display()))),
            }
        }
        let mut args = Vec::new();
        for arg in &command.get_ref()[1..] {
            args.push(self.template(arg, "command")?);
        }
        Some(Exec { program: path, args, timeout: timeout?, concurrency: concurrency? as usize, retries: retries? })
    }
}
