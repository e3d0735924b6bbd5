//! A real SMTP server for the email tests: aiosmtpd (`tests/data/smtp_server.py`),
//! with STARTTLS (or TLS from the first byte), AUTH, a certificate from a
//! CA the test makes, and every mail it takes read back with `mailparse`.
//! `None` (after saying so) when aiosmtpd is not installed;
//! `WILLWATCH_TEST_REQUIRE_AIOSMTPD=1` (set by CI) makes that a failure.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use super::broker::free_port;
use super::pki::make_pki;

/// Who the server lets in.
pub const USER: &str = "alerts";
pub const PASSWORD: &str = "SMTPSECRET-pw";

#[derive(Default)]
pub struct MailOptions {
    /// TLS from the first byte (`smtps://`) rather than STARTTLS.
    pub implicit: bool,
    /// Answer the first `fail` mails with `code` instead of taking them.
    pub fail: u32,
    pub code: Option<&'static str>,
}

pub struct MailServer {
    pub port: u16,
    /// The CA that signed the server's certificate.
    pub ca: PathBuf,
    out: PathBuf,
    child: Child,
    _dir: TempDir,
}

/// One mail the server took.
#[derive(Debug, Clone)]
pub struct Mail {
    pub mail_from: String,
    pub rcpt_tos: Vec<String>,
    pub tls: bool,
    pub user: Option<String>,
    pub data: String,
}

impl Mail {
    /// A header's value, decoded (`None` when it is not there).
    pub fn header(&self, name: &str) -> Option<String> {
        use mailparse::MailHeaderMap;
        mailparse::parse_mail(self.data.as_bytes()).expect("a mail").headers.get_first_value(name)
    }

    /// The text of each part of the body, by content type.
    pub fn parts(&self) -> Vec<(String, String)> {
        let mail = mailparse::parse_mail(self.data.as_bytes()).expect("a mail");
        let leaves: Vec<&mailparse::ParsedMail> =
            if mail.subparts.is_empty() { vec![&mail] } else { mail.subparts.iter().collect() };
        leaves.into_iter().map(|p| (p.ctype.mimetype.clone(), p.get_body().expect("a readable part"))).collect()
    }

    /// The part of `mimetype`.
    pub fn part(&self, mimetype: &str) -> Option<String> {
        self.parts().into_iter().find(|(t, _)| t == mimetype).map(|(_, body)| body)
    }
}

impl MailServer {
    pub fn start(options: MailOptions) -> Option<MailServer> {
        if !super::python_module("aiosmtpd", "WILLWATCH_TEST_REQUIRE_AIOSMTPD", "aiosmtpd") {
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let pki = make_pki(dir.path(), "smtp");
        let out = dir.path().join("mails.jsonl");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/smtp_server.py");
        for _ in 0..5 {
            let port = free_port();
            let mut command = Command::new("python3");
            command.arg(script).arg("--port").arg(port.to_string());
            command.arg("--cert").arg(&pki.server.cert).arg("--key").arg(&pki.server.key);
            command.args(["--user", USER, "--password", PASSWORD]).arg("--out").arg(&out);
            command.args(["--fail", &options.fail.to_string()]);
            if let Some(code) = options.code {
                command.args(["--code", code]);
            }
            if options.implicit {
                command.arg("--implicit");
            }
            let mut child = command.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("python3");
            let stdout = child.stdout.take().expect("stdout");
            let (ready, said) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let mut line = String::new();
                let _ = BufReader::new(stdout).read_line(&mut line);
                let _ = ready.send(line);
            });
            match said.recv_timeout(Duration::from_secs(20)) {
                Ok(line) if line.trim() == "ready" => {
                    return Some(MailServer { port, ca: pki.ca.clone(), out, child, _dir: dir });
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
        panic!("the SMTP server did not start");
    }

    /// The mails taken so far.
    pub fn mails(&self) -> Vec<Mail> {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        text.lines()
            .map(|line| {
                let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
                Mail {
                    mail_from: v["mail_from"].as_str().unwrap_or_default().to_string(),
                    rcpt_tos: v["rcpt_tos"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|r| r.as_str())
                        .map(String::from)
                        .collect(),
                    tls: v["tls"].as_bool().unwrap_or(false),
                    user: v["user"].as_str().map(String::from),
                    data: v["data"].as_str().unwrap_or_default().to_string(),
                }
            })
            .collect()
    }

    /// Waits until at least `n` mails were taken; all of them.
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Mail> {
        super::eventually(&format!("{n} mails"), within, || {
            let mails = self.mails();
            (mails.len() >= n).then_some(mails)
        })
        .await
    }
}

impl Drop for MailServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
