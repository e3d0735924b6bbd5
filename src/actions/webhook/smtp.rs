//! Email's road: the SMTP transport of an email action (STARTTLS, or TLS
//! from the first byte, its connections pooled) and what the server's
//! answer means for the delivery: a 5xx, or what only the config can mend
//! (no STARTTLS where a login needs it, no login mechanism in common, an
//! address the server cannot take) is given up at once and dead-lettered;
//! a 4xx, a timeout or a broken connection is tried again. A whole
//! exchange is bounded by the action's `timeout`: a server that accepts
//! and then says nothing holds no delivery.

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

/// Sends `mail` within `timeout`: the verdict, and the server's answer in
/// words.
pub async fn send(mailer: &Mailer, mail: &lettre::Message, timeout: std::time::Duration) -> (Verdict, String) {
    match tokio::time::timeout(timeout, mailer.send(mail.clone())).await {
        Err(_) => {
            (Verdict::Retry, format!("the mail server did not finish within {}", humantime::format_duration(timeout)))
        }
        Ok(Ok(response)) => {
            let words = response.message().collect::<Vec<_>>().join(" ");
            (Verdict::Delivered, format!("SMTP {} {words}", response.code()))
        }
        // lettre's words already hold their causes.
        Ok(Err(e)) if e.is_permanent() || e.is_client() => (Verdict::GiveUp, e.to_string()),
        Ok(Err(e)) => (Verdict::Retry, e.to_string()),
    }
}
