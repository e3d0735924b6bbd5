//! What operators see: `/healthz`, `/status`, `/metrics` and the
//! `willwatch status` command, against the running daemon.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::wait::within;
use support::{Broker, BrokerOptions, Daemon, SOON, SimDevice, config, eventually, publish};

const DEVICES: &str = "[[device]]\nid = \"pump-7\"\ntopic = \"plant/pump-7/status\"\n\n\
                       [[device]]\ntopic = \"sensors/{id}/status\"\n";

async fn get(url: &str) -> (u16, String) {
    let response = reqwest::get(url).await.expect("the endpoint answers");
    (response.status().as_u16(), response.text().await.unwrap())
}

async fn status_json(base: &str, query: &str) -> serde_json::Value {
    serde_json::from_str(&get(&format!("{base}/status{query}")).await.1).unwrap()
}

fn status_command(url: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_willwatch"))
        .args(["status", "--url", url])
        .args(args)
        .output()
        .expect("run willwatch status");
    (out.status.code().unwrap(), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test]
async fn status_reflects_a_will_within_a_second() {
    let broker = Broker::start();
    let daemon = Daemon::start(&config(&broker, DEVICES));
    daemon.wait_connected().await;
    let base = daemon.http_url().await;
    let device = SimDevice::connect(broker.port, "pump-7", "plant/pump-7/status", "online", "offline").await;
    publish(broker.port, "sensors/t-1/status", "online", true).await;
    let doc = support::wait::until("two devices online", SOON, async || {
        let doc = status_json(&base, "").await;
        if doc["counts"]["online"] == 2 { Ok(doc) } else { Err(doc) }
    })
    .await;
    assert_eq!(doc["counts"], serde_json::json!({"online": 2, "offline": 0, "unknown": 0, "notified": 0}), "{doc}");
    assert_eq!(doc["broker"]["connected"], true);

    device.kill();
    let killed = Instant::now();
    loop {
        let doc = status_json(&base, "").await;
        if doc["devices"][0]["state"] == "offline" {
            let d = &doc["devices"][0];
            assert_eq!(d["id"], "pump-7", "offline devices come first: {doc}");
            assert_eq!(d["topic"], "plant/pump-7/status");
            assert_eq!(d["last_payload"], "offline");
            assert!(d["since"].is_string() && d["last_seen"].is_string(), "{doc}");
            break;
        }
        assert!(killed.elapsed() < Duration::from_secs(1), "status still said online after 1 s: {doc}");
    }
    let offline = status_json(&base, "?state=offline").await;
    assert_eq!(offline["devices"].as_array().unwrap().len(), 1);
    assert_eq!(offline["counts"]["online"], 1);
}

/// Checks exposition text with Debian's `promtool check metrics` (lint
/// included); where promtool is not installed and not required (CI requires
/// it), with a parser of the format instead.
fn promtool_check(text: &str) {
    use std::io::Write;
    let spawned = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    match spawned {
        Ok(mut child) => {
            child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
            let out = child.wait_with_output().unwrap();
            let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            assert!(out.status.success() && said.trim().is_empty(), "promtool check metrics: {said}\n{text}");
        }
        Err(e) if std::env::var_os("WILLWATCH_TEST_REQUIRE_PROMTOOL").is_none() => {
            eprintln!("promtool not run ({e}); checking with a parser of the format");
            let lines = text.lines().map(|l| Ok(l.to_string()));
            let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text format");
            assert!(!scrape.samples.is_empty());
        }
        Err(e) => panic!("promtool is required (WILLWATCH_TEST_REQUIRE_PROMTOOL) but cannot run: {e}"),
    }
}

#[tokio::test]
async fn metrics_exist_from_the_start_move_and_pass_promtool() {
    let broker = Broker::start();
    let daemon = Daemon::start(&config(
        &broker,
        &format!("{DEVICES}[action.hook]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9/\"\non = [\"offline\"]\n"),
    ));
    daemon.wait_connected().await;
    let base = daemon.http_url().await;
    let client = reqwest::Client::new();
    let response = client.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(response.headers()["content-type"], "text/plain; version=0.0.4; charset=utf-8");
    let before = response.text().await.unwrap();
    promtool_check(&before);
    for at_zero in [
        "willwatch_transitions_total{event=\"offline\"} 0",
        "willwatch_transitions_total{event=\"broker_down\"} 0",
        "willwatch_action_runs_total{action=\"hook\",outcome=\"failed\"} 0",
        "willwatch_action_runs_total{action=\"log\",outcome=\"ok\"} 0",
        "willwatch_action_queue_dropped_total{action=\"hook\"} 0",
        "willwatch_broker_reconnects_total 0",
        "willwatch_config_last_reload_successful 1",
        "# TYPE willwatch_messages_total counter",
        "# TYPE willwatch_build_info gauge",
    ] {
        assert!(before.contains(at_zero), "{at_zero} missing from\n{before}");
    }
    for process in [
        "process_resident_memory_bytes ",
        "process_cpu_seconds_total ",
        "process_open_fds ",
        "process_max_fds ",
        "process_start_time_seconds ",
    ] {
        assert!(before.contains(process), "{process} missing from\n{before}");
    }
    assert!(!before.contains("# EOF"));

    publish(broker.port, "plant/pump-7/status", "offline", false).await;
    publish(broker.port, "plant/pump-7/status", "garbage", false).await;
    daemon.wait_event("pump-7", "offline", 1).await;
    within(SOON, async || {
        let (_, after) = get(&format!("{base}/metrics")).await;
        let moved = [
            "willwatch_transitions_total{event=\"offline\"} 1",
            "willwatch_devices{state=\"offline\"} 1",
            "willwatch_messages_total 2",
            "willwatch_unrecognized_payloads_total 1",
            "willwatch_action_runs_total{action=\"log\",outcome=\"ok\"} 1",
            "willwatch_action_queue_depth{action=\"hook\"} ",
            "willwatch_build_info{version=\"",
        ];
        if moved.iter().all(|m| after.contains(m))
            && daemon.metric("willwatch_last_message_timestamp_seconds").await > 1.7e9
        {
            promtool_check(&after);
            Ok(())
        } else {
            Err(format!("not all of {moved:?} in\n{after}"))
        }
    })
    .await
    .unwrap_or_else(|seen| panic!("{seen}"));

    let openmetrics = client
        .get(format!("{base}/metrics"))
        .header("accept", "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5")
        .send()
        .await
        .unwrap();
    assert!(openmetrics.headers()["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
    let text = openmetrics.text().await.unwrap();
    assert!(text.ends_with("# EOF\n") && text.contains("# TYPE willwatch_messages counter"), "{text}");
}

#[tokio::test]
async fn healthz_follows_the_broker_connection() {
    let Some(mut broker) = Broker::mosquitto(BrokerOptions::default()) else { return };
    let daemon = Daemon::start(&config(&broker, DEVICES));
    daemon.wait_connected().await;
    let base = daemon.http_url().await;
    assert_eq!(get(&format!("{base}/healthz")).await, (200, "ok\n".to_string()));
    broker.stop();
    let body = support::wait::until("/healthz to say 503", SOON, async || {
        let (code, body) = get(&format!("{base}/healthz")).await;
        if code == 503 { Ok(body) } else { Err(code) }
    })
    .await;
    assert!(body.starts_with("not connected to the broker mqtt://127.0.0.1:"), "{body}");
}

#[tokio::test]
async fn status_command_exit_codes_tell_scripts_what_is_wrong() {
    let mut broker = Broker::start();
    let daemon = Daemon::start(&config(
        &broker,
        "[[device]]\nid = \"pump-7\"\ntopic = \"plant/pump-7/status\"\n\
         [[device]]\nid = \"fan\"\ntopic = \"plant/fan/status\"\ngrace = \"1h\"\n",
    ));
    daemon.wait_connected().await;
    let url = format!("{}/status", daemon.http_url().await);

    let (code, table) = status_command(&url, &[]);
    assert_eq!(code, 0, "devices never heard from are no outage:\n{table}");
    assert!(table.contains("unknown  pump-7"), "{table}");

    publish(broker.port, "plant/fan/status", "offline", true).await;
    publish(broker.port, "plant/pump-7/status", "online", true).await;
    eventually("the daemon to see pump-7 online", SOON, || {
        (!daemon.logs(|l| l["what"] == "device_state" && l["state"] == "online").is_empty()).then_some(())
    })
    .await;
    let (code, table) = status_command(&url, &[]);
    assert_eq!(code, 0, "an offline inside its grace period is not notified yet:\n{table}");
    assert!(table.contains("offline (grace 3600s left) fan"), "{table}");
    assert!(table.contains("online                     pump-7"), "{table}");

    publish(broker.port, "plant/pump-7/status", "offline", true).await;
    daemon.wait_event("pump-7", "offline", 1).await;
    let (code, json) = status_command(&url, &["--offline", "--json"]);
    assert_eq!(code, 1, "a notified offline");
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(doc["counts"]["notified"], 1);
    assert_eq!(doc["devices"][0]["id"], "fan");
    assert_eq!(doc["devices"][1]["id"], "pump-7");
    assert_eq!(doc["devices"][1]["notified"], true);

    broker.stop();
    eventually("the daemon to notice the broker is gone", SOON, || {
        let (code, _) = status_command(&url, &[]);
        (code == 2).then_some(())
    })
    .await;
    let out = Command::new(env!("CARGO_BIN_EXE_willwatch")).args(["status", "--url", &url]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is not connected to its broker") && stderr.contains("may be stale"), "{stderr}");

    let (code, _) = status_command("http://127.0.0.1:9/status", &[]);
    assert_eq!(code, 2, "an unreachable daemon");
}

/// Guards against `-c` naming a file that is not there quietly asking the
/// default address (some other daemon, or none) instead.
#[test]
fn status_with_a_missing_config_file_is_an_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_willwatch"))
        .args(["status", "-c", "/nonexistent/willwatch.toml"])
        .output()
        .expect("run willwatch status");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/willwatch.toml: cannot read the config file"), "{stderr}");
}

#[tokio::test]
async fn with_a_users_file_everything_but_healthz_asks_for_a_password() {
    let broker = Broker::start();
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("users"), format!("ops:{hash}\n")).unwrap();
    let text = config(&broker, "")
        .replace("[http]\n", &format!("[http]\nusers_file = \"{}\"\n", dir.path().join("users").display()));
    let daemon = Daemon::start(&text);
    daemon.wait_connected().await;
    let base = daemon.http_url().await;
    let client = reqwest::Client::new();
    for path in ["/", "/status", "/metrics", "/api/events", "/assets/app.js"] {
        let response = client.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 401, "{path}");
        assert!(response.headers()["www-authenticate"].to_str().unwrap().starts_with("Basic"));
        let wrong = client.get(format!("{base}{path}")).basic_auth("ops", Some("guess")).send().await.unwrap();
        assert_eq!(wrong.status().as_u16(), 401, "{path} with a wrong password");
    }
    let ok = client.get(format!("{base}/status")).basic_auth("ops", Some("s3cret")).send().await.unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    assert_eq!(get(&format!("{base}/healthz")).await.0, 200, "probes need no password");
    // `willwatch status` passes the URL's user and password.
    let with_user = base.replace("http://", "http://ops:s3cret@");
    assert_eq!(status_command(&format!("{with_user}/status"), &[]).0, 0);
    assert_eq!(status_command(&format!("{base}/status"), &[]).0, 2, "without them it cannot tell");
}

/// A daemon behind `users_file` (`ops`, password `s3cret`, bcrypt of
/// `cost`, the file's `mode`) and its base URL.
async fn with_users(broker: &Broker, cost: u32, mode: u32) -> (Daemon, String, tempfile::TempDir) {
    use std::os::unix::fs::PermissionsExt;
    let hash = bcrypt::hash("s3cret", cost).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    std::fs::write(&users, format!("ops:{hash}\n")).unwrap();
    std::fs::set_permissions(&users, std::fs::Permissions::from_mode(mode)).unwrap();
    let text = config(broker, "").replace("[http]\n", &format!("[http]\nusers_file = \"{}\"\n", users.display()));
    let daemon = Daemon::start(&text);
    let base = daemon.http_url().await;
    (daemon, base, dir)
}

/// Refusing a user who does not exist costs a bcrypt verification like
/// refusing a wrong password: how long a refusal takes tells nobody which
/// users exist.
#[tokio::test]
async fn an_unknown_user_is_refused_as_slowly_as_a_wrong_password() {
    let broker = Broker::start();
    let (_daemon, base, _users) = with_users(&broker, 8, 0o600).await;
    let client = reqwest::Client::new();
    let refused_in = |user: &'static str| {
        let (client, url) = (client.clone(), format!("{base}/status"));
        async move {
            let started = Instant::now();
            let response = client.get(url).basic_auth(user, Some("guess")).send().await.unwrap();
            assert_eq!(response.status().as_u16(), 401, "{user}");
            started.elapsed()
        }
    };
    let (mut unknown, mut known) = (Vec::new(), Vec::new());
    for _ in 0..15 {
        unknown.push(refused_in("nobody").await);
        known.push(refused_in("ops").await);
    }
    unknown.sort();
    known.sort();
    let (unknown, known) = (unknown[unknown.len() / 2], known[known.len() / 2]);
    eprintln!("median refusal: unknown user {unknown:?}, wrong password {known:?}");
    assert!(unknown.as_secs_f64() >= 0.5 * known.as_secs_f64(), "unknown {unknown:?} vs known {known:?}");
}

/// Guards the machine against a flood of password guesses: each refusal
/// ran bcrypt on a thread of its own, as many at once as requests came
/// (the load average passed 400). At most `VERIFYING` run at once now,
/// a few more wait their turn (`IN_LINE`), the rest are told to come back
/// at once (a request in line holds a connection: a long line filled the
/// connection pool), and `/healthz` is answered meanwhile.
#[tokio::test]
async fn a_flood_of_wrong_passwords_checks_few_at_once_and_keeps_the_probe_answered() {
    let broker = Broker::start();
    let (daemon, base, _users) = with_users(&broker, 10, 0o600).await;
    daemon.wait_connected().await;
    let idle = daemon.threads();
    let client = reqwest::Client::new();
    let guesses: Vec<_> = (0..100)
        .map(|i| {
            let (client, url) = (client.clone(), format!("{base}/status"));
            tokio::spawn(async move {
                let asked = Instant::now();
                let response = client.get(url).basic_auth("ops", Some(format!("guess-{i}"))).send().await;
                (response.map(|r| r.status().as_u16()), asked.elapsed())
            })
        })
        .collect();
    let mut most = idle;
    for _ in 0..10 {
        let asked = Instant::now();
        let (code, _) = get(&format!("{base}/healthz")).await;
        assert_eq!(code, 200);
        assert!(asked.elapsed() < Duration::from_secs(1), "/healthz took {:?}", asked.elapsed());
        most = most.max(daemon.threads());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(most <= idle + 4, "{most} threads during the flood, {idle} before");
    let mut busy_at_once = 0;
    for guess in guesses {
        let (status, took) = guess.await.unwrap();
        assert!(matches!(status, Ok(401 | 503)), "{status:?}");
        if status.is_ok_and(|s| s == 503) && took < Duration::from_secs(2) {
            busy_at_once += 1;
        }
    }
    assert!(busy_at_once >= 80, "{busy_at_once} of 100 told at once to come back");
}

/// Guards the operator's own login during an attack: a password verified
/// before used to wait for a login turn like any guess, so a flood of
/// wrong passwords (holding the turns and the line) shut the operator out
/// with `503`s. It passes at once now, without bcrypt.
#[tokio::test]
async fn a_password_verified_before_passes_at_once_through_a_flood_of_guesses() {
    let broker = Broker::start();
    let (daemon, base, _users) = with_users(&broker, 10, 0o600).await;
    daemon.wait_connected().await;
    let client = reqwest::Client::new();
    let operator = || client.get(format!("{base}/status?limit=1")).basic_auth("ops", Some("s3cret")).send();
    assert_eq!(operator().await.unwrap().status(), 200, "the first login, verified by bcrypt");
    // Guessers that keep the turns and the line full for 8 s.
    let until = Instant::now() + Duration::from_secs(8);
    let guesses: Vec<_> = (0..30)
        .map(|i| {
            let (client, url) = (client.clone(), format!("{base}/status"));
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                while Instant::now() < until {
                    let response = client.get(&url).basic_auth("ops", Some(format!("guess-{i}"))).send().await;
                    statuses.push(response.map(|r| r.status().as_u16()).unwrap_or(0));
                }
                statuses
            })
        })
        .collect();
    // Once the guesses hold every turn and the line: one more is told to
    // come back.
    support::wait::until("the logins' turns and line all held", Duration::from_secs(10), async || {
        let status = client.get(format!("{base}/status")).basic_auth("ops", Some("one more")).send().await;
        match status.map(|r| r.status().as_u16()) {
            Ok(503) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    for _ in 0..5 {
        let asked = Instant::now();
        assert_eq!(operator().await.unwrap().status(), 200);
        assert!(asked.elapsed() < Duration::from_millis(500), "the operator waited {:?}", asked.elapsed());
    }
    assert!(Instant::now() < until, "the flood was over before the operator's logins");
    for guess in guesses {
        let statuses = guess.await.unwrap();
        assert!(statuses.iter().all(|s| matches!(s, 401 | 503)), "{statuses:?}");
    }
}

/// RFC 7617: the scheme's name is case-insensitive.
#[tokio::test]
async fn the_basic_scheme_is_taken_whatever_its_case() {
    use base64::Engine;
    let broker = Broker::start();
    let (_daemon, base, _users) = with_users(&broker, 4, 0o600).await;
    let token = base64::engine::general_purpose::STANDARD.encode("ops:s3cret");
    for scheme in ["Basic", "basic", "BASIC", "bAsIc"] {
        let response = reqwest::Client::new()
            .get(format!("{base}/status"))
            .header("authorization", format!("{scheme} {token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200, "{scheme}");
    }
}

#[tokio::test]
async fn a_users_file_others_can_read_is_warned_about_at_the_start() {
    let broker = Broker::start();
    let (daemon, _base, users) = with_users(&broker, 4, 0o644).await;
    let warning = daemon.wait_log("the warning", SOON, |l| l["what"] == "config_warning").await;
    let text = support::daemon::message(&warning);
    assert!(text.contains(&users.path().join("users").display().to_string()), "{warning}");
}
