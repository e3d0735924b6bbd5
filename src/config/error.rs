//! What goes wrong with a config file, said so a person can fix it:
//! `PATH:LINE:COL: message`, and a hint where one helps.
//!
//! Problems are collected, not returned at the first one, so `willwatch
//! check` shows everything wrong with a file in one run.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

/// One problem at one place in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Byte range in the file; mapped to line and column when shown.
    pub span: Range<usize>,
    pub message: String,
    pub hint: Option<String>,
}

impl Problem {
    /// A problem saying `message`, which may quote what the file says: its
    /// control characters are escaped (a line break would forge another
    /// problem) and the secrets of any URL in it hidden (`crate::redact`).
    pub fn new(span: Range<usize>, message: impl Into<String>) -> Problem {
        Problem { span, message: shown(&message.into()), hint: None }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Problem {
        self.hint = Some(shown(&hint.into()));
        self
    }
}

/// Text from the file as a problem may show it.
fn shown(text: &str) -> String {
    crate::redact::urls_in(&crate::logging::escape(text)).into_owned()
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read the config file: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}", render(path, text, problems))]
    Invalid { path: PathBuf, text: String, problems: Vec<Problem> },
    #[error(
        "{}: cannot read credential(s) {}: $CREDENTIALS_DIRECTORY is not set (run under systemd with LoadCredential= lines for them, or set it to a folder holding them)",
        path.display(),
        names.join(", ")
    )]
    Credentials { path: PathBuf, names: Vec<String> },
}

impl ConfigError {
    /// The problems with their 1-based line and column.
    #[cfg(test)]
    pub fn locations(&self) -> Vec<(usize, usize, String)> {
        match self {
            ConfigError::Read { .. } | ConfigError::Credentials { .. } => Vec::new(),
            ConfigError::Invalid { text, problems, .. } => problems
                .iter()
                .map(|p| {
                    let (line, col) = line_col(text, p.span.start);
                    (line, col, p.message.clone())
                })
                .collect(),
        }
    }
}

/// The most problems shown: past that, how many more (a file of thousands
/// of mistakes is not read problem by problem).
const SHOWN: usize = 100;

fn render(path: &std::path::Path, text: &str, problems: &[Problem]) -> String {
    let mut lines: Vec<String> =
        problems.iter().take(SHOWN).map(|p| Located { path, text, problem: p }.to_string()).collect();
    if problems.len() > SHOWN {
        lines.push(format!("{}: … and {} more problems", path.display(), problems.len() - SHOWN));
    }
    lines.join("\n")
}

struct Located<'a> {
    path: &'a std::path::Path,
    text: &'a str,
    problem: &'a Problem,
}

impl fmt::Display for Located<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (line, col) = line_col(self.text, self.problem.span.start);
        write!(f, "{}:{line}:{col}: {}", self.path.display(), self.problem.message)?;
        if let Some(hint) = &self.problem.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

/// The closest of `known` to `wrong`, if it is close enough to be a typo.
pub fn did_you_mean<'a>(wrong: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    known
        .into_iter()
        .map(|k| (edit_distance(wrong, k), k))
        // Close, but not a different word altogether ("id" is no typo of "on").
        .filter(|(d, k)| *d <= 2.max(k.len() / 4) && *d < k.len().min(wrong.chars().count()))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_map_to_one_based_line_and_column() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 6), (2, 1));
        assert_eq!(line_col(text, 9), (2, 3));
    }

    #[test]
    fn typos_get_a_suggestion_and_strangers_do_not() {
        assert_eq!(did_you_mean("lgo", ["log", "ops"]), Some("log"));
        assert_eq!(did_you_mean("pager", ["log", "ops"]), None);
    }

    #[test]
    fn rendered_problem_names_file_line_column_and_hint() {
        let err = ConfigError::Invalid {
            path: "w.toml".into(),
            text: "x\ny = 1\n".into(),
            problems: vec![Problem::new(2..3, "bad y").hint("use z")],
        };
        assert_eq!(err.to_string(), "w.toml:2:1: bad y\n  hint: use z");
    }
}
