//! Email's road: the SMTP transport of an email action (STARTTLS, or TLS
//! from the first byte, its connections pooled) and what the server's
//! answer means for the delivery: a 5xx is refused for good (given up and
//! dead-lettered), a 4xx, a timeout or a broken connection is tried again.

use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::retry::Verdict;
use crate::config::Email;

pub type Mailer = AsyncSmtpTransport<Tokio1Executor>;

/// The ports people mean when they name none: submission with STARTTLS,
/// and submissions (TLS).
const SUBMISSION: u16 = 587;
const SUBMISSIONS: u16 = 465;

/// The transport to `url` (`smtp://` or `smtps://`). With a login,
/// STARTTLS is required: a password never travels in clear.
pub fn mailer(url: &url::Url, email: &Email, timeout: std::time::Duration) -> Result<Mailer, String> {
    let host = url.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_string();
    let mut tls = TlsParameters::builder(host.clone());
    if let Some(ca) = &email.ca {
        tls = tls.certificate_store(CertificateStore::None);
        for der in ca {
            let cert = Certificate::from_der(der.clone()).map_err(|e| format!("`ca_file`: {e}"))?;
            tls = tls.add_root_certificate(cert);
        }
    }
    let tls = tls.build_rustls().map_err(|e| format!("TLS set-up failed: {e}"))?;
    let (port, tls) = match (email.implicit_tls, &email.login) {
        (true, _) => (SUBMISSIONS, Tls::Wrapper(tls)),
        (false, Some(_)) => (SUBMISSION, Tls::Required(tls)),
        (false, None) => (SUBMISSION, Tls::Opportunistic(tls)),
    };
    let mut builder = Mailer::builder_dangerous(host).port(url.port().unwrap_or(port)).tls(tls).timeout(Some(timeout));
    if let Some((user, password)) = &email.login {
        builder = builder.credentials(Credentials::new(user.clone(), password.expose().to_string()));
    }
    Ok(builder.build())
}

/// Sends `mail`: the verdict, and the server's answer in words.
pub async fn send(mailer: &Mailer, mail: &lettre::Message) -> (Verdict, String) {
    match mailer.send(mail.clone()).await {
        Ok(response) => {
            let words = response.message().collect::<Vec<_>>().join(" ");
            (Verdict::Delivered, format!("SMTP {} {words}", response.code()))
        }
        Err(e) => {
            let verdict = if e.is_permanent() { Verdict::GiveUp } else { Verdict::Retry };
            (verdict, super::error_chain(&e))
        }
    }
}
