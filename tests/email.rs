//! Email, end to end against a real SMTP server (aiosmtpd, started by
//! each test): STARTTLS and TLS from the first byte, a login, the mails
//! read back (envelope, headers, threading, both bodies), a server that
//! defers and one that refuses, and `willwatch notify test`.

mod support;

use std::time::Duration;

use support::smtp::{MailOptions, MailServer, PASSWORD, USER};
use support::{Broker, Daemon, SENTINEL, SOON, config, publish, sync_with_sentinel};

const PUMP: &str = "[[device]]\nid = \"pump-7\"\ntopic = \"plant/pump-7/status\"\nactions = [\"mail\"]\n";

/// An email action to `server` (`smtp` or `smtps`), its password in a file
/// named `password`.
fn mail_action(server: &MailServer, scheme: &str, extra: &str) -> String {
    format!(
        "[action.mail]\ntype = \"email\"\nsmtp = \"{scheme}://127.0.0.1:{}\"\nusername = \"{USER}\"\npassword_file = \"password\"\n\
         from = \"willwatch <willwatch@plant.example>\"\nto = [\"ops@plant.example\", \"Night shift <night@plant.example>\"]\n\
         ca_file = \"{}\"\nmin_interval = \"0s\"\n{extra}",
        server.port,
        server.ca.display()
    )
}

fn start(broker: &Broker, server: &MailServer, scheme: &str, extra: &str, password: &str) -> Daemon {
    let text = config(broker, &format!("{}\n{PUMP}\n{SENTINEL}", mail_action(server, scheme, extra)));
    Daemon::start_with_files(&text, &[("password", password)])
}

#[tokio::test]
async fn an_outage_is_two_mails_in_one_conversation_over_starttls_with_a_login() {
    let Some(server) = MailServer::start(MailOptions::default()) else { return };
    let broker = Broker::start();
    let daemon = start(&broker, &server, "smtp", "", PASSWORD);
    daemon.wait_connected().await;
    sync_with_sentinel(&broker, &daemon, &[("plant/pump-7/status", "online")]).await;
    publish(broker.port, "plant/pump-7/status", "offline", false).await;
    server.wait_for(1, SOON).await;
    publish(broker.port, "plant/pump-7/status", "online", false).await;
    let mails = server.wait_for(2, SOON).await;
    let (off, on) = (&mails[0], &mails[1]);
    for mail in &mails {
        assert!(mail.tls, "sent after STARTTLS");
        assert_eq!(mail.user.as_deref(), Some(USER), "logged in");
        assert_eq!(mail.mail_from, "willwatch@plant.example");
        assert_eq!(mail.rcpt_tos, ["ops@plant.example", "night@plant.example"]);
        assert_eq!(mail.header("From").unwrap(), "willwatch <willwatch@plant.example>");
        let to = mail.header("To").unwrap();
        assert!(to.contains("Night shift") && to.contains("<night@plant.example>"), "{to}");
    }
    assert_eq!(off.header("Subject").unwrap(), "pump-7 is offline");
    assert_eq!(on.header("Subject").unwrap(), "pump-7 is back online");
    let root = off.header("Message-ID").unwrap();
    assert!(root.ends_with("@plant.example>"), "{root}");
    assert_eq!(off.header("In-Reply-To"), None);
    assert_eq!(on.header("In-Reply-To").as_ref(), Some(&root), "the online answers its offline");
    assert_eq!(on.header("References").as_ref(), Some(&root));
    assert_ne!(on.header("Message-ID").unwrap(), root);
    let plain = off.part("text/plain").unwrap().replace("\r\n", "\n");
    assert!(plain.starts_with("pump-7 is offline\n"), "{plain}");
    assert!(plain.contains("offline since "), "{plain}");
    let html = off.part("text/html").unwrap();
    assert!(html.contains("pump-7 is offline</p>"), "{html}");
    assert!(on.part("text/plain").unwrap().contains(" offline"), "how long it was out");
    assert!(!daemon.dump().contains(PASSWORD), "the password is in no log line");
}

/// Guards the two answers a mail server gives besides yes: a 4xx (try
/// later) is tried again and the mail arrives once; a 5xx (no) is given
/// up and written to the dead-letter file with the server's words.
#[tokio::test]
async fn a_deferred_mail_is_sent_again_and_a_refused_one_is_dead_lettered() {
    let Some(deferring) = MailServer::start(MailOptions { fail: 1, ..Default::default() }) else { return };
    let broker = Broker::start();
    let daemon = start(&broker, &deferring, "smtp", "", PASSWORD);
    daemon.wait_connected().await;
    sync_with_sentinel(&broker, &daemon, &[("plant/pump-7/status", "online")]).await;
    publish(broker.port, "plant/pump-7/status", "offline", false).await;
    let mails = deferring.wait_for(1, SOON).await;
    assert_eq!(mails[0].header("Subject").unwrap(), "pump-7 is offline");
    let retries = daemon.logs(|l| l["what"] == "webhook_retry");
    assert_eq!(retries.len(), 1, "{retries:?}");
    assert!(retries[0]["error"].as_str().unwrap().contains("451"), "{retries:?}");
    support::observe(Duration::from_millis(500)).await;
    assert_eq!(deferring.mails().len(), 1, "delivered once");

    let refusing =
        MailServer::start(MailOptions { fail: 100, code: Some("550 5.1.1 mailbox unavailable"), ..Default::default() })
            .unwrap();
    let broker = Broker::start();
    let daemon = start(&broker, &refusing, "smtp", "", PASSWORD);
    daemon.wait_connected().await;
    sync_with_sentinel(&broker, &daemon, &[("plant/pump-7/status", "online")]).await;
    publish(broker.port, "plant/pump-7/status", "offline", false).await;
    let given_up = daemon.wait_log("the mail given up", SOON, |l| l["what"] == "webhook_given_up").await;
    assert_eq!(given_up["attempts"], 1, "a 5xx is not tried again: {given_up}");
    let letters = std::fs::read_to_string(daemon.dir().join("state/dead-letter.jsonl")).unwrap();
    assert!(letters.contains("pump-7") && letters.contains("550"), "{letters}");
    assert!(!letters.contains(PASSWORD) && !daemon.dump().contains(PASSWORD));
}

/// `notify test` through an `smtps://` server: a mail over TLS from the
/// first byte, exit 0 with the server's answer; a password the server
/// refuses gives exit 1 and the server's words, never the password.
#[tokio::test]
async fn notify_test_mails_over_implicit_tls_and_reports_a_refused_login() {
    let Some(server) = MailServer::start(MailOptions { implicit: true, ..Default::default() }) else { return };
    let text = format!("[broker]\nurl = \"mqtt://127.0.0.1:1\"\n\n{}", mail_action(&server, "smtps", ""));
    let (code, said) = {
        let text = text.clone();
        tokio::task::spawn_blocking(move || support::notify_test(&text, &[("password", PASSWORD)], "mail"))
            .await
            .unwrap()
    };
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("250"), "{said}");
    let mails = server.wait_for(1, SOON).await;
    assert!(mails[0].tls);
    assert!(mails[0].header("Subject").unwrap().contains("willwatch-test"));

    let (code, said) =
        tokio::task::spawn_blocking(move || support::notify_test(&text, &[("password", "wrong")], "mail"))
            .await
            .unwrap();
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("535"), "{said}");
    assert!(!said.contains("wrong"), "{said}");
}

/// An Apprise-style `mailtos://` URL (the login, the server, the sender
/// and the recipients in one line, from a file) mails as the keys do.
#[tokio::test]
async fn an_apprise_mailtos_url_mails_as_the_keys_do() {
    let Some(server) = MailServer::start(MailOptions::default()) else { return };
    let broker = Broker::start();
    let url = format!(
        "mailtos://{USER}:{PASSWORD}@plant.example?smtp=127.0.0.1:{}&from=willwatch@plant.example&to=ops@plant.example",
        server.port
    );
    let action = format!(
        "[action.mail]\ntype = \"email\"\nurl_file = \"mail-url\"\nca_file = \"{}\"\nmin_interval = \"0s\"\n",
        server.ca.display()
    );
    let text = config(&broker, &format!("{action}\n{PUMP}\n{SENTINEL}"));
    let daemon = Daemon::start_with_files(&text, &[("mail-url", url.as_str())]);
    daemon.wait_connected().await;
    sync_with_sentinel(&broker, &daemon, &[("plant/pump-7/status", "online")]).await;
    publish(broker.port, "plant/pump-7/status", "offline", false).await;
    let mails = server.wait_for(1, SOON).await;
    assert!(mails[0].tls);
    assert_eq!(mails[0].user.as_deref(), Some(USER));
    assert_eq!(mails[0].rcpt_tos, ["ops@plant.example"]);
    assert_eq!(mails[0].header("Subject").unwrap(), "pump-7 is offline");
    assert!(!daemon.dump().contains(PASSWORD));
}

/// Guards the bound on a whole exchange: a server that accepts the
/// connection and then says nothing held the action for ever (no retry,
/// no dead letter, `notify test` hanging), as `timeout` bounded only the
/// connect.
#[tokio::test]
async fn a_mail_server_that_says_nothing_holds_no_delivery() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for connection in listener.incoming() {
            held.push(connection);
        }
    });
    let text = format!(
        "[broker]\nurl = \"mqtt://127.0.0.1:1\"\n\n[action.mail]\ntype = \"email\"\nsmtp = \"smtp://127.0.0.1:{port}\"\n\
         from = \"ww@plant.example\"\nto = \"ops@plant.example\"\ntimeout = \"1s\"\n"
    );
    let asked = std::time::Instant::now();
    let (code, said) = tokio::task::spawn_blocking(move || support::notify_test(&text, &[], "mail")).await.unwrap();
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("did not finish within 1s"), "{said}");
    assert!(asked.elapsed() < Duration::from_secs(8), "answered after {:?}", asked.elapsed());
}
