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
    support::wait::until(&format!("{n} transitions of pump-7"), SOON, async || {
        let doc = history(daemon, &["pump-7"]);
        if doc["transitions"].as_array().map_or(0, Vec::len) >= n { Ok(doc) } else { Err(doc) }
    })
    .await
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

/// Guards the memory of the history routes: `/api/uptime` and
/// `/api/history` answered every device (or transition) in one body, built
/// whole (a 162 MB body and 3.9 GB resident at 1.2M devices). They come in
/// pages now, each with the cursor of the next; walking them meets every
/// device once, a page never holds more than its limit, and a cursor or a
/// window the daemon did not write is a 400, not a 500.
#[tokio::test]
async fn the_history_routes_come_in_pages_that_walk_every_device_once() {
    use willwatch::history::History;
    use willwatch::transition::Transition;
    let broker = Broker::start();
    let state = tempfile::tempdir().unwrap();
    let now = std::time::SystemTime::now();
    let entries: Vec<Transition> = (0..2_500)
        .flat_map(|i| {
            let device = format!("d{i:05}");
            let at = |ago: u64| now - Duration::from_secs(ago);
            let e = |ago, to| Transition {
                device: device.as_str().into(),
                at: at(ago),
                from: "unknown",
                to,
                cause: "will",
                payload: to.into(),
                offline_for: None,
            };
            let mut rows = vec![e(3_600, "online")];
            if i % 3 == 0 {
                rows.extend([e(1_800, "offline"), e(1_800 - i % 600, "online")]);
            }
            rows
        })
        .collect();
    History::open(state.path()).unwrap().append(&entries).unwrap();
    let text = config(&broker, PUMP).replace("state_dir = \"state\"", &format!("state_dir = {:?}", state.path()));
    let daemon = Daemon::start(&text);
    daemon.wait_connected().await;
    let base = daemon.http_url().await;
    for sort in ["uptime", "outages", "id"] {
        let mut seen = std::collections::BTreeSet::new();
        let mut next: Option<String> = None;
        let mut pages = 0;
        loop {
            let after = next.as_ref().map(|n| format!("&after={}", urlencode(n))).unwrap_or_default();
            let page = get_json(&format!("{base}/api/uptime?since=1d&sort={sort}&limit=1000{after}")).await;
            let devices = page["devices"].as_array().unwrap();
            assert!(devices.len() <= 1000, "{sort}: a page of {}", devices.len());
            for d in devices {
                assert!(seen.insert(d["id"].as_str().unwrap().to_string()), "{sort}: {} twice", d["id"]);
            }
            pages += 1;
            match page["next"].as_str() {
                Some(n) => next = Some(n.to_string()),
                None => break,
            }
        }
        let expected: usize = if sort == "outages" { 834 } else { 2_500 };
        assert_eq!((seen.len(), pages), (expected, expected.div_ceil(1000)), "{sort}");
        // A cursor carries its order: passed with another sort, it is a 400
        // (it was an empty page that looked like the end).
        let first = get_json(&format!("{base}/api/uptime?since=1d&sort={sort}&limit=1")).await;
        let cursor = urlencode(first["next"].as_str().unwrap());
        let other = if sort == "id" { "uptime" } else { "id" };
        let response = reqwest::get(format!("{base}/api/uptime?since=1d&sort={other}&after={cursor}")).await.unwrap();
        assert_eq!(response.status().as_u16(), 400, "{sort}'s cursor read as {other}");
    }
    // A HEAD is answered without reading the history.
    let client = reqwest::Client::new();
    let head = client.head(format!("{base}/api/uptime?since=1d&limit=10000")).send().await.unwrap();
    assert_eq!((head.status().as_u16(), head.bytes().await.unwrap().len()), (200, 0));
    // And says what a GET would of a cursor it would refuse.
    for bad in ["/api/uptime?after=bogus", "/api/history?after=zz", "/api/history?device=d00003&after=zz"] {
        let head = client.head(format!("{base}{bad}")).send().await.unwrap();
        assert_eq!(head.status().as_u16(), 400, "HEAD {bad}");
    }
    let mut rows = 0;
    let mut next: Option<String> = None;
    loop {
        let after = next.as_ref().map(|n| format!("&after={}", urlencode(n))).unwrap_or_default();
        let page = get_json(&format!("{base}/api/history?device=d00003&since=1d&limit=1{after}")).await;
        assert_eq!(page["devices"][0]["id"], "d00003");
        rows += page["transitions"].as_array().unwrap().len();
        match page["next"].as_str() {
            Some(n) => next = Some(n.to_string()),
            None => break,
        }
    }
    assert_eq!(rows, 3, "d00003's transitions, one a page");
    for bad in ["after=nonsense", "since=18446744073709551615s", "sort=sideways"] {
        let response = reqwest::get(format!("{base}/api/uptime?{bad}")).await.unwrap();
        let status = response.status().as_u16();
        assert!(status == 400 || (status == 200 && bad.starts_with("since")), "{bad}: {status}");
    }
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
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

/// Guards HEAD against saying more than GET: with history off, both are a
/// 404 (HEAD said 200).
#[tokio::test]
async fn with_history_off_get_and_head_of_the_history_routes_are_not_found() {
    let broker = Broker::start();
    let daemon = Daemon::start(&config(&broker, &PUMP.replace("keep = \"90d\"", "keep = \"0s\"")));
    daemon.wait_connected().await;
    let base = daemon.http_url().await;
    let client = reqwest::Client::new();
    for route in ["/api/uptime?since=1d", "/api/history?device=pump-7"] {
        let get = client.get(format!("{base}{route}")).send().await.unwrap().status().as_u16();
        let head = client.head(format!("{base}{route}")).send().await.unwrap().status().as_u16();
        assert_eq!((get, head), (404, 404), "{route}");
    }
}

/// Guards the disk the state needs: the history had no size bound (95.8
/// bytes a transition, about 6.9 GB an hour for a fleet flapping 20,000
/// times a second). Past `[history] max_size` its oldest transitions go,
/// counted and logged, and the newest stay readable.
#[tokio::test]
async fn past_max_size_the_oldest_transitions_go_and_the_newest_stay() {
    use willwatch::history::History;
    let broker = Broker::start();
    let state = tempfile::tempdir().unwrap();
    let rest = "[history]\nkeep = \"90d\"\nmax_size = \"1 MiB\"\n\n[[device]]\ntopic = \"fleet/{id}/status\"\n";
    let text = config(&broker, rest).replace("state_dir = \"state\"", &format!("state_dir = {:?}", state.path()));
    let daemon = Daemon::start(&text);
    daemon.wait_connected().await;
    let topics: Vec<String> = (0..20_000).map(|i| format!("fleet/d-{i:05}/status")).collect();
    // In waves the broker's queue for the daemon holds (1,000 by default).
    for (i, wave) in topics.chunks(500).enumerate() {
        let messages: Vec<(&str, Vec<u8>)> = wave.iter().map(|t| (t.as_str(), b"online".to_vec())).collect();
        support::publish_many(broker.port, &messages, false).await;
        let known = (i * 500 + wave.len()) as f64;
        support::wait::until("the wave known", SOON, async || {
            let online = daemon.metric("willwatch_devices{state=\"online\"}").await;
            if online >= known { Ok(()) } else { Err(online) }
        })
        .await;
    }
    let pruned = daemon.wait_log("the history pruned", SOON, |l| l["what"] == "history_pruned_for_size").await;
    assert!(pruned["rows"].as_u64().is_some_and(|r| r > 0), "{pruned}");
    support::wait::until("the last device's first sighting in the history", SOON, async || {
        let n = daemon.metric("willwatch_history_pruned_for_size_total").await;
        let doc = history(&daemon, &["d-19999"]);
        match doc["transitions"].as_array().map_or(0, Vec::len) {
            1 if n > 0.0 => Ok(()),
            seen => Err(format!("{seen} transitions, {n} pruned")),
        }
    })
    .await;
    let used = History::open_read(state.path()).unwrap().used_bytes().unwrap();
    assert!(used <= 1 << 20, "history.db holds {used} bytes, over its 1 MiB");
    let oldest = history(&daemon, &["d-00000"]);
    assert_eq!(oldest["transitions"].as_array().map(Vec::len), Some(0), "the oldest went first: {oldest}");
}
