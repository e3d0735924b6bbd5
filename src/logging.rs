//! Log output: human lines on a terminal, the journal's native protocol
//! under systemd, JSON for machines.
//!
//! Under systemd (stderr is the journal stream), entries go through the
//! journal socket with every field as a journal field (`DEVICE=`, `EVENT=`,
//! `TOPIC=`, `MESSAGE_ID=`...), so `journalctl -u willwatch DEVICE=pump-7`
//! shows one device's history. Without the socket they go to stderr with a
//! `<N>` priority prefix and no timestamp (the journal stamps its own), so
//! `journalctl -p warning` still works.
//!
//! Lines are one line each whatever a device sends: in `text` and `journal`
//! output every control character in a value (a newline that would forge a
//! second line, ESC, NUL) is written escaped (`\n`, `\u{1b}`). Nor can a
//! value pass for more fields (a device id `pump-7 event="online"`): a
//! string field, and any value that is empty or has a space, a quote, a
//! backslash, `=` or a control character, is written in double quotes,
//! its `"` and `\` escaped, so `key=value` splits the line as it was
//! logged. JSON and journald fields carry values exactly, as those formats
//! delimit them.

use std::fmt;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::{MakeVisitor, VisitFmt, VisitOutput};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `journald` when stderr is the journal (`journal` if its socket is
    /// missing), else `text`.
    Auto,
    /// The journal's native protocol, with structured fields.
    Journald,
    /// Timestamped lines for a terminal.
    Text,
    /// `<N>`-prefixed lines without timestamps, for journald.
    Journal,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber. `level` (a `RUST_LOG`-style filter)
/// wins over `RUST_LOG`; the default is `info`.
pub fn init(format: Format, level: Option<&str>) -> Result<(), String> {
    let filter = match level {
        Some(level) => EnvFilter::try_new(level).map_err(|e| format!("bad --log-level `{level}`: {e}"))?,
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let format = match format {
        Format::Auto if stderr_is_journal() => Format::Journald,
        Format::Auto => Format::Text,
        other => other,
    };
    if format == Format::Journald {
        match tracing_journald::layer() {
            Ok(journald) => {
                use tracing_subscriber::layer::SubscriberExt;
                use tracing_subscriber::util::SubscriberInitExt;
                let journald = journald.with_field_prefix(None).with_syslog_identifier("willwatch".into());
                return tracing_subscriber::registry()
                    .with(filter)
                    .with(journald)
                    .try_init()
                    .map_err(|e| e.to_string());
            }
            Err(e) => eprintln!("<4>willwatch: no journal socket ({e}); logging to stderr"),
        }
    }
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false);
    let result = match format {
        Format::Json => builder.json().flatten_event(true).try_init(),
        Format::Journal | Format::Journald => builder
            .with_ansi(false)
            .fmt_fields(escaped_fields(&[]))
            .event_format(Journal(tracing_subscriber::fmt::format().without_time().with_target(false).with_ansi(false)))
            .try_init(),
        Format::Text | Format::Auto => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .fmt_fields(escaped_fields(FOR_MACHINES))
            .try_init(),
    };
    result.map_err(|e| e.to_string())
}

/// Fields for programs, not for a person reading the text log: ids to
/// correlate, the journal's message ids, `what` a line is (a stable name
/// that programs and tests match instead of the sentence). JSON and the
/// journal keep them.
const FOR_MACHINES: &[&str] = &["event_id", "webhook_id", "message_id", "what"];

/// `message field=value …` with every control character escaped, so a
/// value cannot end the line or drive the terminal, and values quoted
/// where they could pass for more fields; `hidden` fields left out.
fn escaped_fields(hidden: &'static [&'static str]) -> impl for<'w> FormatFields<'w> {
    EscapedFields { hidden }
}

struct EscapedFields {
    hidden: &'static [&'static str],
}

impl<'w> MakeVisitor<Writer<'w>> for EscapedFields {
    type Visitor = FieldWriter<'w>;

    fn make_visitor(&self, writer: Writer<'w>) -> FieldWriter<'w> {
        FieldWriter { writer, hidden: self.hidden, result: Ok(()) }
    }
}

/// Writes one event's fields; strings are told from other values, which
/// `Debug` alone cannot do.
struct FieldWriter<'w> {
    writer: Writer<'w>,
    hidden: &'static [&'static str],
    result: fmt::Result,
}

impl FieldWriter<'_> {
    fn write(&mut self, field: &Field, text: &str, string: bool) {
        if self.result.is_err() || self.hidden.contains(&field.name()) {
            return;
        }
        // Each field writes its own separator: one left out leaves no gap.
        self.result = if field.name() == "message" {
            write!(self.writer, "{}", escape(text))
        } else if string {
            write!(self.writer, " {field}={}", quoted(text))
        } else {
            write!(self.writer, " {field}={}", value(text))
        };
    }
}

impl Visit for FieldWriter<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.write(field, value, true);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.write(field, &format!("{value:?}"), false);
    }
}

impl VisitOutput<fmt::Result> for FieldWriter<'_> {
    fn finish(self) -> fmt::Result {
        self.result
    }
}

impl VisitFmt for FieldWriter<'_> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        &mut self.writer
    }
}

/// A field's value as a text line shows it: as it is when it is one plain
/// word, else `quoted`.
fn value(text: &str) -> std::borrow::Cow<'_, str> {
    let plain =
        !text.is_empty() && !text.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '\\' | '='));
    if plain { std::borrow::Cow::Borrowed(text) } else { std::borrow::Cow::Owned(quoted(text)) }
}

/// `text` in double quotes, its `"` and `\` escaped and its control
/// characters written as Rust escapes.
fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.extend(c.escape_default()),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `text` with control characters written as Rust escapes.
pub fn escape(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// systemd sets `JOURNAL_STREAM=DEV:INODE` to the stream it connected to
/// stderr; it is ours only if stderr is still that very stream.
fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    let Ok(meta) = std::fs::File::from(fd).metadata() else {
        return false;
    };
    dev.parse() == Ok(meta.dev()) && ino.parse() == Ok(meta.ino())
}

/// Prefixes each line with its syslog priority.
struct Journal<F>(F);

impl<S, N, F> FormatEvent<S, N> for Journal<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        write!(writer, "<{}>", priority(*event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

/// syslog(3) priorities: err, warning, info, debug.
fn priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_is_kept() {
        assert_eq!(escape("junk\n<3>device offline"), "junk\\n<3>device offline");
        assert_eq!(escape("\u{1b}[31mred\0"), "\\u{1b}[31mred\\u{0}");
        assert_eq!(escape("plain ünïcode"), "plain ünïcode");
    }

    #[test]
    fn values_that_could_pass_for_more_fields_are_quoted() {
        assert_eq!(value("pump-7"), "pump-7");
        assert_eq!(value("plant/pump-7/status"), "plant/pump-7/status");
        assert_eq!(value("ünïcode"), "ünïcode");
        assert_eq!(value(r#"pump-7 event="online" device=pump-7"#), r#""pump-7 event=\"online\" device=pump-7""#);
        assert_eq!(value(""), r#""""#);
        assert_eq!(value("a=b"), r#""a=b""#);
        assert_eq!(value(r"C:\x"), r#""C:\\x""#);
        assert_eq!(value("tab\there"), r#""tab\there""#);
        assert_eq!(value("x\n<3>y"), r#""x\n<3>y""#);
        assert_eq!(quoted("offline"), r#""offline""#, "a string field is quoted as it always was");
    }
}
