//! The dead-letter file and `willwatch dead-letter`: what a webhook gave up
//! on is listed, counted, and replayed with its original id; a replay
//! removes what was delivered and keeps the rest, while the daemon runs.

mod support;

use std::process::Command;

use support::{Behaviour, Broker, Daemon, Receiver, SOON, config, eventually, publish};

fn dead_letter(daemon: &Daemon, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_willwatch"))
        .arg("dead-letter")
        .arg("-c")
        .arg(daemon.config_path())
        .args(args)
        .output()
        .expect("run willwatch dead-letter");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

fn listed(daemon: &Daemon) -> Vec<serde_json::Value> {
    let (code, text) = dead_letter(daemon, &["list", "--json"]);
    assert_eq!(code, 0, "{text}");
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

// Multi-threaded: the receiver answers while the command runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_up_deliveries_are_listed_counted_and_replayed_with_their_ids() {
    let broker = Broker::start();
    let receiver = Receiver::start(Behaviour::FailFirst { n: 3, status: 503 }).await;
    let text = config(
        &broker,
        &format!(
            "[action.ops]\ntype = \"webhook\"\nurl = \"{}\"\nmax_attempts = 1\n\n\
             [[device]]\ntopic = \"plant/{{id}}/status\"\nactions = [\"ops\"]\n",
            receiver.url
        ),
    );
    let daemon = Daemon::start(&text);
    daemon.wait_connected().await;
    publish(broker.port, "plant/pump-7/status", "offline", false).await;
    eventually("pump-7's dead letter", SOON, || (listed(&daemon).len() == 1).then_some(())).await;
    publish(broker.port, "plant/fan/status", "offline", false).await;
    let records = eventually("fan's dead letter", SOON, || Some(listed(&daemon)).filter(|r| r.len() == 2)).await;
    let first_ids: Vec<String> = receiver.received().iter().map(|r| r.header("webhook-id").to_string()).collect();
    assert_eq!(records[0]["events"][0]["device"], "pump-7");
    assert_eq!(records[0]["id"], first_ids[0]);
    assert_eq!(daemon.metric("willwatch_dead_letters_total{action=\"ops\"}").await, 2.0);

    let (code, table) = dead_letter(&daemon, &[]);
    assert_eq!(code, 0);
    assert!(table.contains("ops          pump-7           offline") && table.contains("HTTP 503"), "{table}");
    let (_, none) = dead_letter(&daemon, &["list", "--action", "other"]);
    assert_eq!(none.lines().count(), 1, "only the header: {none}");

    // The receiver still refuses the first: it is kept; the second goes.
    let (code, report) = dead_letter(&daemon, &["replay", "--action", "ops", "--since", "1h"]);
    assert_eq!(code, 1, "{report}");
    assert!(
        report.contains("failed, kept: HTTP 503") && report.contains("1 delivered and removed, 1 left"),
        "{report}"
    );
    let left = listed(&daemon);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["events"][0]["device"], "pump-7");

    let (code, report) = dead_letter(&daemon, &["replay"]);
    assert_eq!(code, 0, "{report}");
    assert!(listed(&daemon).is_empty());
    let received = receiver.received();
    assert_eq!(received.len(), 5);
    assert_eq!(received[4].header("webhook-id"), first_ids[0], "replayed with the original id");
    assert_eq!(received[4].json()["device"], "pump-7");
    assert_eq!(received[3].header("webhook-id"), first_ids[1]);

    // The daemon, running all along, goes on delivering.
    publish(broker.port, "plant/valve/status", "offline", false).await;
    assert_eq!(receiver.wait_for(6, SOON).await[5].json()["device"], "valve");
}

#[test]
fn a_config_that_cannot_be_read_is_an_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_willwatch"))
        .args(["dead-letter", "-c", "/nonexistent/willwatch.toml", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read the config file"));
}

/// `-c` goes anywhere on the line: before the command, after it, after
/// its subcommand.
#[test]
fn the_config_may_be_named_before_or_after_the_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.toml");
    std::fs::write(&path, "state_dir = \"state\"\n[broker]\nurl = \"mqtt://127.0.0.1:1\"\n").unwrap();
    let path = path.display().to_string();
    for args in [
        vec!["dead-letter", "list", "-c", &path, "--json"],
        vec!["dead-letter", "-c", &path, "list", "--json"],
        vec!["-c", &path, "dead-letter", "list", "--json"],
        vec!["dead-letter", "replay", "--config", &path],
        vec!["history", "--json", "-c", &path],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_willwatch")).args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("unexpected argument"), "{args:?}: {stderr}");
        if args[0] != "history" {
            assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        }
    }
}
