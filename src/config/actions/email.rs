//! `type = "email"`: a mail through an SMTP server
//! (`actions/notify/email.rs` writes it, `actions/webhook/smtp.rs` sends
//! it). `smtp = "smtp://host:587"` upgrades with STARTTLS when the server
//! offers it, and insists on it when there is a login (a password never
//! travels in clear); `smtps://host:465` is TLS from the first byte.
//! `username` with `password_file` (a file or `credential:NAME`); `from`,
//! `to` (one address or several); `subject` (a service's `title`) and
//! `body` templates for one event's mail; `ca_file` to trust a private CA instead of the system's.
//! At most one mail every `min_interval` (10 s), what arrives meanwhile
//! sent as one digest.

use lettre::message::Mailbox;
use serde::Deserialize;
use toml::Spanned;

use super::super::error::Problem;
use super::super::raw::RawDuration;
use super::super::tls::{TlsFile, read_certs};
use super::super::validate::Validator;
use super::super::{Email, Service, Webhook};
use super::shared;

/// The most recipients one action mails.
const MAX_TO: usize = 50;

/// `to` as people write it: one address, or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum To {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEmail {
    smtp: Option<Spanned<String>>,
    username: Option<Spanned<String>>,
    password_file: Option<Spanned<String>>,
    from: Option<Spanned<String>>,
    to: Option<Spanned<To>>,
    /// One event's subject: the title every service takes, by its mail name.
    #[serde(rename = "subject")]
    title: Option<Spanned<String>>,
    body: Option<Spanned<String>>,
    ca_file: Option<Spanned<String>>,
    min_interval: Option<RawDuration>,
    timeout: Option<RawDuration>,
    max_age: Option<RawDuration>,
    max_interval: Option<RawDuration>,
    max_attempts: Option<Spanned<i64>>,
}

impl Validator<'_> {
    pub(super) fn email(&mut self, a: RawEmail, span: std::ops::Range<usize>) -> Option<Webhook> {
        let url = match &a.smtp {
            Some(raw) => self.smtp_url(raw),
            None => {
                self.problem(
                    Problem::new(span.clone(), "an email action needs its `smtp` server")
                        .hint("e.g. smtp = \"smtp://mail.example.com:587\""),
                );
                None
            }
        };
        let from = match &a.from {
            Some(raw) => self.mailbox(raw, "from"),
            None => {
                self.problem(
                    Problem::new(span.clone(), "an email action needs a `from` address")
                        .hint("e.g. from = \"willwatch <willwatch@plant.example>\""),
                );
                None
            }
        };
        let to = self.recipients(&a.to, span.clone());
        let login = match (&a.username, &a.password_file) {
            (None, None) => Some(None),
            (Some(user), _) if user.get_ref().is_empty() => {
                self.problem(Problem::new(user.span(), "`username` is empty"));
                None
            }
            (Some(user), Some(file)) => {
                self.secret_in(file, "password_file").map(|p| Some((user.get_ref().clone(), p)))
            }
            (Some(user), None) => {
                self.problem(
                    Problem::new(user.span(), "`username` without a `password_file`")
                        .hint("password_file = \"credential:smtp-password\" (or a file only willwatch reads)"),
                );
                None
            }
            (None, Some(file)) => {
                self.problem(Problem::new(file.span(), "`password_file` without a `username`"));
                None
            }
        };
        let ca = match &a.ca_file {
            None => Some(None),
            Some(file) => self.email_ca(file).map(Some),
        };
        let implicit_tls = url.as_ref().is_some_and(|u: &url::Url| u.scheme() == "smtps");
        let email = match (from, to, login, ca) {
            (Some(from), Some(to), Some(login), Some(ca)) => {
                Some(Service::Email(Box::new(Email { from, to, login, implicit_tls, ca })))
            }
            _ => None,
        };
        let mut common = shared!(a, "email");
        common.title_key = "subject";
        self.service(url, email, &common)
    }

    /// `smtp://host[:port]` or `smtps://host[:port]`, nothing else in it.
    fn smtp_url(&mut self, raw: &Spanned<String>) -> Option<url::Url> {
        let shown = crate::redact::url(raw.get_ref());
        let problem = match url::Url::parse(raw.get_ref().trim()) {
            Ok(u) if !matches!(u.scheme(), "smtp" | "smtps") || u.host_str().is_none_or(str::is_empty) => {
                Problem::new(raw.span(), format!("`smtp` `{shown}` is not an smtp:// or smtps:// server"))
                    .hint("smtp://host:587 (STARTTLS) or smtps://host:465 (TLS)")
            }
            Ok(u) if !u.username().is_empty() || u.password().is_some() => {
                Problem::new(raw.span(), format!("`smtp` `{shown}` holds a login"))
                    .hint("give it as `username` and `password_file`")
            }
            Ok(u) if (u.path() != "" && u.path() != "/") || u.query().is_some() || u.fragment().is_some() => {
                Problem::new(raw.span(), format!("`smtp` `{shown}` has more than a server and a port"))
            }
            Ok(u) if u.port() == Some(0) => Problem::new(raw.span(), "`smtp`: port 0 is no server's port"),
            Ok(u) => return Some(u),
            Err(e) => Problem::new(raw.span(), format!("`smtp` `{shown}` is not a URL: {e}"))
                .hint("smtp://host:587 (STARTTLS) or smtps://host:465 (TLS)"),
        };
        self.problem(problem);
        None
    }

    fn mailbox(&mut self, raw: &Spanned<String>, key: &str) -> Option<Mailbox> {
        match raw.get_ref().trim().parse::<Mailbox>() {
            Ok(mailbox) => Some(mailbox),
            Err(e) => {
                self.problem(
                    Problem::new(raw.span(), format!("`{key}` `{}` is not a mail address: {e}", raw.get_ref()))
                        .hint("write ops@example.com or \"Plant ops <ops@example.com>\""),
                );
                None
            }
        }
    }

    fn recipients(&mut self, raw: &Option<Spanned<To>>, span: std::ops::Range<usize>) -> Option<Vec<Mailbox>> {
        let Some(to) = raw else {
            self.problem(
                Problem::new(span, "an email action needs `to`: who is mailed").hint("to = [\"ops@example.com\"]"),
            );
            return None;
        };
        let addresses: Vec<&String> = match to.get_ref() {
            To::One(one) => vec![one],
            To::Many(many) => many.iter().collect(),
        };
        if addresses.is_empty() || addresses.len() > MAX_TO {
            self.problem(Problem::new(to.span(), format!("`to` must name from 1 to {MAX_TO} addresses")));
            return None;
        }
        let mut out = Vec::new();
        for address in addresses {
            out.push(self.mailbox(&Spanned::new(to.span(), address.clone()), "to"));
        }
        out.into_iter().collect()
    }

    /// The certificates of `ca_file`, each as DER.
    pub(super) fn email_ca(&mut self, file: &Spanned<String>) -> Option<Vec<Vec<u8>>> {
        let path = match self.file_path(file, "ca_file") {
            Ok(Some(path)) => path,
            Ok(None) => return Some(Vec::new()),
            Err(()) => return None,
        };
        match read_certs(self.outside, &path, TlsFile::Ca, "ca_file") {
            Ok(certs) => Some(certs.into_iter().map(|c| c.to_vec()).collect()),
            Err(e) => {
                self.problem(Problem::new(file.span(), e.to_string()));
                None
            }
        }
    }
}
