//! Secrets from systemd credentials: a `*_file` setting may say
//! `credential:NAME`, read from `$CREDENTIALS_DIRECTORY/NAME` (the unit's
//! `LoadCredential=`); `check` outside the service warns that it cannot
//! read one instead of failing, the daemon refuses to start without it; an
//! empty password file means no password, a short webhook secret is a
//! warning.

mod support;

use std::process::Command;
use std::time::Duration;

use support::daemon::message;
use support::{Broker, BrokerOptions, Daemon, config};

const PUMP: &str = "[[device]]\nid = \"pump-7\"\ntopic = \"plant/pump-7/status\"\n";

fn with_password_file(text: &str, file: &str) -> String {
    text.replace(
        "keep_alive = \"5s\"\n",
        &format!("keep_alive = \"5s\"\nusername = \"watcher\"\npassword_file = \"{file}\"\n"),
    )
}

/// `willwatch check` on `text`, outside any service: (success, stderr).
fn check(text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_willwatch"))
        .args(["check", "-c"])
        .arg(&path)
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .unwrap();
    if out.status.success() {
        support::schema::assert_valid(text);
    }
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test]
async fn the_broker_password_comes_from_the_credentials_directory() {
    let options = BrokerOptions { user: Some(("watcher".into(), "right-one".into())), ..Default::default() };
    let Some(broker) = Broker::mosquitto(options) else { return };
    let credentials = tempfile::tempdir().unwrap();
    std::fs::write(credentials.path().join("mqtt-password"), "right-one\n").unwrap();
    let text = with_password_file(&config(&broker, PUMP), "credential:mqtt-password");
    let dir = credentials.path().display().to_string();
    let daemon = Daemon::start_with(&text, &[("CREDENTIALS_DIRECTORY", dir.as_str())]);
    daemon.wait_connected().await;
    assert!(!daemon.dump().contains("right-one"), "the password leaked into the log");
}

#[tokio::test]
async fn without_its_credentials_the_daemon_does_not_start_and_says_why() {
    let broker = Broker::start();
    let text = with_password_file(&config(&broker, PUMP), "credential:mqtt-password");
    let mut daemon = Daemon::start(&text);
    let status = daemon.exit_status(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(78), "EX_CONFIG: restarting would not help");
    let error = daemon.logs(|l| l["level"] == "ERROR").into_iter().next().expect("an error");
    let text = message(&error);
    assert!(
        text.contains("cannot read credential(s) mqtt-password") && text.contains("CREDENTIALS_DIRECTORY"),
        "{text}"
    );
}

#[test]
fn check_outside_the_service_warns_about_credentials_instead_of_failing() {
    let text = format!(
        "[broker]\nurl = \"mqtts://b:8883\"\nusername = \"watcher\"\npassword_file = \"credential:mqtt-password\"\n\
         key_file = \"credential:tls-key\"\ncert_file = \"/etc/willwatch/cert.pem\"\n\n\
         [action.ops]\ntype = \"webhook\"\nurl = \"https://h/\"\nsecret_file = \"credential:webhook-secret\"\n\n{PUMP}"
    );
    let (ok, stderr) = check(&text);
    assert!(ok, "{stderr}");
    for name in ["mqtt-password", "tls-key", "webhook-secret"] {
        assert!(stderr.contains(&format!("is credential `{name}`, which only the service can read")), "{stderr}");
    }
    let (ok, stderr) = check(&text.replace("credential:mqtt-password", "credential:../etc/shadow"));
    assert!(!ok && stderr.contains("is not a credential name"), "{stderr}");
}

#[test]
fn an_empty_password_file_means_no_password_and_a_short_secret_is_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let (empty, short) = (dir.path().join("empty"), dir.path().join("short"));
    std::fs::write(&empty, "\n").unwrap();
    std::fs::write(&short, "whsec_c2hvcnQ=\n").unwrap();
    let text = format!(
        "[broker]\nurl = \"mqtt://b\"\nusername = \"watcher\"\npassword_file = \"{}\"\n\n\
         [action.ops]\ntype = \"webhook\"\nurl = \"https://h/\"\nsecret_file = \"{}\"\n\n{PUMP}",
        empty.display(),
        short.display()
    );
    let (ok, stderr) = check(&text);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("is empty: connecting without a password"), "{stderr}");
    assert!(stderr.contains("the webhook secret is 5 bytes; Standard Webhooks asks for 24 to 64"), "{stderr}");
}
