//! `[http]`: the endpoint's address, its users file and the external URL
//! alerts link to.

use std::path::Path;
use std::sync::Arc;

use toml::Spanned;

use super::Validator;
use crate::config::error::Problem;

impl Validator<'_> {
    /// `[http] external_url`: where receivers of alerts reach `/status`.
    pub(in crate::config) fn external_url(&mut self, raw: Option<Spanned<String>>) -> Option<url::Url> {
        let raw = raw?;
        match url::Url::parse(raw.get_ref()) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && (!u.username().is_empty() || u.password().is_some()) => {
                self.problem(
                    Problem::new(
                        raw.span(),
                        format!(
                            "`external_url` `{}` carries credentials: every alert links to it, so every receiver would get them",
                            crate::redact::url(raw.get_ref())
                        ),
                    )
                    .hint("leave the user and password out; people log in when they open the link"),
                );
                None
            }
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Some(u),
            _ => {
                self.problem(
                    Problem::new(
                        raw.span(),
                        format!("`external_url` `{}` is not an http(s) URL", crate::redact::url(raw.get_ref())),
                    )
                    .hint("the address people and receivers use, e.g. https://gateway.example.com:9818"),
                );
                None
            }
        }
    }

    /// `[http] users_file`, read and checked now; a listen address others
    /// can reach without one is worth a warning.
    pub(in crate::config) fn users(
        &mut self,
        raw: Option<Spanned<String>>,
        listen: Option<std::net::SocketAddr>,
        listen_span: std::ops::Range<usize>,
    ) -> Option<Arc<crate::config::Users>> {
        let Some(raw) = raw else {
            if listen.is_some_and(|a| !a.ip().is_loopback()) {
                self.warning(
                    Problem::new(listen_span, "the HTTP endpoint listens beyond this machine without `users_file`: anyone who reaches it reads your fleet")
                        .hint("add users_file = \"users\" with user:bcrypt-hash lines (htpasswd -nB NAME), or listen on 127.0.0.1"),
                );
            }
            return None;
        };
        let path = self.file_path(&raw, "users_file").ok()??;
        self.private(&path, raw.span());
        let text = match self.outside.read(&path, crate::config::file::MAX_CONFIG) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) => {
                self.problem(Problem::new(raw.span(), format!("`users_file` {}: {e}", path.display())));
                return None;
            }
        };
        match crate::config::Users::parse(&text) {
            Ok(users) => {
                if let Some((low, high)) = users.mixed_costs() {
                    self.warning(
                        Problem::new(raw.span(), format!("`users_file` {}: its hashes have different bcrypt costs ({low} to {high}): how long a refused login takes tells which users exist", path.display()))
                            .hint("make every hash at one cost: htpasswd -nB -C 12 NAME"),
                    );
                }
                Some(Arc::new(users))
            }
            Err(e) => {
                self.problem(Problem::new(raw.span(), format!("`users_file` {}: {e}", path.display())));
                None
            }
        }
    }

    /// A users file others can read gives them its hashes to attack
    /// offline: worth a warning.
    pub(in crate::config) fn private(&mut self, path: &Path, span: std::ops::Range<usize>) {
        let Ok((_, mode)) = self.outside.mode(path) else { return };
        if mode & 0o044 != 0 {
            self.warning(
                Problem::new(
                    span,
                    format!(
                        "`users_file` {} can be read by other users than its owner (mode {:o}): its hashes can be attacked offline",
                        path.display(),
                        mode & 0o777
                    ),
                )
                .hint("chmod 600 it, owned by the user willwatch runs as; or pass it as a systemd credential: users_file = \"credential:users\""),
            );
        }
    }

    pub(in crate::config) fn http_listen(&mut self, raw: Option<Spanned<String>>) -> Option<std::net::SocketAddr> {
        let (text, span) = match &raw {
            Some(l) => (l.get_ref().as_str(), l.span()),
            None => (crate::config::DEFAULT_HTTP_LISTEN, 0..0),
        };
        if text.is_empty() {
            return None;
        }
        match text.parse::<std::net::SocketAddr>() {
            Ok(addr) if addr.port() == 0 => {
                self.problem(
                    Problem::new(span, format!("`listen` `{text}` has port 0: the system would pick one, which nobody (nor `willwatch status`) could know"))
                        .hint("choose the port, e.g. \"127.0.0.1:9818\"; \"\" turns the endpoint off"),
                );
                None
            }
            Ok(addr) => Some(addr),
            Err(_) => {
                self.problem(
                    Problem::new(span, format!("`listen` `{text}` is not an address")).hint(
                        "write host:port with an IP address, e.g. \"127.0.0.1:9818\" or \"[::1]:9818\"; \"\" turns the endpoint off",
                    ),
                );
                None
            }
        }
    }
}
