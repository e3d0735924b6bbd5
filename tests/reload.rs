//! SIGHUP reloads the config: new devices are watched, removed ones are
//! dropped, kept ones keep their state, and a broken file changes nothing.

mod support;

use support::daemon::message;
use support::{Broker, Daemon, SOON, config, publish};

fn devices(ids: &[&str]) -> String {
    ids.iter().map(|id| format!("[[device]]\nid = \"{id}\"\ntopic = \"plant/{id}/status\"\n\n")).collect()
}

async fn wait_reloaded(daemon: &Daemon, n: usize) -> serde_json::Value {
    let what = format!("reload #{n}");
    support::eventually(&what, SOON, || daemon.logs(|l| l["what"] == "config_reloaded").into_iter().nth(n - 1)).await
}

#[tokio::test]
async fn sighup_adds_and_removes_devices_and_keeps_the_state_of_the_rest() {
    let broker = Broker::start();
    let daemon = Daemon::start(&config(&broker, &devices(&["a", "b"])));
    daemon.wait_connected().await;
    publish(broker.port, "plant/a/status", "offline", false).await;
    daemon.wait_event("a", "offline", 1).await;

    daemon.write_config(&config(&broker, &devices(&["a", "c"])));
    daemon.signal("HUP");
    let reloaded = wait_reloaded(&daemon, 1).await;
    assert_eq!(reloaded["added"], "[\"c\"]");
    assert_eq!(reloaded["removed"], "[\"b\"]");

    // c is watched now; b is not.
    support::eventually("the new topic to be subscribed", SOON, || {
        (daemon.logs(|l| l["what"] == "subscribed").len() >= 2).then_some(())
    })
    .await;
    publish(broker.port, "plant/b/status", "offline", false).await;
    publish(broker.port, "plant/c/status", "offline", false).await;
    daemon.wait_event("c", "offline", 1).await;
    assert!(daemon.events("b", "offline").is_empty(), "{}", daemon.dump());

    // a kept its open alert: coming back resolves it, and no new offline fires.
    publish(broker.port, "plant/a/status", "offline", false).await;
    publish(broker.port, "plant/a/status", "online", false).await;
    daemon.wait_event("a", "online", 1).await;
    assert_eq!(daemon.events("a", "offline").len(), 1);
}

#[tokio::test]
async fn sighup_with_a_broken_file_keeps_the_old_config() {
    let broker = Broker::start();
    let daemon = Daemon::start(&config(&broker, &devices(&["a"])));
    daemon.wait_connected().await;

    daemon.write_config(&config(&broker, "[[device]]\nid = \"a\"\ntopic = \"plant/a/status\"\nactoins = [\"log\"]\n"));
    daemon.signal("HUP");
    let error =
        daemon.wait_log("the reload error", SOON, |l| l["level"] == "ERROR" && l["what"] == "reload_failed").await;
    let text = message(&error);
    assert!(text.contains("willwatch.toml:19:1: unknown field `actoins`"), "{text}");

    publish(broker.port, "plant/a/status", "offline", false).await;
    daemon.wait_event("a", "offline", 1).await;
    assert!(daemon.logs(|l| l["what"] == "shutting_down").is_empty());

    // Visible to Prometheus, as Prometheus and Alertmanager show their own.
    assert_eq!(daemon.metric("willwatch_config_last_reload_successful ").await, 0.0);
    let loaded_at = daemon.metric("willwatch_config_last_reload_success_timestamp_seconds ").await;
    assert!(loaded_at > 1.7e9, "the start counts as a load: {loaded_at}");

    // `systemctl reload` runs `willwatch check` first (the unit's
    // ExecReload), so the reload itself fails with the reason.
    let (code, stderr) = run_exec_reload_check(&daemon);
    assert_ne!(code, 0, "the check before the HUP fails");
    assert!(stderr.contains("unknown field `actoins`"), "{stderr}");

    daemon.write_config(&config(&broker, &devices(&["a"])));
    assert_eq!(run_exec_reload_check(&daemon).0, 0);
    daemon.signal("HUP");
    wait_reloaded(&daemon, 1).await;
    assert_eq!(daemon.metric("willwatch_config_last_reload_successful ").await, 1.0);
    assert!(daemon.metric("willwatch_config_last_reload_success_timestamp_seconds ").await >= loaded_at);
}

/// Runs the unit file's first `ExecReload=` (it must be the config check,
/// before the HUP) with the daemon's config directory; its exit code and
/// stderr (what the journal shows).
fn run_exec_reload_check(daemon: &Daemon) -> (i32, String) {
    let unit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/willwatch.service")).unwrap();
    let reloads: Vec<&str> = unit.lines().filter_map(|l| l.strip_prefix("ExecReload=")).collect();
    assert_eq!(reloads.len(), 2, "check, then HUP: {reloads:?}");
    assert!(reloads[1].contains("kill -HUP $MAINPID"), "{reloads:?}");
    let words: Vec<String> = reloads[0]
        .split_whitespace()
        .map(|w| w.replace("${CONFIGURATION_DIRECTORY}", &daemon.dir().display().to_string()))
        .collect();
    assert_eq!(words[0], "/usr/bin/willwatch");
    assert_eq!(daemon.config_path(), daemon.dir().join("willwatch.toml"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_willwatch")).args(&words[1..]).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A reload refused for a webhook URL (or `external_url`) says where and
/// why, and none of the URL's secrets, whether the URL parses or not.
#[tokio::test]
async fn a_reload_refused_for_a_url_logs_none_of_its_secrets() {
    let broker = Broker::start();
    let daemon = Daemon::start(&config(&broker, &devices(&["a"])));
    daemon.wait_connected().await;
    let hook = |url: &str| format!("[action.ops]\ntype = \"webhook\"\nurl = \"{url}\"\n\n{}", devices(&["a"]));
    let broken = [
        config(&broker, &hook("ftp://hookuser:SECRETPASS@hooks.example/hook?token=SECRETTOKEN")),
        config(&broker, &hook("http://hookuser:SECRETPASS@[::bad/hook?token=SECRETTOKEN")),
        config(&broker, &devices(&["a"]))
            .replace("[http]\n", "[http]\nexternal_url = \"https://u:SECRETPASS@[bad/?token=SECRETTOKEN\"\n"),
    ];
    for (n, text) in broken.iter().enumerate() {
        daemon.write_config(text);
        daemon.signal("HUP");
        let refused = support::eventually("the reload to be refused", SOON, || {
            daemon.logs(|l| l["what"] == "reload_failed").into_iter().nth(n)
        })
        .await;
        assert!(message(&refused).contains("is not an http(s) URL"), "{refused}");
    }
    for secret in ["SECRETPASS", "SECRETTOKEN"] {
        assert!(!daemon.dump().contains(secret), "{secret} in the log:\n{}", daemon.dump());
    }
}
