//! Availability history: transitions recorded with their cause while the
//! daemon runs, `willwatch history` reading them beside it, and a broken
//! `history.db` set aside without stopping detection.

mod support;

use std::process::Command;
use std::time::Duration;

use support::{Broker, Daemon, SOON, config, publish};

const PUMP: &str = "[history]\nkeep = \"90d\"\n\n[[device]]\nid = \"pump-7\"\ntopic = \"plant/pump-7/status\"\n";

fn history(daemon: &Daemon, args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_willwatch"))
        .arg("history")
        .arg("-c")
        .arg(daemon.config_path())
        .args(args)
        .arg("--json")
        .output()
        .expect("run willwatch history");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn get_json(url: &str) -> serde_json::Value {
    serde_json::from_str(&reqwest::get(url).await.unwrap().text().await.unwrap()).unwrap()
}

/// Waits until the history lists `n` transitions of pump-7.
async fn wait_transitions(daemon: &Daemon, n: usize) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + SOON;
    loop {
        let doc = history(daemon, &["pump-7"]);
        if doc["transitions"].as_array().map_or(0, Vec::len) >= n {
            return doc;
        }
        assert!(tokio::time::Instant::now() < deadline, "{doc}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn transitions_are_recorded_with_their_cause_and_read_beside_the_running_daemon() {
    let broker = Broker::start();
    let daemon = Daemon::start(&config(&broker, PUMP));
    daemon.wait_connected().await;
    publish(broker.port, "plant/pump-7/status", "online", true).await;
    publish(broker.port, "plant/pump-7/status", "offline", true).await;
    daemon.wait_event("pump-7", "offline", 1).await;
    publish(broker.port, "plant/pump-7/status", "online", true).await;
    daemon.wait_event("pump-7", "online", 1).await;
    let doc = wait_transitions(&daemon, 3).await;
    let steps: Vec<(&str, &str, &str)> = doc["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["from"].as_str().unwrap(), t["to"].as_str().unwrap(), t["cause"].as_str().unwrap()))
        .collect();
    assert_eq!(steps, [("unknown", "online", "birth"), ("online", "offline", "will"), ("offline", "online", "birth")]);
    assert!(doc["transitions"][2]["offline_for_ms"].as_i64().is_some(), "{doc}");
    let device = &doc["devices"][0];
    assert_eq!((device["id"].as_str(), device["outages"].as_u64()), (Some("pump-7"), Some(1)));
    assert!(device["uptime"].as_f64().is_some_and(|u| u > 0.0 && u < 1.0), "{device}");

    // The API says what the command says.
    let base = daemon.http_url().await;
    let api = get_json(&format!("{base}/api/history?device=pump-7&since=7d")).await;
    assert_eq!(api["transitions"], doc["transitions"]);
    assert_eq!(api["devices"][0]["outages"], 1);
    let uptime = get_json(&format!("{base}/api/uptime?since=24h")).await;
    assert_eq!(uptime["devices"][0]["id"], "pump-7");
    assert_eq!(uptime["transitions"].as_array().map(Vec::len), Some(0));
}

#[tokio::test]
async fn a_broken_history_database_is_set_aside_and_detection_goes_on() {
    let broker = Broker::start();
    let state = tempfile::tempdir().unwrap();
    std::fs::write(state.path().join("history.db"), b"this is not a database at all, not even a little").unwrap();
    let text = config(&broker, PUMP).replace("state_dir = \"state\"", &format!("state_dir = {:?}", state.path()));
    let daemon = Daemon::start(&text);
    daemon.wait_log("the history set aside", SOON, |l| l["what"] == "history_set_aside").await;
    daemon.wait_connected().await;
    publish(broker.port, "plant/pump-7/status", "offline", true).await;
    daemon.wait_event("pump-7", "offline", 1).await;
    let aside = std::fs::read_dir(state.path())
        .unwrap()
        .filter_map(Result::ok)
        .any(|e| e.file_name().to_string_lossy().starts_with("history.db.corrupt-"));
    assert!(aside, "the broken file is kept aside for a look");
    wait_transitions(&daemon, 1).await;
}

/// A window further back than a clock can count is a clear refusal, on
/// the command line (exit 2) and over HTTP (400), never a panic.
#[tokio::test]
async fn a_window_past_what_a_clock_counts_is_refused_not_a_panic() {
    let broker = Broker::start();
    let daemon = Daemon::start(&config(&broker, PUMP));
    daemon.wait_connected().await;
    let out = Command::new(env!("CARGO_BIN_EXE_willwatch"))
        .arg("history")
        .arg("-c")
        .arg(daemon.config_path())
        .args(["--since", "18446744073709551615s"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--since") && !stderr.contains("panicked"), "{stderr}");
    let base = daemon.http_url().await;
    for route in ["history?device=pump-7&", "uptime?"] {
        let response = reqwest::get(format!("{base}/api/{route}since=18446744073709551615s")).await.unwrap();
        let status = response.status().as_u16();
        let body = response.text().await.unwrap();
        assert_eq!(status, 400, "{route}: {body}");
        assert!(body.starts_with("since: "), "{route}: {body}");
    }
}
